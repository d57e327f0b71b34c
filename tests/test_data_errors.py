"""Bad input: each case raises a DatasetError that names the file (and the
record), and no command overwrites existing output."""

import io
import pickle
import shutil

import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from cli import main
from mfn_tf.data.errors import DatasetError
from mfn_tf.data.insightface_dataset import open_insightface_dataset
from mfn_tf.data.packing import write_dataset
from mfn_tf.data.pipeline import rec_dataset
from mfn_tf.data.recordio import IRHeader, RecordIOReader, RecordIOWriter, pack_record
from mfn_tf.data.verification_bin import InvalidBinError, load_bin

SIZE = (112, 112)


def jpeg(value, size=SIZE):
    buffer = io.BytesIO()
    Image.new("RGB", (size[1], size[0]), (value, value, value)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    """3 classes of 4 images: keys 0 header, 1..12 images, 13..15 identities."""
    path = tmp_path_factory.mktemp("good")
    identities = {f"id{c}": [jpeg(20 * c + i) for i in range(4)] for c in range(3)}
    write_dataset(path, identities, SIZE, load_image=bytes, progress=False)
    return path


@pytest.fixture
def dataset_copy(good_dir, tmp_path):
    path = tmp_path / "dataset"
    shutil.copytree(good_dir, path)
    return path


def rewrite_record(dataset_dir, key, record):
    """Rewrite the dataset with `record` in place of record `key`."""
    with RecordIOReader(dataset_dir / "train.rec", dataset_dir / "train.idx") as reader:
        records = [reader.read(int(k)) for k in reader.keys]
    records[key] = record
    with RecordIOWriter(dataset_dir / "train.rec", dataset_dir / "train.idx") as writer:
        for index, data in enumerate(records):
            writer.write(index, data)


def test_missing_idx(dataset_copy):
    (dataset_copy / "train.idx").unlink()
    with pytest.raises(DatasetError, match=r"train\.idx not found.*reindex"):
        open_insightface_dataset(dataset_copy)


def test_missing_rec(dataset_copy):
    (dataset_copy / "train.rec").unlink()
    with pytest.raises(DatasetError, match=r"train\.rec not found"):
        open_insightface_dataset(dataset_copy)


def test_idx_cut_mid_line(dataset_copy):
    idx = dataset_copy / "train.idx"
    idx.write_bytes(idx.read_bytes()[:-3])
    with pytest.raises(DatasetError, match=r"train\.idx.*truncated"):
        open_insightface_dataset(dataset_copy)


def test_idx_missing_last_lines(dataset_copy):
    idx = dataset_copy / "train.idx"
    lines = idx.read_text().splitlines(keepends=True)
    idx.write_text("".join(lines[:-2]))
    with pytest.raises(DatasetError, match=r"does not cover .*train\.rec.*truncated"):
        open_insightface_dataset(dataset_copy)


def test_idx_missing_identity_records(dataset_copy):
    # An index cut after the images but with the .rec cut to match still
    # fails: the header needs the identity records.
    idx = dataset_copy / "train.idx"
    lines = idx.read_text().splitlines(keepends=True)
    keep = lines[:13]
    next_offset = int(lines[13].split("\t")[1])
    idx.write_text("".join(keep))
    rec = dataset_copy / "train.rec"
    rec.write_bytes(rec.read_bytes()[:next_offset])
    with pytest.raises(DatasetError, match=r"no record 13.*header"):
        open_insightface_dataset(dataset_copy)


def test_truncated_rec(dataset_copy):
    rec = dataset_copy / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=r"train\.rec.*truncated"):
        open_insightface_dataset(dataset_copy)


def test_idx_offset_not_a_record(dataset_copy):
    idx = dataset_copy / "train.idx"
    lines = idx.read_text().splitlines()
    key, offset = lines[2].split("\t")
    lines[2] = f"{key}\t{int(offset) + 8}"
    idx.write_text("\n".join(lines) + "\n")
    with open_insightface_dataset(dataset_copy) as dataset:
        with pytest.raises(DatasetError, match=r"record 2: no RecordIO magic word"):
            dataset.read_example(1)


def test_property_class_count_mismatch(dataset_copy):
    (dataset_copy / "property").write_text("5,112,112\n")
    with pytest.raises(DatasetError, match=r"property gives 5 classes .* lists 3 identity"):
        open_insightface_dataset(dataset_copy)


def test_property_image_size_mismatch(dataset_copy):
    (dataset_copy / "property").write_text("3,96,112\n")
    with pytest.raises(DatasetError, match=r"images of 112x96 .*record 1 is 112x112"):
        open_insightface_dataset(dataset_copy)


def test_property_malformed(dataset_copy):
    (dataset_copy / "property").write_text("many,112\n")
    with pytest.raises(DatasetError, match=r"property: expected one line"):
        open_insightface_dataset(dataset_copy)


def test_property_too_few_classes_for_labels(dataset_copy, tmp_path):
    # Without a header, only the labels can contradict property.
    with RecordIOReader(dataset_copy / "train.rec", dataset_copy / "train.idx") as reader:
        images = [reader.read(key) for key in range(1, 13)]
    headerless = tmp_path / "headerless"
    headerless.mkdir()
    with RecordIOWriter(headerless / "train.rec", headerless / "train.idx") as writer:
        for key, record in enumerate(images):
            writer.write(key, record)
    (headerless / "property").write_text("2,112,112\n")
    with open_insightface_dataset(headerless) as dataset:
        with pytest.raises(DatasetError, match=r"record 8 has class 2, outside 0\.\.1"):
            dataset.labels()


def test_missing_property_without_header(dataset_copy, tmp_path):
    with RecordIOReader(dataset_copy / "train.rec", dataset_copy / "train.idx") as reader:
        image = reader.read(1)
    path = tmp_path / "bare"
    path.mkdir()
    with RecordIOWriter(path / "train.rec", path / "train.idx") as writer:
        writer.write(0, image)
    with pytest.raises(DatasetError, match=r"property not found.*num_classes"):
        open_insightface_dataset(path)


def test_corrupt_image_record_read(dataset_copy):
    rewrite_record(dataset_copy, 6, pack_record(IRHeader(0, 1.0, 6, 0), jpeg(9)[:300]))
    with open_insightface_dataset(dataset_copy) as dataset:
        with pytest.raises(DatasetError, match=r"train\.rec: record 6: .*cannot be decoded"):
            dataset.decode_example(5)


def test_corrupt_image_record_pipeline(dataset_copy):
    rewrite_record(dataset_copy, 6, pack_record(IRHeader(0, 1.0, 6, 0), b"not an image"))
    dataset = rec_dataset(dataset_copy, 4, shuffle=False, repeat=False)
    with pytest.raises(tf.errors.OpError) as raised:
        for _ in dataset:
            pass
    message = str(raised.value)
    assert "train.rec: record 6: invalid image" in message
    assert "not a JPEG, PNG or BMP" in message


def test_truncated_jpeg_record_pipeline(dataset_copy):
    rewrite_record(dataset_copy, 3, pack_record(IRHeader(0, 0.0, 3, 0), jpeg(9)[:400]))
    dataset = rec_dataset(dataset_copy, 4, shuffle=False, repeat=False)
    with pytest.raises(tf.errors.OpError, match=r"record 3: invalid image: JPEG .*truncated"):
        for _ in dataset:
            pass


def test_wrong_image_size_pipeline(dataset_copy):
    rewrite_record(dataset_copy, 2, pack_record(IRHeader(0, 0.0, 2, 0), jpeg(9, (96, 112))))
    dataset = rec_dataset(dataset_copy, 4, shuffle=False, repeat=False)
    with pytest.raises(tf.errors.OpError, match=r"record 2: the image is 112x96"):
        for _ in dataset:
            pass


def test_bin_not_a_pickle(tmp_path):
    path = tmp_path / "lfw.bin"
    path.write_bytes(b"\x89PNG this is not a pickle")
    with pytest.raises(InvalidBinError, match=r"lfw\.bin is not a verification \.bin"):
        load_bin(path)
    assert issubclass(InvalidBinError, DatasetError)


def test_bin_forbidden_global(tmp_path):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(shutil.rmtree))
    with pytest.raises(InvalidBinError, match="not allowed"):
        load_bin(path)


def test_bin_wrong_image_count(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(InvalidBinError, match="3 images for 1 pairs"):
        load_bin(path)


def test_pack_rec_refuses_to_overwrite(good_dir, tmp_path):
    images = tmp_path / "images" / "alice"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(jpeg(5))
    out = tmp_path / "out"
    shutil.copytree(good_dir, out)
    before = (out / "train.rec").read_bytes()
    result = CliRunner().invoke(main, ["data", "pack-rec", str(tmp_path / "images"), "--out", str(out)])
    assert result.exit_code != 0
    assert "already exists" in result.output
    assert "--overwrite" in result.output
    assert (out / "train.rec").read_bytes() == before


def test_failed_pack_leaves_no_partial_files(tmp_path):
    images = tmp_path / "images"
    (images / "alice").mkdir(parents=True)
    (images / "alice" / "a.jpg").write_bytes(jpeg(5))
    (images / "bob").mkdir()
    (images / "bob" / "b.jpg").write_bytes(b"\xff\xd8\xff broken")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["data", "pack-rec", str(images), "--out", str(out)])
    assert result.exit_code != 0
    assert "b.jpg" in result.output
    assert sorted(path.name for path in out.iterdir()) == []


def test_pack_rec_rejects_wrong_size(tmp_path):
    images = tmp_path / "images" / "alice"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(jpeg(5, (100, 100)))
    result = CliRunner().invoke(main, ["data", "pack-rec", str(tmp_path / "images"),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "a.jpg: the image is 100x100, expected 112x112" in result.output


def test_synth_refuses_to_overwrite_bin(tmp_path):
    (tmp_path / "synth.bin").write_bytes(b"keep me")
    result = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path), "--classes", "2"])
    assert result.exit_code != 0
    assert "synth.bin already exists" in result.output
    assert (tmp_path / "synth.bin").read_bytes() == b"keep me"
    assert not (tmp_path / "train.rec").exists()


def test_cli_shows_dataset_error_without_traceback(dataset_copy):
    (dataset_copy / "train.idx").unlink()
    result = CliRunner().invoke(main, ["data", "inspect", str(dataset_copy)])
    assert result.exit_code == 1
    assert "Error: index file" in result.output
    assert "Traceback" not in result.output


def test_labels_outside_property(dataset_copy):
    rewrite_record(dataset_copy, 4, pack_record(IRHeader(0, 7.0, 4, 0), jpeg(3)))
    with open_insightface_dataset(dataset_copy) as dataset:
        with pytest.raises(DatasetError, match=r"record 4 has class 7, outside 0\.\.2"):
            dataset.read_example(3)
