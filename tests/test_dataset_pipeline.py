"""Opening insightface folders and image folders, and the tf.data pipeline."""

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mfn_tf.data.image_folders import open_image_folders
from mfn_tf.data.insightface_dataset import open_insightface_dataset
from mfn_tf.data.packing import write_dataset
from mfn_tf.data.pipeline import folder_dataset, open_training_data, rec_dataset
from mfn_tf.data.recordio import IRHeader, RecordIOWriter, pack_record

SIZE = (112, 112)
CLASSES = 5
IMAGES_PER_CLASS = 4
MARKER = 255  # right half of every coded image


def coded_image(label, index):
    """A lossless PNG whose left half encodes (label, index) and whose right
    half is white, so a mirrored copy is recognisable."""
    array = np.full(SIZE + (3,), MARKER, dtype=np.uint8)
    array[:, : SIZE[1] // 2] = (label * 20, index * 10, 7)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_code(image):
    """Return (label, index, mirrored) of a pipeline image."""
    left, right = image[56, 10], image[56, 100]
    mirrored = bool(left[0] == MARKER and left[2] == MARKER)
    coded = right if mirrored else left
    return int(round(coded[0] / 20)), int(round(coded[1] / 10)), mirrored


def identities():
    return {
        f"person_{label}": [coded_image(label, index) for index in range(IMAGES_PER_CLASS)]
        for label in range(CLASSES)
    }


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec")
    write_dataset(path, identities(), SIZE, load_image=bytes, progress=False)
    return path


@pytest.fixture(scope="module")
def headerless_dir(tmp_path_factory):
    """Images only, keys from 0, no header record, as some converters write."""
    path = tmp_path_factory.mktemp("headerless")
    with RecordIOWriter(path / "train.rec", path / "train.idx") as writer:
        key = 0
        for label, images in enumerate(identities().values()):
            for image in images:
                writer.write(key, pack_record(IRHeader(0, float(label), key, 0), image))
                key += 1
    (path / "property").write_text(f"{CLASSES},112,112\n")
    return path


@pytest.fixture(scope="module")
def folders_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    for name, images in identities().items():
        (root / name).mkdir()
        for index, data in enumerate(images):
            (root / name / f"{index:04d}.png").write_bytes(data)
    (root / "empty_person").mkdir()
    (root / "notes.txt").write_text("not an identity")
    return root


def all_examples(dataset):
    return [decode_code(dataset.decode_example(p)[0]) + (dataset.decode_example(p)[1],)
            for p in range(dataset.num_images)]


def test_open_with_header(rec_dir):
    with open_insightface_dataset(rec_dir) as dataset:
        assert dataset.num_classes == CLASSES
        assert dataset.num_images == CLASSES * IMAGES_PER_CLASS
        assert dataset.image_size == SIZE
        assert dataset.header == (21, 26)
        np.testing.assert_array_equal(dataset.identity_ranges()[:2], [[1, 5], [5, 9]])
        assert dataset.class_names()[3] == "person_3"
        for label, index, mirrored, stored_label in all_examples(dataset):
            assert label == stored_label
            assert not mirrored


def test_open_without_header(headerless_dir):
    with open_insightface_dataset(headerless_dir) as dataset:
        assert dataset.header is None
        assert dataset.num_images == CLASSES * IMAGES_PER_CLASS
        np.testing.assert_array_equal(
            dataset.labels(), np.repeat(np.arange(CLASSES), IMAGES_PER_CLASS)
        )


def test_open_rec_file_path(rec_dir):
    with open_insightface_dataset(rec_dir / "train.rec") as dataset:
        assert dataset.num_classes == CLASSES


def test_open_image_folders(folders_dir):
    dataset = open_image_folders(folders_dir)
    assert dataset.class_names == [f"person_{label}" for label in range(CLASSES)]
    assert dataset.num_images == CLASSES * IMAGES_PER_CLASS
    for label, _, _, stored_label in all_examples(dataset):
        assert label == stored_label


def test_open_training_data_dispatch(rec_dir, folders_dir):
    assert open_training_data(rec_dir).num_classes == CLASSES
    assert type(open_training_data(folders_dir)).__name__ == "ImageFolderDataset"


def collect(dataset, batches):
    seen = []
    for (images, labels), targets in dataset.take(batches):
        np.testing.assert_array_equal(labels.numpy(), targets.numpy())
        for image, label in zip(images.numpy(), labels.numpy()):
            seen.append(decode_code(image) + (int(label),))
    return seen


def test_rec_pipeline_contract(rec_dir):
    dataset = rec_dataset(rec_dir, batch_size=8, seed=0)
    (images, labels), targets = next(iter(dataset))
    assert images.dtype == tf.float32
    assert images.shape == (8, 112, 112, 3)
    assert labels.dtype == tf.int32
    assert labels.shape == (8,)
    assert targets.shape == (8,)
    assert float(tf.reduce_max(images)) == 255.0
    spec = dataset.element_spec
    assert spec[0][0].shape.as_list() == [8, 112, 112, 3]


def test_rec_pipeline_labels_match_images(rec_dir):
    for label, _, _, pipeline_label in collect(rec_dataset(rec_dir, 8, seed=1), 10):
        assert label == pipeline_label


def test_one_pass_covers_every_image(rec_dir):
    dataset = rec_dataset(rec_dir, 3, seed=2, repeat=False, drop_remainder=False, mirror=False)
    seen = collect(dataset, 100)
    assert sorted((label, index) for label, index, _, _ in seen) == [
        (label, index) for label in range(CLASSES) for index in range(IMAGES_PER_CLASS)
    ]
    assert not any(mirrored for _, _, mirrored, _ in seen)


def test_drop_remainder_gives_full_batches(rec_dir):
    dataset = rec_dataset(rec_dir, 8, repeat=False, seed=0)
    sizes = [int(labels.shape[0]) for (_, labels), _ in dataset]
    assert sizes == [8, 8]


def test_shuffle_changes_between_epochs(rec_dir):
    dataset = rec_dataset(rec_dir, 20, seed=3, repeat=False, mirror=False)
    first = [(label, index) for label, index, _, _ in collect(dataset, 1)]
    second = [(label, index) for label, index, _, _ in collect(dataset, 1)]
    assert sorted(first) == sorted(second)
    assert first != second


def test_repeat_yields_whole_epochs(rec_dir):
    seen = collect(rec_dataset(rec_dir, 20, seed=7, mirror=False), 3)
    every_image = [(label, index) for label in range(CLASSES) for index in range(IMAGES_PER_CLASS)]
    epochs = [[(label, index) for label, index, _, _ in seen[start : start + 20]]
              for start in (0, 20, 40)]
    for epoch in epochs:
        assert sorted(epoch) == every_image
    assert epochs[0] != epochs[1]


def test_no_shuffle_keeps_order(rec_dir):
    dataset = rec_dataset(rec_dir, 20, shuffle=False, mirror=False, repeat=False, seed=0)
    seen = [(label, index) for label, index, _, _ in collect(dataset, 1)]
    assert seen == [(label, index) for label in range(CLASSES) for index in range(IMAGES_PER_CLASS)]


def test_mirror_flips_about_half(rec_dir):
    seen = collect(rec_dataset(rec_dir, 20, seed=4), 10)
    flipped = sum(mirrored for _, _, mirrored, _ in seen)
    assert 60 <= flipped <= 140, flipped


def test_seed_makes_pipeline_repeatable(rec_dir):
    first = collect(rec_dataset(rec_dir, 8, seed=5), 4)
    second = collect(rec_dataset(rec_dir, 8, seed=5), 4)
    other = collect(rec_dataset(rec_dir, 8, seed=6), 4)
    assert first == second
    assert first != other


def test_headerless_pipeline(headerless_dir):
    for label, _, _, pipeline_label in collect(rec_dataset(headerless_dir, 8, seed=0), 3):
        assert label == pipeline_label


def test_folder_pipeline(folders_dir):
    seen = collect(folder_dataset(folders_dir, 8, seed=0), 5)
    for label, _, _, pipeline_label in seen:
        assert label == pipeline_label


def test_pipeline_accepts_opened_dataset(rec_dir):
    with open_insightface_dataset(rec_dir) as opened:
        (images, _), _ = next(iter(rec_dataset(opened, 4, seed=0)))
    assert images.shape[0] == 4


def test_batch_larger_than_dataset_rejected(rec_dir):
    with pytest.raises(ValueError, match="larger than the 20 images"):
        rec_dataset(rec_dir, 64, repeat=False)


def test_folder_dataset_skips_non_images(folders_dir):
    dataset = open_image_folders(folders_dir)
    assert all(Path(path).suffix == ".png" for path in dataset.paths)
    assert "empty_person" not in dataset.class_names
