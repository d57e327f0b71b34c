"""`data inspect` and `data reindex` on small generated datasets."""

import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from mfn_tf.data.inspection import summarize, write_contact_sheet
from mfn_tf.data.recordio import RecordIOReader, RecordIOWriter, unpack_record
from mfn_tf.data.synthetic import SyntheticConfig, write_synthetic_dataset

CONFIG = SyntheticConfig(classes=5, images_per_class=3, verification_classes=3,
                         verification_images_per_class=2, pairs=6, seed=1)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, CONFIG, progress=False)
    return out


def test_summary_of_training_set(synth_dir):
    summary = summarize(synth_dir, progress=False)
    assert summary.num_images == 15
    assert summary.num_classes == 5
    assert summary.images_per_class.tolist() == [3] * 5
    assert summary.formats == {"JPEG": 15}
    assert summary.sizes == {"112x112": 15}
    text = "\n".join(summary.lines())
    assert "images per class: min 3, median 3, max 3" in text


def test_summary_of_bin(synth_dir):
    summary = summarize(synth_dir / "synth.bin", decode=True, progress=False)
    assert summary.num_pairs == 6
    assert summary.num_same_pairs == 3
    assert summary.images_checked == 12
    assert summary.decoded


def test_summary_samples_images(synth_dir):
    summary = summarize(synth_dir, sample=4, progress=False)
    assert summary.images_checked == 4


def test_cli_inspect_writes_sheet(synth_dir, tmp_path):
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(main, ["data", "inspect", str(synth_dir), "--sheet", str(sheet),
                                       "--identities", "3"])
    assert result.exit_code == 0, result.output
    assert "classes: 5" in result.output
    with Image.open(sheet) as image:
        assert image.format == "PNG"
        assert image.width > 300


def test_cli_inspect_bin_sheet(synth_dir, tmp_path):
    sheet = tmp_path / "pairs.png"
    result = CliRunner().invoke(main, ["data", "inspect", str(synth_dir / "synth.bin"),
                                       "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    assert "pairs: 6 (3 same, 3 different)" in result.output
    assert sheet.stat().st_size > 1000


def test_cli_reindex_restores_index(synth_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("train.rec", "property"):
        (copy / name).write_bytes((synth_dir / name).read_bytes())
    result = CliRunner().invoke(main, ["data", "reindex", str(copy)])
    assert result.exit_code == 0, result.output
    assert (copy / "train.idx").read_bytes() == (synth_dir / "train.idx").read_bytes()
    again = CliRunner().invoke(main, ["data", "reindex", str(copy)])
    assert again.exit_code != 0
    assert "already exists" in again.output


def test_summary_without_header(synth_dir, tmp_path):
    """A set without header record: images per class come from a label scan."""
    with RecordIOReader(synth_dir / "train.rec", synth_dir / "train.idx") as reader:
        images = [reader.read(key) for key in range(1, 16)]
    headerless = tmp_path / "headerless"
    headerless.mkdir()
    with RecordIOWriter(headerless / "train.rec", headerless / "train.idx") as writer:
        for key, record in enumerate(images):
            writer.write(key, record)
    (headerless / "property").write_text("5,112,112\n")
    summary = summarize(headerless, progress=False)
    assert summary.has_header is False
    assert summary.images_per_class.tolist() == [3] * 5
    write_contact_sheet(headerless, tmp_path / "sheet.png", identities=2)
    assert (tmp_path / "sheet.png").stat().st_size > 1000


def test_summary_of_image_folders(synth_dir, tmp_path):
    with RecordIOReader(synth_dir / "train.rec", synth_dir / "train.idx") as reader:
        for key in range(1, 7):
            _, payload = unpack_record(reader.read(key))
            folder = tmp_path / "folders" / f"person_{(key - 1) // 3}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{key}.jpg").write_bytes(payload)
    summary = summarize(tmp_path / "folders", progress=False)
    assert summary.kind == "image folders"
    assert summary.num_classes == 2
    assert summary.images_per_class.tolist() == [3, 3]
    write_contact_sheet(tmp_path / "folders", tmp_path / "sheet.png")
    assert (tmp_path / "sheet.png").stat().st_size > 1000
