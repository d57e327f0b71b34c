"""The host benchmark on a real conversion of a small MobileFaceNet.

The converter writes the Keras, TFLite fp32, ONNX and ncnn fp32 artifacts
of a width-0.25 model with random BatchNorm statistics. The benchmark
runs each in its own worker process with the real runtimes, exports and
checks the unfolded ncnn model, and writes the report.
"""

import csv
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from bench.cli import bench
from bench.errors import BenchmarkError
from bench.host import run_host_benchmark
from bench.results import FOLDED_NCNN, UNFOLDED_NCNN
from mfn_tf.data.synthetic import render_identity_images
from mfn_tf.model.mobilefacenet import MobileFaceNet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from converters.convert import convert_model
    from converters.options import ConvertOptions

    root = tmp_path_factory.mktemp("bench_host")
    faces = root / "faces"
    faces.mkdir()
    for identity in range(4):
        (faces / f"face_{identity}.jpg").write_bytes(render_identity_images(1, 0, identity, 1)[0])

    keras.utils.set_random_seed(0)
    model = MobileFaceNet(width_multiplier=0.25)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    source = root / "tiny.keras"
    model.save(source)

    out = root / "converted"
    options = ConvertOptions(precisions=("fp32",), parity_dir=faces, parity_count=4, progress=False)
    convert_model(model, out, options, source=str(source))
    return out


@pytest.fixture(scope="module")
def benchmarked(converted, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_host_out")
    result = run_host_benchmark(converted, out, threads="1", repeats=2, iterations=3, warmup=1)
    return result, out


def test_host_benchmark_runs_every_artifact(benchmarked):
    result, out = benchmarked
    names = {m.artifact for m in result.measurements}
    assert names == {"keras_fp32", "tflite_fp32", "onnx_fp32", FOLDED_NCNN, UNFOLDED_NCNN}
    for m in result.measurements:
        assert m.threads == 1
        assert len(m.samples_ms) == 6
        assert 0 < m.min_ms <= m.median_ms <= m.max_ms
        assert m.peak_rss_mib > m.details["baseline_rss_mib"]
    by_name = {m.artifact: m for m in result.measurements}
    # TensorFlow alone outweighs the native runtimes.
    assert by_name["keras_fp32"].peak_rss_mib > by_name["tflite_fp32"].peak_rss_mib
    assert by_name["tflite_fp32"].details["xnnpack_partitions"] == 1
    assert "synthetic face" in result.settings["Input"]

    record = json.loads((out / "unfolded" / "source.json").read_text())
    assert record["layer_counts"]["BatchNorm"] > 0
    assert record["cosine_to_folded"] > 0.99999

    report = (out / "host_benchmark.md").read_text()
    assert "## BatchNorm folding (ncnn fp32)" in report
    assert "Fastest at each thread count" in report
    rows = list(csv.DictReader((out / "host_benchmark.csv").open()))
    assert len(rows) == 5
    assert (out / "host_benchmark.png").stat().st_size > 0
    assert (out / "logs" / "worker_ncnn_fp32_t1.log").is_file()


def test_host_cli_reuses_unfolded_model(converted, benchmarked):
    _, out = benchmarked
    param = out / "unfolded" / "mobilefacenet_unfolded.ncnn.param"
    exported = param.stat().st_mtime_ns
    outcome = CliRunner().invoke(
        bench,
        [
            "--model-dir", str(converted), "--out", str(out), "--quick",
            "--artifacts", "ncnn_fp32,ncnn_fp32_unfolded,tflite_fp32",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    assert "fastest at 1 thread(s)" in outcome.output
    assert "BatchNorm folding at 1 thread(s)" in outcome.output
    assert param.stat().st_mtime_ns == exported
    report = (out / "host_benchmark.md").read_text()
    assert "2 rounds of 10 timed images" in report
    assert "Keras" not in report


def test_host_rejects_unknown_artifact(converted, tmp_path):
    with pytest.raises(BenchmarkError, match="unknown artifact name.*tflite_int4.*this folder has"):
        run_host_benchmark(converted, tmp_path, only=["tflite_int4"], unfolded=False)


def test_host_needs_a_conversion_report(tmp_path):
    with pytest.raises(BenchmarkError, match="cannot read the conversion report"):
        run_host_benchmark(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
