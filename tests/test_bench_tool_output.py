"""Parsers of benchncnn, benchmark_model and toybox `time -v` output.

The samples follow the tools' real output formats (see
tests/fake_adb/outputs/README.md); the numbers are invented.
"""

import pytest

from bench.errors import ToolOutputError
from bench.tool_output import parse_benchmark_model, parse_benchncnn, parse_max_rss_kib

BENCHNCNN = """\
loop_count = 50
num_threads = 4
powersave = 2
gpu_device = -1
cooling_down = 0
mobilefacenet.ncnn.param  min =    9.61  max =   11.08  avg =    9.90
"""

BENCHMARK_MODEL = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [mobilefacenet_fp32.tflite]
INFO: Loaded model mobilefacenet_fp32.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 4.07352
INFO: Initialized session in 23.817ms.
INFO: Running benchmark for at least 8 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=8 first=14301 curr=9102 min=8955 max=14301 avg=9842.5 std=1701 p5=8955 median=9120 p95=14301

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=9011 curr=8876 min=8547 max=10245 avg=8912.3 std=267 p5=8630 median=8870 p95=9621

INFO: Inference timings in us: Init: 23817, First inference: 14301, Warmup (avg): 9842.5, Inference (avg): 8912.3
INFO: Memory footprint delta from the start of the tool (MB): init=10.2578 overall=15.1172
"""

# Builds from before percentiles print only count..std, and an all-equal
# sample prints "count=N curr=X(all same)".
BENCHMARK_MODEL_OLD = """\
INFO: Num threads: [1]
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=3 curr=40000(all same)
INFO: Running benchmark for at least 4 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=4 first=30500 curr=30100 min=30000 max=30500 avg=30200 std=200
INFO: Inference timings in us: Init: 2482, First inference: 40000, Warmup (avg): 40000, Inference (avg): 30200
"""


def test_benchncnn_result_in_ms():
    timing = parse_benchncnn(BENCHNCNN, "mobilefacenet.ncnn.param")
    assert timing.min_ms == 9.61
    assert timing.max_ms == 11.08
    assert timing.avg_ms == 9.90
    assert timing.count == 50
    assert timing.median_ms is None
    assert timing.details["settings"]["powersave"] == 2


def test_benchncnn_checks_echoed_settings():
    expected = {"num_threads": 4, "loop_count": 50, "powersave": 2}
    assert parse_benchncnn(BENCHNCNN, "mobilefacenet.ncnn.param", expected=expected).avg_ms == 9.90
    with pytest.raises(ToolOutputError, match="num_threads = 4, but 8 was requested"):
        parse_benchncnn(BENCHNCNN, "mobilefacenet.ncnn.param", expected={"num_threads": 8})


def test_benchncnn_fopen_failure_is_an_error():
    # ncnn still prints a timing line for the empty network.
    text = BENCHNCNN.replace(
        "mobilefacenet.ncnn.param  min =    9.61",
        "fopen mobilefacenet.ncnn.param failed\nmobilefacenet.ncnn.param  min =    0.01",
    )
    with pytest.raises(ToolOutputError, match="fopen mobilefacenet.ncnn.param failed"):
        parse_benchncnn(text, "mobilefacenet.ncnn.param", source="r01.txt")


def test_benchncnn_without_model_line_names_old_binary():
    text = BENCHNCNN.replace("mobilefacenet.ncnn.param", "squeezenet")
    with pytest.raises(ToolOutputError, match="param=") as error:
        parse_benchncnn(text, "mobilefacenet.ncnn.param", source="r01.txt")
    assert "r01.txt" in str(error.value)


def test_benchmark_model_timed_phase():
    timing = parse_benchmark_model(BENCHMARK_MODEL, expected_threads=4)
    assert timing.count == 50
    assert timing.min_ms == pytest.approx(8.547)
    assert timing.max_ms == pytest.approx(10.245)
    assert timing.avg_ms == pytest.approx(8.9123)
    assert timing.median_ms == pytest.approx(8.870)
    assert timing.details["xnnpack"] == "completely"
    assert timing.details["footprint_overall_mb"] == pytest.approx(15.1172)
    assert timing.details["init_us"] == 23817


def test_benchmark_model_older_format():
    timing = parse_benchmark_model(BENCHMARK_MODEL_OLD)
    assert timing.count == 4
    assert timing.min_ms == pytest.approx(30.0)
    assert timing.median_ms is None
    assert "xnnpack" not in timing.details


def test_benchmark_model_error_line():
    text = BENCHMARK_MODEL.replace(
        "INFO: Created TensorFlow",
        "ERROR: Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'.\nINFO: Created TensorFlow",
    )
    with pytest.raises(ToolOutputError, match="FULLY_CONNECTED"):
        parse_benchmark_model(text)


def test_benchmark_model_unfinished_run():
    text = BENCHMARK_MODEL.split("INFO: Inference timings")[0]
    with pytest.raises(ToolOutputError, match="did not finish"):
        parse_benchmark_model(text)


def test_benchmark_model_thread_mismatch():
    with pytest.raises(ToolOutputError, match="ran with 4 threads, but 2"):
        parse_benchmark_model(BENCHMARK_MODEL, expected_threads=2)


def test_toybox_max_rss():
    text = "Real time (s): 1.2\nUser time (s): 3.1\nMax RSS (KiB): 21504\nMajor faults: 0\n"
    assert parse_max_rss_kib(text) == 21504
    assert parse_max_rss_kib(BENCHNCNN) is None
