"""`python cli.py convert` end to end: a trained model, an imported one,
failures, and the files and reports the command leaves behind."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from converters.convert import ConversionError, convert_model
from converters.options import ConvertOptions, validate_options
from converters.runtimes import LiteRTRunner, NcnnRunner
from mfn_tf.heads import ArcFace
from mfn_tf.model.mobilefacenet import MobileFaceNet
from mfn_tf.training.model_builder import build_training_model
from test_fold_batchnorm import randomize_batchnorm

TINY_FILES = [
    "embedding_folded.keras",
    "mobilefacenet.ncnn.bin",
    "mobilefacenet.ncnn.param",
    "mobilefacenet.onnx",
    "mobilefacenet_fp16.ncnn.bin",
    "mobilefacenet_fp16.ncnn.param",
    "mobilefacenet_fp16.tflite",
    "mobilefacenet_fp32.tflite",
    "model_io.json",
    "parity.png",
    "report.json",
    "report.md",
]


@pytest.fixture(scope="module")
def training_model_file(tmp_path_factory):
    """A tiny training model as this project saves it: backbone + ArcFace fc7."""
    backbone = randomize_batchnorm(MobileFaceNet(width_multiplier=0.25), seed=5)
    model = build_training_model(backbone, ArcFace(10, name="fc7"))
    path = tmp_path_factory.mktemp("model") / "trained.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def converted(training_model_file, lfw_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    result = CliRunner().invoke(
        main,
        [
            "convert",
            "--model", str(training_model_file),
            "--out", str(out),
            "--target", "all",
            "--precision", "fp32",
            "--precision", "fp16",
            "--parity-dir", str(lfw_images),
            "--parity-count", "8",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    return out, report, result.output


def artifact(report, name):
    (entry,) = [item for item in report["artifacts"] if item["name"] == name]
    return entry


@pytest.mark.shared_data
def test_trained_model_files(converted):
    out, _, _ = converted
    assert sorted(path.name for path in out.iterdir()) == TINY_FILES


@pytest.mark.shared_data
def test_trained_model_parity(converted):
    _, report, output = converted
    assert len(report["artifacts"]) == 6
    for entry in report["artifacts"]:
        assert entry["status"] == "passed", entry
        assert entry["parity"]["count"] == 8
        assert entry["parity"]["min_cosine"] >= entry["parity"]["bar"]
        assert entry["size_bytes"] > 0
    assert "mobilefacenet.ncnn" in output


@pytest.mark.shared_data
def test_head_removed_and_folded(converted):
    _, report, _ = converted
    keras_layers = artifact(report, "embedding_folded.keras")["layer_counts"]
    assert "BatchNormalization" not in keras_layers
    assert "ArcFace" not in keras_layers
    assert report["folded"] is True
    assert report["folded_batchnorm_count"] == 50


@pytest.mark.shared_data
def test_layer_counts_in_report(converted):
    _, report, _ = converted
    tflite = artifact(report, "mobilefacenet_fp32.tflite")["layer_counts"]
    assert tflite["PRELU"] == 33
    assert tflite["PAD"] == 4
    assert "DEQUANTIZE" in artifact(report, "mobilefacenet_fp16.tflite")["layer_counts"]
    onnx = artifact(report, "mobilefacenet.onnx")["layer_counts"]
    assert onnx["PRelu"] == 33
    assert "BatchNormalization" not in onnx
    ncnn = artifact(report, "mobilefacenet.ncnn")["layer_counts"]
    assert ncnn["Convolution"] == 32
    assert "BatchNorm" not in ncnn


@pytest.mark.shared_data
def test_model_io(converted):
    out, _, _ = converted
    model_io = json.loads((out / "model_io.json").read_text())
    assert model_io["input"]["value_range"] == [0, 255]
    assert model_io["input"]["color_order"] == "RGB"
    assert model_io["onnx"]["shape"] == [1, 3, 112, 112]
    assert model_io["tflite"]["shape"] == [1, 112, 112, 3]
    assert model_io["ncnn"]["input_blob"] == "in0"
    assert model_io["output"]["shape"] == [1, 128]


@pytest.mark.shared_data
def test_report_markdown(converted):
    out, _, _ = converted
    text = (out / "report.md").read_text()
    assert "| `mobilefacenet_fp32.tflite` | litert | fp32 |" in text
    assert "## Tool versions" in text


@pytest.mark.shared_data
def test_below_bar_leaves_failed_file(training_model_file, lfw_images, tmp_path, monkeypatch):
    import keras

    from converters import parity

    out = tmp_path / "out"
    out.mkdir()
    # An earlier run's finished file must not survive a failed run.
    (out / "mobilefacenet.onnx").write_bytes(b"stale")
    monkeypatch.setitem(parity.PARITY_BARS, "fp32", 1.5)
    options = ConvertOptions(targets=("onnx",), parity_dir=lfw_images, parity_count=4)
    model = keras.models.load_model(training_model_file)
    with pytest.raises(ConversionError, match=r"mobilefacenet\.onnx: minimum cosine"):
        convert_model(model, out, options)
    assert not (out / "mobilefacenet.onnx").exists()
    assert (out / "mobilefacenet.onnx.failed").is_file()
    report = json.loads((out / "report.json").read_text())
    assert {entry["status"] for entry in report["artifacts"]} == {"failed"}
    assert not any(path.name.startswith(".staging") for path in out.iterdir())


def test_reconversion_removes_earlier_artifacts(training_model_file, lfw_images, tmp_path):
    import keras

    out = tmp_path / "out"
    out.mkdir()
    # What an earlier ncnn conversion of another model left behind.
    for name in ("mobilefacenet.ncnn.param", "mobilefacenet.ncnn.bin"):
        (out / name).write_text("another model")
    earlier = {"artifacts": [{"files": ["mobilefacenet.ncnn.param", "mobilefacenet.ncnn.bin"]}]}
    (out / "report.json").write_text(json.dumps(earlier))
    (out / "notes.txt").write_text("not an artifact")
    options = ConvertOptions(targets=("onnx",), parity_dir=lfw_images, parity_count=4)
    convert_model(keras.models.load_model(training_model_file), out, options)
    assert not (out / "mobilefacenet.ncnn.param").exists()
    assert not (out / "mobilefacenet.ncnn.bin").exists()
    assert (out / "mobilefacenet.onnx").is_file()
    assert (out / "notes.txt").is_file()


def test_cli_rejects_int8_without_faces(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "convert", "--model", "m.keras", "--out", str(tmp_path),
            "--target", "tflite", "--precision", "int8",
        ],
    )
    assert result.exit_code == 2
    assert "--calibration-dir" in result.output


@pytest.mark.parametrize(
    "options, message",
    [
        (ConvertOptions(targets=("ncnn",), precisions=("int8",), calibration_dir="x"), "int8"),
        (ConvertOptions(targets=("onnx",), precisions=("fp16",), parity_dir="x"), "onnx"),
        (
            ConvertOptions(targets=("onnx", "ncnn"), precisions=("fp16",), parity_dir="x"),
            "target onnx",
        ),
        (ConvertOptions(targets=("tflite",), fold=False, parity_dir="x"), "--no-fold"),
        (ConvertOptions(targets=("onnx",), qat=True, calibration_dir="x"), "--qat"),
        (ConvertOptions(targets=("onnx",)), "--parity-dir"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        validate_options(options)


@pytest.mark.slow
@pytest.mark.shared_data
def test_imported_insightface_model(insightface_model, lfw_images, tmp_path):
    out = tmp_path / "insightface"
    result = CliRunner().invoke(
        main,
        [
            "convert",
            "--model", f"{insightface_model},0",
            "--out", str(out),
            "--precision", "fp32",
            "--precision", "int8",
            "--calibration-dir", str(lfw_images),
            "--calibration-count", "100",
            "--parity-count", "32",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    statuses = {entry["name"]: entry["status"] for entry in report["artifacts"]}
    assert statuses == {
        "embedding_folded.keras": "passed",
        "mobilefacenet_fp32.tflite": "passed",
        "mobilefacenet_int8.tflite": "passed",
        "mobilefacenet.onnx": "passed",
        "mobilefacenet.ncnn": "passed",
    }
    int8 = artifact(report, "mobilefacenet_int8.tflite")
    assert int8["parity"]["min_cosine"] >= 0.99
    assert "equalization" in int8["note"]

    # The published files run outside the command too.
    faces = np.random.default_rng(0).uniform(0, 255, (1, 112, 112, 3)).astype(np.float32)
    tflite = LiteRTRunner(out / "mobilefacenet_fp32.tflite").embed(faces)
    ncnn = NcnnRunner(out / "mobilefacenet.ncnn.param", out / "mobilefacenet.ncnn.bin").embed(faces)
    np.testing.assert_allclose(ncnn, tflite, atol=1e-3)
