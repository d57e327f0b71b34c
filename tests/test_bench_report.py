"""Benchmark figures, report writers and the pure helpers of the benchmarks."""

import csv
import json

import pytest

from bench.adb import choose_device, parse_devices
from bench.android import (
    affinity_mask,
    benchncnn_command,
    check_android_binary,
    core_sets,
    parse_cpu_table,
    parse_getprop,
    plan_rounds,
    resolve_android_threads,
    run_command,
)
from bench.errors import AdbError, BenchmarkError
from bench.host import resolve_threads
from bench.machine import count_physical_cores, cpu_model_from_cpuinfo
from bench.report import format_markdown, write_report
from bench.results import (
    FOLDED_NCNN,
    UNFOLDED_NCNN,
    BenchmarkResult,
    Measurement,
    fastest_by_threads,
    fusion_min_ratios,
    fusion_ratios,
    summarize,
)


def measurement(artifact, threads, median, low=None, high=None, runtime="ncnn"):
    return Measurement(
        artifact=artifact,
        label=artifact.replace("_", " "),
        runtime=runtime,
        precision="fp32",
        threads=threads,
        samples_ms=[median],
        median_ms=median,
        min_ms=low if low is not None else median * 0.9,
        max_ms=high if high is not None else median * 1.2,
        peak_rss_mib=40.0,
    )


MEASUREMENTS = [
    measurement(FOLDED_NCNN, 1, 9.0),
    measurement(UNFOLDED_NCNN, 1, 10.0),
    measurement("tflite_fp32", 1, 8.0, runtime="litert"),
    measurement(FOLDED_NCNN, 2, 5.0),
    measurement(UNFOLDED_NCNN, 2, 5.5),
    measurement("tflite_fp32", 2, 6.0, runtime="litert"),
]


def test_summarize_median_min_max():
    assert summarize([3.0, 1.0, 2.0, 10.0]) == (2.5, 1.0, 10.0)
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_fastest_by_threads():
    fastest = fastest_by_threads(MEASUREMENTS)
    assert fastest[1].artifact == "tflite_fp32"
    assert fastest[2].artifact == FOLDED_NCNN


def test_fusion_ratio_folded_over_unfolded():
    ratios = fusion_ratios(MEASUREMENTS)
    assert ratios[1] == (9.0, 10.0, pytest.approx(0.9))
    assert ratios[2] == (5.0, 5.5, pytest.approx(5.0 / 5.5))
    assert fusion_ratios(MEASUREMENTS[2:3]) == {}


def test_fusion_ratio_of_fastest_images():
    measurements = [
        measurement(FOLDED_NCNN, 1, 9.0, low=3.0),
        measurement(UNFOLDED_NCNN, 1, 9.5, low=4.0),
    ]
    assert fusion_min_ratios(measurements) == {1: pytest.approx(0.75)}


def result(target="host"):
    machine = (
        {"model": "Phone 3", "soc": "QTI SM8250", "governor": "schedutil"}
        if target == "android"
        else {"cpu_model": "Test CPU", "usable_cores": 2, "load_average_start": [1.0], "load_average_end": [1.2]}
    )
    return BenchmarkResult(target, machine, {"Threads": "1, 2"}, list(MEASUREMENTS), ["a note"])


def test_markdown_has_table_fastest_and_ratio():
    text = format_markdown(result())
    assert "# MobileFaceNet benchmark (host): Test CPU" in text
    assert "| 1 | tflite fp32 | 8.00 | 7.20 | 9.60 | 40 | 1.00 |" in text
    assert "| 1 | ncnn fp32 | 9.00 | 8.10 | 10.80 | 40 | 1.12 |" in text
    assert "- 2 threads: ncnn fp32, 5.00 ms" in text
    assert "| 1 | 9.00 | 10.00 | 0.900 | 0.900 |" in text
    assert "Published figures" not in text
    assert "- a note" in text


def test_android_markdown_shows_published_figures():
    text = format_markdown(result("android"))
    assert "Phone 3 (QTI SM8250)" in text
    assert "other people's measurements" in text
    assert "| Snapdragon 625 | benchncnn | 4 | 61.4 | BatchNorm not folded |" in text
    assert "| Snapdragon 625 | benchncnn | 8 | 28.9 |" in text
    assert "| Snapdragon 820 |" in text
    assert "| 4 | 24.0 |" in text


def test_write_report_files(tmp_path):
    paths = write_report(result(), tmp_path, "host_benchmark")
    assert sorted(path.name for path in paths.values()) == [
        "host_benchmark.csv",
        "host_benchmark.json",
        "host_benchmark.md",
        "host_benchmark.png",
    ]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(MEASUREMENTS)
    assert rows[0]["device"] == "Test CPU"
    assert float(rows[0]["median_ms"]) == 9.0
    assert json.loads(paths["json"].read_text())["measurements"][0]["artifact"] == FOLDED_NCNN
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resolve_threads():
    assert resolve_threads("1,2,all", cores=8) == [1, 2, 8]
    assert resolve_threads("all,2,2", cores=2) == [2]
    with pytest.raises(BenchmarkError, match="invalid thread count '0'"):
        resolve_threads("1,0", cores=4)
    with pytest.raises(BenchmarkError, match="'many'"):
        resolve_threads("many", cores=4)


def test_cpu_model_from_cpuinfo():
    assert cpu_model_from_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    raspberry_pi = "processor\t: 0\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    assert cpu_model_from_cpuinfo(raspberry_pi) == "Raspberry Pi 4 Model B Rev 1.4"
    assert cpu_model_from_cpuinfo("processor\t: 0\nCPU part\t: 0xd05\n") is None


def test_count_physical_cores():
    text = "".join(
        f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i // 2}\n\n" for i in range(8)
    )
    assert count_physical_cores(text) == 4
    assert count_physical_cores("processor\t: 0\n") is None


CPU_TABLE = "cpu0 1804800 schedutil\ncpu1 1804800 schedutil\ncpu4 2419200 performance\ncpu7 2841600 -\n"


def test_cpu_table_and_core_sets():
    cpus = parse_cpu_table(CPU_TABLE)
    assert cpus == [
        (0, 1804800, "schedutil"),
        (1, 1804800, "schedutil"),
        (4, 2419200, "performance"),
        (7, 2841600, None),
    ]
    # Midpoint of 1.80 and 2.84 GHz is 2.32 GHz: cpu4 and cpu7 are big.
    assert core_sets(cpus) == {0: [0, 1, 4, 7], 1: [0, 1], 2: [4, 7]}
    assert affinity_mask([4, 7]) == "90"
    assert affinity_mask([4, 5, 6, 7]) == "f0"


def test_core_sets_uniform_cores_are_all_big():
    cpus = [(index, 1800000, "schedutil") for index in range(8)]
    assert core_sets(cpus) == {0: list(range(8)), 1: [], 2: list(range(8))}


def test_getprop_parsing():
    properties = parse_getprop("[ro.product.model]: [Pixel 7]\n[ro.soc.model]: [GS201]\nnot a property\n")
    assert properties == {"ro.product.model": "Pixel 7", "ro.soc.model": "GS201"}


def test_android_thread_counts():
    assert resolve_android_threads("1,2,all", cores_in_mode=4) == [1, 2, 4]
    with pytest.raises(BenchmarkError, match="invalid thread count"):
        resolve_android_threads("1,-2", cores_in_mode=4)


def test_plan_rounds_rotate():
    plan = plan_rounds(["a", "b", "c"], [1, 4], repeats=2)
    assert [artifact for _, threads, artifact in plan if threads == 1] == ["a", "b", "c", "b", "c", "a"]
    assert len(plan) == 12


def test_device_commands_quote_the_shape():
    args = benchncnn_command("m.ncnn.param", 4, 50, 2, (112, 112, 3))
    assert args == ["./benchncnn", "50", "4", "2", "-1", "0", "param=m.ncnn.param", "shape=[112,112,3]"]
    command = run_command("/data/local/tmp/x", args, "r01.txt", 10, mask="f0")
    # Unquoted, the brackets are a glob that the device shell may expand.
    assert "'shape=[112,112,3]'" in command
    assert command.startswith("cd /data/local/tmp/x && sleep 10 && toybox time -v taskset f0 ./benchncnn 50 4 2")
    assert command.endswith("> logs/r01.txt 2>&1")


def test_android_binary_check(tmp_path):
    with pytest.raises(BenchmarkError, match="benchncnn not found"):
        check_android_binary(tmp_path / "missing", "benchncnn")
    archive = tmp_path / "benchmark_model.zip"
    archive.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(BenchmarkError, match="no ELF header"):
        check_android_binary(archive, "benchmark_model")
    host_build = tmp_path / "benchncnn_x86"
    host_build.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + (62).to_bytes(2, "little") + bytes(40))
    with pytest.raises(BenchmarkError, match="64-bit ELF binary for x86-64, not aarch64"):
        check_android_binary(host_build, "benchncnn")
    arm64 = tmp_path / "benchncnn"
    arm64.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + (183).to_bytes(2, "little") + bytes(40))
    assert check_android_binary(arm64, "benchncnn") == arm64


def test_choose_device():
    listed = parse_devices("List of devices attached\nA1\tdevice\nB2\tdevice\nC3\tunauthorized\n\n")
    assert listed == [("A1", "device"), ("B2", "device"), ("C3", "unauthorized")]
    assert choose_device([("A1", "device")]) == "A1"
    assert choose_device(listed, serial="B2") == "B2"
    with pytest.raises(AdbError, match="no Android device"):
        choose_device([])
    with pytest.raises(AdbError, match=r"several devices are attached \(A1, B2\).*--serial"):
        choose_device(listed)
    assert choose_device(listed[1:]) == "B2"
    with pytest.raises(AdbError, match="C3 is unauthorized"):
        choose_device(listed, serial="C3")
    with pytest.raises(AdbError, match="'Z9' is not attached"):
        choose_device(listed, serial="Z9")
    with pytest.raises(AdbError, match="A1 is offline"):
        choose_device([("A1", "offline")])
