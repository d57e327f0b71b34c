"""ncnn export with pnnx: layers, side files, the model file format, parity."""

import numpy as np
import pytest

from converters.fold_batchnorm import fold_batchnorm
from converters.ncnn_export import (
    NcnnExportError,
    check_ncnn_layers,
    export_ncnn,
    export_ncnn_unfolded,
    find_pnnx,
)
from converters.ncnn_model import NcnnModelError, read_model, write_model
from converters.onnx_export import export_onnx
from converters.runtimes import NcnnRunner
from mfn_tf.model.mobilefacenet import MobileFaceNet
from test_fold_batchnorm import randomize_batchnorm


@pytest.fixture(scope="module")
def tiny_model():
    return randomize_batchnorm(MobileFaceNet(width_multiplier=0.25), seed=1)


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(0).uniform(0, 255, (3, 112, 112, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """The tiny model's folded ONNX converted to fp32 and fp16 ncnn."""
    folder = tmp_path_factory.mktemp("ncnn")
    export_onnx(fold_batchnorm(tiny_model), folder / "model.onnx")
    out = folder / "out"
    out.mkdir()
    counts = {}
    for precision in ("fp32", "fp16"):
        counts[precision] = export_ncnn(
            folder / "model.onnx",
            out / f"{precision}.ncnn.param",
            out / f"{precision}.ncnn.bin",
            fp16=precision == "fp16",
        )
    return out, counts


def assert_embeddings_close(actual, expected, cosine):
    cosines = np.sum(actual * expected, axis=1) / (
        np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosines.min() >= cosine, cosines


def test_layer_types(exported):
    _, counts = exported
    assert counts["fp32"]["Convolution"] == 32
    assert counts["fp32"]["ConvolutionDepthWise"] == 17
    assert counts["fp32"]["PReLU"] == 33
    assert counts["fp32"]["InnerProduct"] == 1
    # The input scaling (multiply, add) and the 12 residual adds.
    assert counts["fp32"]["BinaryOp"] == 2 + 12
    for absent in ("BatchNorm", "Permute", "Padding", "MemoryData"):
        assert absent not in counts["fp32"], absent


def test_only_ncnn_files_written(exported):
    out, _ = exported
    assert sorted(path.name for path in out.iterdir()) == [
        "fp16.ncnn.bin",
        "fp16.ncnn.param",
        "fp32.ncnn.bin",
        "fp32.ncnn.param",
    ]


def test_fp16_storage_halves_weights(exported):
    out, _ = exported
    ratio = (out / "fp16.ncnn.bin").stat().st_size / (out / "fp32.ncnn.bin").stat().st_size
    assert 0.45 < ratio < 0.6, ratio


def test_fp32_matches_keras(exported, tiny_model, faces):
    out, _ = exported
    runner = NcnnRunner(out / "fp32.ncnn.param", out / "fp32.ncnn.bin", num_threads=1)
    expected = np.asarray(tiny_model(faces, training=False))
    assert_embeddings_close(runner.embed(faces), expected, 0.99999)


def test_fp16_matches_keras(exported, tiny_model, faces):
    out, _ = exported
    runner = NcnnRunner(out / "fp16.ncnn.param", out / "fp16.ncnn.bin", fp16=True, num_threads=1)
    expected = np.asarray(tiny_model(faces, training=False))
    assert_embeddings_close(runner.embed(faces), expected, 0.9999)


def test_runner_repeats_exactly(exported, faces):
    # A Mat borrowed from a freed temporary gave different garbage on each
    # call; the runner's owned copies must give identical results.
    out, _ = exported
    runner = NcnnRunner(out / "fp32.ncnn.param", out / "fp32.ncnn.bin", num_threads=1)
    first = runner.embed(faces)
    np.testing.assert_array_equal(runner.embed(faces.copy()), first)
    np.testing.assert_array_equal(runner.embed(faces[:1])[0], first[0])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_model_file_round_trip(exported, tmp_path, precision):
    out, _ = exported
    layers = read_model(out / f"{precision}.ncnn.param", out / f"{precision}.ncnn.bin")
    write_model(tmp_path / "copy.param", tmp_path / "copy.bin", layers)
    original = (out / f"{precision}.ncnn.bin").read_bytes()
    assert (tmp_path / "copy.bin").read_bytes() == original


def test_truncated_bin_rejected(exported, tmp_path):
    out, _ = exported
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes((out / "fp32.ncnn.bin").read_bytes()[:-100])
    with pytest.raises(NcnnModelError, match="truncated"):
        read_model(out / "fp32.ncnn.param", truncated)


def test_unfolded_keeps_batchnorm(tiny_model, faces, tmp_path):
    counts = export_ncnn_unfolded(tiny_model, tmp_path / "u.param", tmp_path / "u.bin")
    assert counts["BatchNorm"] == 50
    assert counts["Convolution"] == 32
    runner = NcnnRunner(tmp_path / "u.param", tmp_path / "u.bin", num_threads=1)
    expected = np.asarray(tiny_model(faces, training=False))
    assert_embeddings_close(runner.embed(faces), expected, 0.99999)


def test_check_rejects_permute():
    with pytest.raises(NcnnExportError, match="Permute"):
        check_ncnn_layers({"Convolution": 3, "Permute": 1})


def test_missing_pnnx_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("MFN_TF_PNNX", str(tmp_path / "absent" / "pnnx"))
    with pytest.raises(NcnnExportError, match="no such file"):
        find_pnnx()


def test_pnnx_failure_shows_output(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(NcnnExportError, match="pnnx"):
        export_ncnn(broken, tmp_path / "b.param", tmp_path / "b.bin")
