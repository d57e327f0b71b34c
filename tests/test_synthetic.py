"""Synthetic faces: reproducible bytes, disjoint identities, usable difficulty."""

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from mfn_tf.data.insightface_dataset import open_insightface_dataset
from mfn_tf.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mfn_tf.data.verification_bin import decode_images, load_bin

SMALL = SyntheticConfig(classes=4, images_per_class=3, verification_classes=3,
                        verification_images_per_class=2, pairs=10, seed=7)
OUTPUTS = ("train.rec", "train.idx", "property", "labels.txt", "synth.bin")


def digests(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in OUTPUTS}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, SMALL, progress=False)
    return out


def test_same_seed_same_bytes(small, tmp_path):
    write_synthetic_dataset(tmp_path, SMALL, progress=False)
    assert digests(tmp_path) == digests(small)


def test_other_seed_other_images(small, tmp_path):
    other = SyntheticConfig(**{**SMALL.__dict__, "seed": 8})
    write_synthetic_dataset(tmp_path, other, progress=False)
    assert (tmp_path / "train.rec").read_bytes() != (small / "train.rec").read_bytes()
    assert (tmp_path / "property").read_bytes() == (small / "property").read_bytes()


def test_more_classes_keep_verification_set(small, tmp_path):
    larger = SyntheticConfig(**{**SMALL.__dict__, "classes": 5})
    write_synthetic_dataset(tmp_path, larger, progress=False)
    assert (tmp_path / "synth.bin").read_bytes() == (small / "synth.bin").read_bytes()


def test_training_set_layout(small):
    with open_insightface_dataset(small) as dataset:
        assert dataset.num_classes == 4
        assert dataset.num_images == 12
        assert dataset.image_size == (112, 112)
        np.testing.assert_array_equal(dataset.labels(), np.repeat(np.arange(4), 3))
        image, _ = dataset.decode_example(0)
    assert image.std() > 20


def test_verification_pairs_alternate(small):
    images, issame = load_bin(small / "synth.bin")
    assert len(images) == 20
    np.testing.assert_array_equal(issame, [True, False] * 5)


def test_verification_identities_unseen(small):
    """No verification image equals a training image."""
    images, _ = load_bin(small / "synth.bin")
    with open_insightface_dataset(small) as dataset:
        training = {dataset.read_example(p)[0] for p in range(dataset.num_images)}
    assert not training & set(images)


def test_cli_synth(tmp_path):
    result = CliRunner().invoke(main, [
        "data", "synth", "--out", str(tmp_path), "--classes", "3", "--images-per-class", "2",
        "--verification-classes", "2", "--verification-images-per-class", "2", "--pairs", "4",
    ])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "property").read_text() == "3,112,112\n"


def test_cli_synth_rejects_one_class(tmp_path):
    result = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path), "--classes", "1"])
    assert result.exit_code != 0
    assert "--classes must be at least 2, got 1" in result.output


def pixel_verification_accuracy(images, issame):
    """Best-threshold accuracy of cosine similarity on raw pixels."""
    pixels = decode_images(images).reshape(len(images), -1).astype(np.float64)
    pixels -= pixels.mean(axis=1, keepdims=True)
    pixels /= np.linalg.norm(pixels, axis=1, keepdims=True)
    similarity = np.sum(pixels[0::2] * pixels[1::2], axis=1)
    return max(np.mean((similarity > threshold) == issame) for threshold in similarity)


def test_default_verification_set_difficulty(tmp_path):
    """Raw pixels must not solve the default .bin, because then its
    accuracy would not measure the network."""
    config = SyntheticConfig(classes=2, images_per_class=1)
    write_synthetic_dataset(tmp_path, config, progress=False)
    images, issame = load_bin(tmp_path / "synth.bin")
    assert len(issame) == 300
    accuracy = pixel_verification_accuracy(images, issame)
    assert 0.55 <= accuracy <= 0.85, accuracy
