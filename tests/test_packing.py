"""`data pack-rec` and `data pack-bin`: selection, shifting, byte keeping,
and the identity-disjoint LFW split on real faces."""

import io

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from mfn_tf.data.errors import DatasetError
from mfn_tf.data.images import shift_x
from mfn_tf.data.insightface_dataset import open_insightface_dataset
from mfn_tf.data.lfw import (
    Pair,
    interleave_same_and_different,
    names_in_folds,
    parse_folds,
    read_pairs,
)
from mfn_tf.data.verification_bin import decode_images, load_bin

# name: number of images
PEOPLE = {"Ann_Lee": 3, "Bo_Chen": 1, "Cy_Diaz": 2, "Di_Evans": 4, "Ed_Fox": 2}

# 2 folds of 1 same and 1 different pair; fold 1 uses Ann and Bo, fold 2
# uses Cy and Di, and no person is in both, as in LFW.
PAIRS = "2\t1\nAnn_Lee\t1\t2\nAnn_Lee\t3\tBo_Chen\t1\nCy_Diaz\t1\t2\nCy_Diaz\t2\tDi_Evans\t4\n"


def gradient_jpeg(seed):
    """A 112x112 JPEG with horizontal structure, so shifts are visible."""
    rng = np.random.default_rng(seed)
    columns = np.cumsum(rng.integers(0, 5, 112)).clip(0, 255).astype(np.uint8)
    array = np.repeat(np.repeat(columns[None, :, None], 112, axis=0), 3, axis=2)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def lfw_like(tmp_path):
    root = tmp_path / "images"
    for seed, (name, count) in enumerate(PEOPLE.items()):
        (root / name).mkdir(parents=True)
        for number in range(1, count + 1):
            data = gradient_jpeg(seed * 10 + number)
            (root / name / f"{name}_{number:04d}.jpg").write_bytes(data)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(PAIRS)
    return root, pairs


def run(*args):
    result = CliRunner().invoke(main, ["data", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def class_names(path):
    with open_insightface_dataset(path) as dataset:
        return [dataset.class_names()[label] for label in range(dataset.num_classes)]


def test_pack_rec_all(lfw_like, tmp_path):
    root, _ = lfw_like
    run("pack-rec", root, "--out", tmp_path / "out")
    with open_insightface_dataset(tmp_path / "out") as dataset:
        assert dataset.num_classes == 5
        assert dataset.num_images == 12
        assert (tmp_path / "out" / "property").read_text() == "5,112,112\n"
        counts = np.diff(dataset.identity_ranges(), axis=1).ravel()
        np.testing.assert_array_equal(counts, list(PEOPLE.values()))
        data, label = dataset.read_example(0)
        assert label == 0
        # Unmodified images keep their original bytes.
        assert data == (root / "Ann_Lee" / "Ann_Lee_0001.jpg").read_bytes()
    labels_txt = (tmp_path / "out" / "labels.txt").read_text().splitlines()
    assert labels_txt[1] == "0\tAnn_Lee\t3"
    assert not list((tmp_path / "out").glob("*.partial"))


def test_pack_rec_min_images(lfw_like, tmp_path):
    root, _ = lfw_like
    run("pack-rec", root, "--out", tmp_path / "out", "--min-images", 2)
    assert class_names(tmp_path / "out") == ["Ann_Lee", "Cy_Diaz", "Di_Evans", "Ed_Fox"]


def test_pack_rec_include_file_and_exclude_list(lfw_like, tmp_path):
    root, _ = lfw_like
    include = tmp_path / "keep.txt"
    include.write_text("# people to keep\nEd_Fox\nAnn_Lee\nBo_Chen\n")
    run("pack-rec", root, "--out", tmp_path / "out", "--include", include, "--exclude", "Bo_Chen")
    assert class_names(tmp_path / "out") == ["Ann_Lee", "Ed_Fox"]


def test_pack_rec_include_unknown_identity(lfw_like, tmp_path):
    root, _ = lfw_like
    result = CliRunner().invoke(
        main, ["data", "pack-rec", str(root), "--out", str(tmp_path / "out"), "--include", "Ann_Le"]
    )
    assert result.exit_code != 0
    assert "'Ann_Le'" in result.output


def test_pack_rec_exclude_pair_folds(lfw_like, tmp_path):
    root, pairs = lfw_like
    result = run("pack-rec", root, "--out", tmp_path / "out",
                 "--exclude-pairs", pairs, "--exclude-folds", "2")
    assert "excluding 2 identities" in result.output
    assert class_names(tmp_path / "out") == ["Ann_Lee", "Bo_Chen", "Ed_Fox"]


def test_pack_rec_shift(lfw_like, tmp_path):
    root, _ = lfw_like
    run("pack-rec", root, "--out", tmp_path / "out", "--shift-x", 8)
    original = decode_images([(root / "Ann_Lee" / "Ann_Lee_0001.jpg").read_bytes()])[0]
    with open_insightface_dataset(tmp_path / "out") as dataset:
        shifted, _ = dataset.decode_example(0)
    expected = shift_x(original, 8).astype(int)
    # Re-encoding as JPEG changes pixels a little.
    assert np.abs(shifted.astype(int) - expected).mean() < 2.0
    assert np.abs(shifted.astype(int) - original.astype(int)).mean() > 2.0


def test_shift_x_edges():
    image = np.arange(5, dtype=np.uint8)[None, :, None].repeat(2, axis=0)
    np.testing.assert_array_equal(shift_x(image, 2)[0, :, 0], [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(shift_x(image, -2)[0, :, 0], [2, 3, 4, 4, 4])
    np.testing.assert_array_equal(shift_x(image, 0), image)
    with pytest.raises(ValueError):
        shift_x(image, 5)


def test_read_pairs(lfw_like):
    _, pairs_path = lfw_like
    pairs = read_pairs(pairs_path)
    assert [pair.fold for pair in pairs] == [1, 1, 2, 2]
    assert [pair.issame for pair in pairs] == [True, False, True, False]
    assert (pairs[1].name_b, pairs[1].number_b) == ("Bo_Chen", 1)
    assert names_in_folds(pairs, {2}) == {"Cy_Diaz", "Di_Evans"}


def test_interleave_same_and_different():
    def pair(fold, issame, number):
        return Pair(fold, "A", number, "A" if issame else "B", 1, issame, number)

    pairs = [pair(1, True, 1), pair(1, True, 2), pair(1, False, 3), pair(1, False, 4),
             pair(2, True, 5), pair(2, False, 6), pair(2, False, 7)]
    ordered = interleave_same_and_different(pairs)
    assert [p.line_number for p in ordered] == [1, 3, 2, 4, 5, 6, 7]
    assert [p.fold for p in ordered] == [1, 1, 1, 1, 2, 2, 2]


def test_read_pairs_wrong_line_count(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("2\t1\nA\t1\t2\n")
    with pytest.raises(DatasetError, match="4 lines.*has 1 pair lines"):
        read_pairs(path)


def test_parse_folds():
    assert parse_folds("6-10") == {6, 7, 8, 9, 10}
    assert parse_folds("1,3,5-6") == {1, 3, 5, 6}
    with pytest.raises(DatasetError, match="invalid fold selection"):
        parse_folds("0-3")
    with pytest.raises(DatasetError, match="names fold 11"):
        parse_folds("9-11", num_folds=10)


def test_pack_bin_fold(lfw_like, tmp_path):
    root, pairs = lfw_like
    out = tmp_path / "fold2.bin"
    run("pack-bin", pairs, root, "--out", out, "--folds", "2")
    images, issame = load_bin(out)
    np.testing.assert_array_equal(issame, [True, False])
    assert images[0] == (root / "Cy_Diaz" / "Cy_Diaz_0001.jpg").read_bytes()
    assert images[3] == (root / "Di_Evans" / "Di_Evans_0004.jpg").read_bytes()


def test_pack_bin_shift_reencodes(lfw_like, tmp_path):
    root, pairs = lfw_like
    out = tmp_path / "shifted.bin"
    run("pack-bin", pairs, root, "--out", out, "--shift-x", 8)
    images, issame = load_bin(out)
    assert len(issame) == 4
    original = decode_images([(root / "Ann_Lee" / "Ann_Lee_0001.jpg").read_bytes()])[0]
    shifted = decode_images(images[:1])[0]
    assert np.abs(shifted.astype(int) - shift_x(original, 8).astype(int)).mean() < 2.0


def test_pack_bin_missing_image(lfw_like, tmp_path):
    root, pairs = lfw_like
    (root / "Di_Evans" / "Di_Evans_0004.jpg").unlink()
    result = CliRunner().invoke(main, ["data", "pack-bin", str(pairs), str(root),
                                       "--out", str(tmp_path / "x.bin")])
    assert result.exit_code != 0
    assert "pairs.txt:5: image" in result.output
    assert "Di_Evans_0004.jpg not found" in result.output
    assert not (tmp_path / "x.bin").exists()


def test_pack_bin_refuses_to_overwrite(lfw_like, tmp_path):
    root, pairs = lfw_like
    out = tmp_path / "lfw.bin"
    out.write_bytes(b"keep")
    result = CliRunner().invoke(main, ["data", "pack-bin", str(pairs), str(root), "--out", str(out)])
    assert result.exit_code != 0
    assert out.read_bytes() == b"keep"
    run("pack-bin", pairs, root, "--out", out, "--overwrite")
    assert len(load_bin(out)[1]) == 4


@pytest.mark.shared_data
def test_lfw_identity_disjoint_split(lfw_images, lfw_pairs, tmp_path):
    """Train on people of folds 1-5 or of no pair; verify on folds 6-10."""
    train = tmp_path / "lfw_train"
    run("pack-rec", lfw_images, "--out", train, "--exclude-pairs", lfw_pairs,
        "--exclude-folds", "6-10", "--shift-x", 8)
    verification = tmp_path / "lfw_folds_6-10.bin"
    run("pack-bin", lfw_pairs, lfw_images, "--out", verification, "--folds", "6-10",
        "--shift-x", 8)

    pairs = read_pairs(lfw_pairs)
    test_people = names_in_folds(pairs, set(range(6, 11)))
    train_people = set(class_names(train))
    assert not train_people & test_people
    all_people = {path.name for path in lfw_images.iterdir() if path.is_dir()}
    assert train_people == all_people - test_people

    images, issame = load_bin(verification)
    assert len(issame) == 3000
    assert int(issame.sum()) == 1500
    # Every contiguous tenth, a fold of the verification protocol, holds
    # both kinds of pair.
    for block in np.split(issame, 10):
        assert int(block.sum()) == 150
    assert decode_images(images[:2]).shape == (2, 112, 112, 3)
