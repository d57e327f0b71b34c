"""The Android benchmark against a stand-in adb (no phone is attached here).

`tests/fake_adb/adb` records its calls, keeps the phone's files in a
folder and replays benchncnn and benchmark_model output in the real
formats, with faults chosen by FAKE_ADB_SCENARIO.
"""

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.android import run_android_benchmark
from bench.cli import bench
from bench.errors import AdbError, BenchmarkError, ToolOutputError
from bench.results import UNFOLDED_NCNN
from converters.report import SCHEMA_VERSION, build_model_io

FAKE_ADB_DIR = Path(__file__).resolve().parent / "fake_adb"
ARM64_ELF = b"\x7fELF\x02\x01\x01" + bytes(11) + (183).to_bytes(2, "little") + bytes(64)
ARTIFACTS = [
    ("embedding_folded.keras", "keras", "fp32", ["embedding_folded.keras"]),
    ("mobilefacenet_fp32.tflite", "litert", "fp32", ["mobilefacenet_fp32.tflite"]),
    ("mobilefacenet_fp16.tflite", "litert", "fp16", ["mobilefacenet_fp16.tflite"]),
    ("mobilefacenet_int8.tflite", "litert", "int8", ["mobilefacenet_int8.tflite"]),
    ("mobilefacenet.onnx", "onnxruntime", "fp32", ["mobilefacenet.onnx"]),
    ("mobilefacenet.ncnn", "ncnn", "fp32", ["mobilefacenet.ncnn.param", "mobilefacenet.ncnn.bin"]),
    ("mobilefacenet_fp16.ncnn", "ncnn", "fp16", ["mobilefacenet_fp16.ncnn.param", "mobilefacenet_fp16.ncnn.bin"]),
]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A conversion folder, the two tool binaries and the stand-in adb on PATH.

    The model files hold placeholder bytes: the stand-in tools never read
    them. The unfolded ncnn model is already in the output folder, as a
    host benchmark leaves it, so no conversion runs.
    """
    model_dir = tmp_path / "converted"
    model_dir.mkdir()
    entries = []
    for name, runtime, precision, files in ARTIFACTS:
        for file in files:
            (model_dir / file).write_bytes(b"model " + file.encode())
        entries.append(
            {
                "name": name,
                "runtime": runtime,
                "precision": precision,
                "files": files,
                "folded": True,
                "status": "passed",
            }
        )
    report = {"schema_version": SCHEMA_VERSION, "source_model": "trained.keras", "artifacts": entries}
    (model_dir / "report.json").write_text(json.dumps(report))
    (model_dir / "model_io.json").write_text(json.dumps(build_model_io(112, 128, keras_file="embedding_folded.keras")))

    out_dir = tmp_path / "out"
    unfolded = out_dir / "unfolded"
    unfolded.mkdir(parents=True)
    (unfolded / "mobilefacenet_unfolded.ncnn.param").write_text("7767517\n")
    (unfolded / "mobilefacenet_unfolded.ncnn.bin").write_bytes(b"weights")
    (unfolded / "source.json").write_text(json.dumps({"source_model": "trained.keras"}))

    tools = {}
    for tool in ("benchncnn", "benchmark_model"):
        tools[tool] = tmp_path / tool
        tools[tool].write_bytes(ARM64_ELF)

    state = tmp_path / "adb_state"
    # The stand-in runs on the `python3` first on PATH: this interpreter's.
    path = os.pathsep.join([str(FAKE_ADB_DIR), str(Path(sys.executable).parent), os.environ["PATH"]])
    monkeypatch.setenv("PATH", path)
    monkeypatch.setenv("FAKE_ADB_STATE", str(state))
    monkeypatch.delenv("FAKE_ADB_SCENARIO", raising=False)
    return {"model_dir": model_dir, "out_dir": out_dir, "state": state, **tools}


def calls(workspace):
    lines = (workspace["state"] / "calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def run(workspace, **options):
    settings = {"threads": "1,all", "loops": 20, "repeats": 1, "cooldown_s": 3}
    settings.update(options)
    return run_android_benchmark(
        workspace["model_dir"],
        workspace["benchncnn"],
        workspace["benchmark_model"],
        workspace["out_dir"],
        **settings,
    )


def test_android_run_through_stand_in_adb(workspace):
    result = run(workspace)
    by_key = {(m.artifact, m.threads): m for m in result.measurements}
    names = {"ncnn_fp32", UNFOLDED_NCNN, "tflite_fp32", "tflite_fp16", "tflite_int8"}
    # "all" is the 4 big cores of the sample phone (power-save 2).
    assert set(by_key) == {(name, threads) for name in names for threads in (1, 4)}
    # The stand-in's invented latencies: ncnn 30 ms, unfolded 33 ms at 1 thread.
    assert by_key[("ncnn_fp32", 1)].median_ms == pytest.approx(30.0)
    assert by_key[(UNFOLDED_NCNN, 1)].median_ms == pytest.approx(33.0)
    assert by_key[("tflite_fp32", 1)].median_ms == pytest.approx(27.0)
    assert by_key[("tflite_fp32", 1)].details["xnnpack"] == "completely"
    assert by_key[("ncnn_fp32", 4)].peak_rss_mib > 20
    assert result.machine["model"] == "Example Phone 3"
    assert result.machine["soc"] == "QTI SM8250"
    assert result.machine["governor"] == "schedutil"
    assert result.machine["fp16_arithmetic"] == "yes"

    recorded = calls(workspace)
    assert recorded[0] == ["devices"]
    pushed = [Path(call[3]).name for call in recorded if len(call) > 3 and call[2] == "push"]
    assert sorted(pushed) == sorted(
        [
            "benchncnn",
            "benchmark_model",
            "mobilefacenet.ncnn.param",
            "mobilefacenet_unfolded.ncnn.param",
            "mobilefacenet_fp32.tflite",
            "mobilefacenet_fp16.tflite",
            "mobilefacenet_int8.tflite",
        ]
    )
    runs = [call[3] for call in recorded if len(call) > 3 and call[2] == "shell" and "logs/r" in call[3]]
    assert len(runs) == 10
    ncnn_runs = [command for command in runs if "./benchncnn" in command]
    tflite_runs = [command for command in runs if "./benchmark_model" in command]
    # Same cool-down, loop count and cores for both tools.
    assert all("&& sleep 3 &&" in command for command in runs)
    assert all(" 20 " in command and " 2 -1 0 " in command for command in ncnn_runs)
    assert all("--num_runs=20 " in command and "taskset f0 " in command for command in tflite_runs)
    assert all("--warmup_runs=8 " in command for command in tflite_runs)
    pulled = [call for call in recorded if len(call) > 3 and call[2] == "pull"]
    assert len(pulled) == 10
    assert (workspace["out_dir"] / "android_logs" / "r01_t4_tflite_int8.txt").is_file()


def test_android_cli_writes_report(workspace):
    runner = CliRunner()
    outcome = runner.invoke(
        bench,
        [
            "--android",
            "--model-dir", str(workspace["model_dir"]),
            "--out", str(workspace["out_dir"]),
            "--benchncnn", str(workspace["benchncnn"]),
            "--benchmark-model", str(workspace["benchmark_model"]),
            "--threads", "2",
            "--repeats", "1",
            "--cooldown", "0",
            "--artifacts", "ncnn_fp32,ncnn_fp32_unfolded,tflite_int8",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    assert "fastest at 2 thread(s): TFLite int8" in outcome.output
    assert "BatchNorm folding at 2 thread(s)" in outcome.output
    report = (workspace["out_dir"] / "android_benchmark.md").read_text()
    assert "| 2 | ncnn fp32 (BN unfolded) |" in report
    assert "Published figures" in report
    for suffix in ("csv", "json", "png"):
        assert (workspace["out_dir"] / f"android_benchmark.{suffix}").is_file()


@pytest.mark.parametrize(
    "scenario, error, message",
    [
        ("no_device", AdbError, "no Android device found"),
        ("two_devices", AdbError, r"several devices are attached \(FAKE0001, FAKE0002\)"),
        ("unauthorized", AdbError, "FAKE0001 is unauthorized"),
        ("push_fails", AdbError, "(?s)adb push .*mobilefacenet_fp..\\.tflite.*No space left on device"),
        ("ncnn_missing_param", ToolOutputError, "fopen mobilefacenet.ncnn.param failed"),
        ("ncnn_builtin_list", ToolOutputError, "no result line for 'mobilefacenet.ncnn.param'"),
        ("tflite_error", AdbError, "(?s)exited with status 1:.*Didn't find op for builtin opcode"),
    ],
)
def test_android_faults_stop_with_message(workspace, monkeypatch, scenario, error, message):
    monkeypatch.setenv("FAKE_ADB_SCENARIO", scenario)
    with pytest.raises(error, match=message):
        run(workspace, threads="1")


def test_android_two_devices_with_serial(workspace, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_SCENARIO", "two_devices")
    result = run(workspace, threads="1", serial="FAKE0002", only=["tflite_fp32"])
    assert result.machine["serial"] == "FAKE0002"
    assert all(call[1] == "FAKE0002" for call in calls(workspace)[1:])


def test_android_without_toybox_time(workspace, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_SCENARIO", "no_time")
    result = run(workspace, threads="1", only=["ncnn_fp32"])
    assert result.measurements[0].peak_rss_mib is None
    assert any("no toybox `time`" in note for note in result.notes)
    runs = [call[3] for call in calls(workspace) if len(call) > 3 and call[2] == "shell" and "logs/r" in call[3]]
    assert runs and all("toybox time" not in command for command in runs)


def test_android_missing_binary_fails_before_adb(workspace):
    workspace["benchmark_model"].unlink()
    with pytest.raises(BenchmarkError, match="benchmark_model not found .*Performance measurement"):
        run(workspace)
    assert not (workspace["state"] / "calls.jsonl").exists()


def test_android_missing_adb(workspace, monkeypatch):
    with pytest.raises(AdbError, match="adb not found: 'no-such-adb'.*Platform-Tools"):
        run(workspace, adb_executable="no-such-adb")


def test_cli_rejects_options_of_the_other_target(workspace):
    runner = CliRunner()
    host_with_loops = runner.invoke(bench, ["--model-dir", str(workspace["model_dir"]), "--loops", "5"])
    assert host_with_loops.exit_code == 2
    assert "--loops only applies to runs on --android" in host_with_loops.output
    android_with_warmup = runner.invoke(
        bench, ["--android", "--model-dir", str(workspace["model_dir"]), "--warmup", "3"]
    )
    assert android_with_warmup.exit_code == 2
    assert "--warmup only applies to runs on this machine" in android_with_warmup.output
    without_tools = runner.invoke(bench, ["--android", "--model-dir", str(workspace["model_dir"])])
    assert without_tools.exit_code == 2
    assert "--android needs --benchncnn and --benchmark-model" in without_tools.output
