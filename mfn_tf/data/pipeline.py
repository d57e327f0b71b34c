"""tf.data input pipelines for training.

Each builder returns a `tf.data.Dataset` of `((images, labels), labels)`:
images float32 `(B, H, W, 3)` RGB in 0-255 (the model normalises them),
labels int32 `(B,)`. The labels appear twice because margin heads such as
ArcFace take them as an input, and Keras' `fit` also wants them as targets.

How the work is split, measured by `bench/data_pipeline.py`:

1. Image positions come in chunks, permuted over the whole dataset with a
   new permutation each epoch (`tf.random.experimental.index_shuffle`, so
   there is no shuffle buffer to fill at each epoch start).
2. Parallel map calls read a chunk's records in Python with `os.pread`
   and check each image's container structure (`images.probe`), so that a
   bad record raises an error naming the file and record.
3. TensorFlow decodes the JPEG/PNG bytes in parallel, in C++. This was
   about twice as fast as decoding with Pillow inside the Python call.
4. A random horizontal mirror, batching, a cast to float32, prefetch.
"""

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.image_folders import ImageFolderDataset, open_image_folders
from mfn_tf.data.images import probe
from mfn_tf.data.insightface_dataset import (
    REC_NAME,
    InsightFaceDataset,
    open_insightface_dataset,
)

logger = logging.getLogger(__name__)

# Records read per Python call: enough to amortise the call overhead (about
# 50 us), few enough that parallel calls keep both decoders busy.
READ_CHUNK = 32


def open_training_data(path):
    """Open a training set: an insightface folder (with `train.rec`), a
    `.rec` file, or image folders (one sub-folder per identity).

    Returns an `InsightFaceDataset` or an `ImageFolderDataset`; both have
    `num_classes`, `num_images` and `image_size`.
    """
    path = Path(path)
    if path.suffix == ".rec" or (path / REC_NAME).is_file():
        return open_insightface_dataset(path)
    if path.is_dir():
        return open_image_folders(path)
    raise DatasetError(
        f"training data {path} not found: expected a folder with {REC_NAME}, "
        "a .rec file, or a folder of identity folders"
    )


def rec_dataset(data_dir, batch_size, **options):
    """Build the training pipeline over an insightface `train.rec`.

    `data_dir` is a dataset folder, a `.rec` path or an opened
    `InsightFaceDataset`. Options are those of `make_dataset`.
    """
    source = data_dir
    if not isinstance(source, InsightFaceDataset):
        source = open_insightface_dataset(data_dir)
    return make_dataset(source, batch_size, **options)


def folder_dataset(root, batch_size, image_size=(112, 112), **options):
    """Build the training pipeline over image folders, one per identity.

    `root` is the folder or an opened `ImageFolderDataset`. Options are
    those of `make_dataset`.
    """
    source = root
    if not isinstance(source, ImageFolderDataset):
        source = open_image_folders(root, image_size=image_size)
    return make_dataset(source, batch_size, **options)


def make_dataset(
    source,
    batch_size,
    shuffle=True,
    mirror=True,
    seed=None,
    repeat=True,
    drop_remainder=True,
    deterministic=None,
    num_parallel_calls=tf.data.AUTOTUNE,
):
    """Build the training pipeline over an opened dataset.

    Args:
        source: an `InsightFaceDataset` or `ImageFolderDataset`.
        batch_size: the global batch size.
        shuffle: shuffle all images, with a new order every epoch.
        mirror: flip each image horizontally with probability 0.5.
        seed: seed of the shuffle and the mirror; with a seed the output
            is the same on every run.
        repeat: repeat forever; otherwise one pass over the images.
        drop_remainder: drop the last incomplete batch, as training needs.
        deterministic: keep the element order of the parallel maps. The
            default is True only when `seed` is set, because in order a
            slow element holds up the ones behind it.
        num_parallel_calls: parallelism of the read and decode maps.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if drop_remainder and not repeat and batch_size > source.num_images:
        raise DatasetError(
            f"batch_size {batch_size} is larger than the {source.num_images} "
            "images of the dataset, so one pass with drop_remainder=True "
            "yields no batch. Use a smaller batch or repeat=True."
        )
    if deterministic is None:
        deterministic = seed is not None
    height, width = source.image_size

    chunks = _position_chunks(source.num_images, shuffle, repeat, seed)
    read_chunk = _chunk_reader(source)

    def read(chunk):
        encoded, labels = tf.numpy_function(
            read_chunk, [chunk], (tf.string, tf.int32), stateful=False
        )
        return tf.ensure_shape(encoded, [None]), tf.ensure_shape(labels, [None])

    dataset = chunks.map(
        read, num_parallel_calls=num_parallel_calls, deterministic=deterministic
    )
    dataset = dataset.unbatch()

    def decode(encoded, label):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.ensure_shape(image, (height, width, 3)), label

    def decode_and_mirror(example, coin):
        image, label = decode(*example)
        image = tf.cond(coin % 2 == 0, lambda: tf.reverse(image, axis=[1]), lambda: image)
        return image, label

    if mirror:
        # Another seed than the permutation's, so the streams are unrelated.
        coin_seed = None if seed is None else seed + 1
        coins = tf.data.Dataset.random(seed=coin_seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, coins)
    dataset = dataset.map(
        decode_and_mirror if mirror else decode,
        num_parallel_calls=num_parallel_calls,
        deterministic=deterministic,
    )

    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(
        lambda images, labels: ((tf.cast(images, tf.float32), labels), labels),
        num_parallel_calls=num_parallel_calls,
        deterministic=deterministic,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _position_chunks(num_images, shuffle, repeat, seed):
    """Return a dataset of int64 vectors of up to `READ_CHUNK` positions."""
    if not shuffle:
        positions = tf.data.Dataset.range(num_images)
        if repeat:
            positions = positions.repeat()
        return positions.batch(READ_CHUNK)

    # One random key per epoch, and index_shuffle maps each position to
    # its place in the permutation of that key. A shuffle buffer over all
    # images would stall every epoch start while it fills, and would hold
    # 5.8M tensors for MS1M.
    epoch_keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    if not repeat:
        epoch_keys = epoch_keys.take(1)
    last = num_images - 1

    def permutation(key):
        permutation_seed = tf.stack([key, tf.constant(0, tf.int64)])
        return tf.data.Dataset.range(num_images).batch(READ_CHUNK).map(
            lambda chunk: tf.random.experimental.index_shuffle(chunk, permutation_seed, last)
        )

    return epoch_keys.flat_map(permutation)


def _chunk_reader(source):
    """Return a numpy function that reads the records at a chunk of positions."""
    expected_size = tuple(source.image_size)

    def read_chunk(positions):
        encoded = np.empty(len(positions), dtype=object)
        labels = np.empty(len(positions), dtype=np.int32)
        for row, position in enumerate(positions):
            data, label = source.read_example(int(position))
            try:
                _, size = probe(data)
            except ValueError as error:
                raise DatasetError(
                    f"{source.describe(int(position))}: invalid image: {error}. "
                    "Replace the image or re-create the dataset."
                ) from error
            if size != expected_size:
                raise DatasetError(
                    f"{source.describe(int(position))}: the image is "
                    f"{size[1]}x{size[0]} but the dataset expects "
                    f"{expected_size[1]}x{expected_size[0]} (width x height)"
                )
            encoded[row] = data
            labels[row] = label
        return encoded, labels

    # NOTE: the probe catches data that is not an image, truncated files and
    # wrong sizes, but not a corrupt JPEG scan that libjpeg rejects. Such a
    # record fails in TensorFlow's decoder with "Invalid JPEG data" and no
    # record index; `python cli.py data inspect DIR --all --decode` finds it.
    return read_chunk
