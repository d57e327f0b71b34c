"""Training images per second of MobileFaceNet with an ArcFace head.

    python bench/train_throughput.py [--batch-sizes 64,128] [--steps 20] [--repeats 3]

Runs `train_on_batch` on in-memory random images (the data pipeline is
measured apart by `bench/data_pipeline.py`) for each combination of:

- batch size (`--batch-sizes`);
- BatchNorm: the project's `FusedBatchNormalization`, or stock
  `keras.layers.BatchNormalization`, which Keras 3 computes from separate
  ops when training;
- XLA: `jit_compile=False` (the trainer's setting) or True.

Each configuration is timed `--repeats` times, taking turns so that a
drifting machine affects all of them alike, after warm-up steps that
include tracing. Prints a Markdown table of median images/s and the ratio
to the trainer's configuration at the same batch size.
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mfn_tf.model.mobilefacenet as mobilefacenet  # noqa: E402
from mfn_tf.heads import ArcFace  # noqa: E402
from mfn_tf.model.batch_norm import FusedBatchNormalization  # noqa: E402
from mfn_tf.training.model_builder import build_training_model  # noqa: E402
from mfn_tf.training.optimizer import MXNetSGD  # noqa: E402

NUM_CLASSES = 1000
WARMUP_STEPS = 3


def build(batchnorm, jit_compile):
    # The model module looks the class up when it builds each layer.
    mobilefacenet.FusedBatchNormalization = (
        FusedBatchNormalization if batchnorm == "fused" else keras.layers.BatchNormalization
    )
    try:
        backbone = mobilefacenet.MobileFaceNet()
    finally:
        mobilefacenet.FusedBatchNormalization = FusedBatchNormalization
    model = build_training_model(backbone, ArcFace(NUM_CLASSES, name="fc7"))
    model.compile(
        optimizer=MXNetSGD(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def time_steps(model, images, labels, steps):
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch((images, labels), labels)
    return len(labels) * steps / (time.perf_counter() - started)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="64,128")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--xla-steps", type=int, default=3,
                        help="timed steps per run with XLA, which is slow on CPU")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    configs = []
    for batch in [int(value) for value in args.batch_sizes.split(",")]:
        images = rng.uniform(0, 255, (batch, 112, 112, 3)).astype("float32")
        labels = rng.integers(0, NUM_CLASSES, batch).astype("int32")
        for batchnorm, jit in [("fused", False), ("stock", False), ("fused", True)]:
            model = build(batchnorm, jit)
            time_steps(model, images, labels, WARMUP_STEPS)
            configs.append(
                {"batch": batch, "batchnorm": batchnorm, "xla": jit, "model": model,
                 "images": images, "labels": labels, "rates": []}
            )

    for repeat in range(args.repeats):
        for config in configs:
            steps = args.xla_steps if config["xla"] else args.steps
            rate = time_steps(config["model"], config["images"], config["labels"], steps)
            config["rates"].append(rate)
            print(
                f"repeat {repeat + 1}: batch {config['batch']} {config['batchnorm']} "
                f"BatchNorm, XLA {'on' if config['xla'] else 'off'}: {rate:.1f} img/s",
                flush=True,
            )

    print(
        f"\nMachine: {cpu_model()}, {os.cpu_count()} logical CPUs; TensorFlow "
        f"{tf.__version__}, Keras {keras.__version__}; ArcFace head, "
        f"{NUM_CLASSES} classes; median of {args.repeats} runs\n"
    )
    print("| batch | BatchNorm | XLA | images/s | vs fused, XLA off |")
    print("|---:|---|---|---:|---:|")
    for config in configs:
        median = statistics.median(config["rates"])
        baseline = next(
            statistics.median(c["rates"]) for c in configs
            if c["batch"] == config["batch"] and c["batchnorm"] == "fused" and not c["xla"]
        )
        print(
            f"| {config['batch']} | {config['batchnorm']} | "
            f"{'on' if config['xla'] else 'off'} | {median:.1f} | {median / baseline:.2f} |"
        )


if __name__ == "__main__":
    main()
