"""Images per second of the training input pipeline, read from a `.rec`.

    python bench/data_pipeline.py [--batch-size 128] [--batches 40] [--repeats 5]

Measures the synthetic dataset (generated into a temporary folder) and,
where the aligned LFW images exist (`../shared/data`, or
`MFN_TF_SHARED_DATA`), a `.rec` packed from them. Besides the project's
pipeline (`mfn_tf.data.pipeline.rec_dataset`), two alternatives run side by
side, as evidence for its design:

- `generator`: one Python generator reads records sequentially and
  `tf.data` decodes in parallel;
- `pillow`: the parallel reads also decode with Pillow in Python.

Prints a Markdown table of median images/s over `--repeats` runs.
"""

import argparse
import gc
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mfn_tf.data.insightface_dataset import open_insightface_dataset  # noqa: E402
from mfn_tf.data.packing import pack_rec  # noqa: E402
from mfn_tf.data.pipeline import READ_CHUNK, make_dataset  # noqa: E402
from mfn_tf.data.synthetic import write_synthetic_dataset  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MFN_TF_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def generator_pipeline(source, batch_size, seed=0):
    """Sequential Python reads in a generator, parallel TensorFlow decode."""
    height, width = source.image_size

    def records():
        rng = np.random.default_rng(seed)
        while True:
            for position in rng.permutation(source.num_images):
                yield source.read_example(int(position))

    dataset = tf.data.Dataset.from_generator(
        records,
        output_signature=(tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int32)),
    )

    def decode(encoded, label):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.image.random_flip_left_right(tf.ensure_shape(image, (height, width, 3))), label

    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return _finish(dataset, batch_size)


def pillow_pipeline(source, batch_size, seed=0):
    """Parallel chunked reads that also decode with Pillow in Python."""
    height, width = source.image_size

    def read_chunk(positions):
        images = np.empty((len(positions), height, width, 3), dtype=np.uint8)
        labels = np.empty(len(positions), dtype=np.int32)
        for row, position in enumerate(positions):
            images[row], labels[row] = source.decode_example(int(position))
        return images, labels

    def read(chunk):
        images, labels = tf.numpy_function(read_chunk, [chunk], (tf.uint8, tf.int32))
        return tf.ensure_shape(images, (None, height, width, 3)), tf.ensure_shape(labels, [None])

    positions = tf.data.Dataset.range(source.num_images).shuffle(source.num_images, seed=seed)
    dataset = positions.repeat().batch(READ_CHUNK).map(
        read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
    ).unbatch()
    dataset = dataset.map(lambda image, label: (tf.image.random_flip_left_right(image), label),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return _finish(dataset, batch_size)


def _finish(dataset, batch_size):
    dataset = dataset.batch(batch_size, drop_remainder=True).map(
        lambda images, labels: ((tf.cast(images, tf.float32), labels), labels)
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


PIPELINES = {
    "rec_dataset": lambda source, batch: make_dataset(source, batch),
    "rec_dataset, seed=0 (deterministic)": lambda source, batch: make_dataset(source, batch, seed=0),
    "generator": generator_pipeline,
    "pillow": pillow_pipeline,
}


def images_per_second(dataset, batch_size, batches, warmup=10):
    """Time `batches` batches after `warmup` batches that let tf.data's
    autotuner settle."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    # Stop the iterator's background threads before the next pipeline runs.
    del iterator
    gc.collect()
    return batches * batch_size / elapsed


def prepare_datasets(work):
    datasets = {}
    synthetic = work / "synthetic"
    write_synthetic_dataset(synthetic)
    datasets["synthetic (1,536 images, 64 classes)"] = synthetic
    lfw_images = SHARED_DATA / "lfw_112x112" / "images"
    if lfw_images.is_dir():
        lfw = work / "lfw"
        identities, images = pack_rec(lfw_images, lfw)
        datasets[f"LFW ({images:,} images, {identities:,} classes)"] = lfw
    else:
        print(f"LFW images not found at {lfw_images}; measuring the synthetic set only")
    return datasets


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128,
                        help="batch size (insightface trains with 128 per GPU)")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per pipeline; the median is reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        datasets = prepare_datasets(Path(work))
        rows = []
        for dataset_name, path in datasets.items():
            runs = {name: [] for name in PIPELINES}
            with open_insightface_dataset(path) as source:
                # Pipelines take turns within each repeat, so a change in
                # machine load affects all of them alike.
                for _ in range(args.repeats):
                    for pipeline_name, build in PIPELINES.items():
                        dataset = build(source, args.batch_size)
                        runs[pipeline_name].append(
                            images_per_second(dataset, args.batch_size, args.batches)
                        )
            for pipeline_name, values in runs.items():
                median = statistics.median(values)
                rows.append((dataset_name, pipeline_name, median, values))
                print(f"{dataset_name} | {pipeline_name}: median {median:.0f} img/s", flush=True)

    print()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"TensorFlow {tf.__version__}; batch {args.batch_size}, {args.batches} batches "
          f"x {args.repeats} runs")
    print()
    print("| dataset | pipeline | images/s (median) | vs rec_dataset |")
    print("|---|---|---:|---:|")
    baseline = {}
    for dataset_name, pipeline_name, median, _ in rows:
        baseline.setdefault(dataset_name, median)
        ratio = median / baseline[dataset_name]
        print(f"| {dataset_name} | {pipeline_name} | {median:,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
