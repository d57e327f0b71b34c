"""Emulated aarch64 checks: CPU specs, cpuinfo, metrics, setup and reports.

These tests need no emulator; `test_verify_arm_emulated.py` runs real
artifacts under QEMU.
"""

import numpy as np
import pytest

from converters.arm import runner
from converters.arm.cpus import CpuModel, folder_name, parse_cpu_list
from converters.arm.metrics import (
    decision_changes,
    embedding_agreement,
    model_threshold,
    pair_distances,
)
from converters.arm.report import render_markdown
from converters.arm.sysroot import (
    DEBIAN_KEYRING,
    SetupError,
    Sysroot,
    default_cache_dir,
    find_qemu,
)
from converters.arm.cells import missing_features
from converters.arm.verify import list_failures, select_artifacts, select_settings

# MIDR and HWCAP of QEMU 7.2's cortex-a53 and cortex-a76 models.
CORTEX_A53 = CpuModel("cortex-a53", hwcap=0x8FB, hwcap2=0, midr=0x410FD034)
CORTEX_A76 = CpuModel("cortex-a76", hwcap=0x119FFB, hwcap2=0, midr=0x414FD0B1)


def test_parse_cpu_list_splits_models():
    assert parse_cpu_list("cortex-a53,cortex-a76,max") == ["cortex-a53", "cortex-a76", "max"]


def test_parse_cpu_list_keeps_properties():
    assert parse_cpu_list("cortex-a53,max,sme=off,sve=off") == ["cortex-a53", "max,sme=off,sve=off"]


def test_parse_cpu_list_drops_duplicates_and_blanks():
    assert parse_cpu_list(" max, ,max ") == ["max"]


@pytest.mark.parametrize("text", ["", " , ", "sme=off,max"])
def test_parse_cpu_list_rejects(text):
    with pytest.raises(ValueError, match="--cpu"):
        parse_cpu_list(text)


def test_folder_name_is_path_safe():
    assert folder_name("max,sme=off") == "max_sme-off"


def test_cpu_features_from_hwcap():
    assert CORTEX_A53.features == ["fp", "asimd", "aes", "pmull", "sha1", "sha2", "crc32", "cpuid"]
    assert CORTEX_A76.has("asimdhp")
    assert CORTEX_A76.has("asimddp")
    assert not CORTEX_A53.has("atomics")


def test_cpu_features_from_hwcap2():
    cpu = CpuModel("test", hwcap=0, hwcap2=(1 << 13) | (1 << 23), midr=0)
    assert cpu.features == ["i8mm", "sme"]


def test_cpuinfo_matches_kernel_format():
    text = CORTEX_A76.cpuinfo(2)
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 2
    assert blocks[1].startswith("processor\t: 1\n")
    assert "CPU implementer\t: 0x41\n" in text
    assert "CPU variant\t: 0x4\n" in text
    assert "CPU part\t: 0xd0b\n" in text
    assert "CPU revision\t: 1\n" in text
    assert "Features\t: fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp" in text


def test_cpu_to_dict_flags():
    data = CORTEX_A53.to_dict()
    assert data["midr"] == "0x410fd034"
    assert data["part"] == "0xd03"
    assert data["fp16_arithmetic"] is False
    assert data["lse_atomics"] is False


def test_embedding_agreement_values():
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])
    candidate = np.array([[1.0, 0.0], [0.0, -2.0]])
    agreement = embedding_agreement(reference, candidate)
    assert agreement["count"] == 2
    assert agreement["min_cosine"] == pytest.approx(-1.0)
    assert agreement["median_cosine"] == pytest.approx(0.0)
    assert agreement["max_abs_diff"] == pytest.approx(4.0)


def test_embedding_agreement_nan_counts_as_opposite():
    agreement = embedding_agreement(np.ones((2, 3)), np.array([[1.0, 1.0, 1.0], [np.nan, 1.0, 1.0]]))
    assert agreement["min_cosine"] == -1.0
    assert agreement["max_abs_diff"] == np.inf


def test_pair_distances_normalizes():
    embeddings = np.array([[3.0, 0.0], [0.0, 5.0], [2.0, 0.0]])
    distances = pair_distances(embeddings, [[0, 1], [0, 2]])
    # Orthogonal unit vectors are sqrt(2) apart; parallel ones coincide.
    assert distances == pytest.approx([2.0, 0.0])


def test_decision_changes_counts_by_label():
    reference = np.array([0.5, 1.5, 1.19, 1.21, 0.9])
    candidate = np.array([0.5, 1.5, 1.21, 1.19, 1.3])
    issame = np.array([True, False, True, False, True])
    changes = decision_changes(reference, candidate, issame, threshold=1.2)
    assert changes["pairs"] == 5
    assert changes["changed"] == 3
    assert changes["changed_same"] == 2
    assert changes["changed_different"] == 1
    assert changes["keras_accuracy"] == pytest.approx(1.0)
    assert changes["accuracy"] == pytest.approx(0.4)
    assert changes["max_distance_change"] == pytest.approx(0.4)


def test_decision_changes_nan_reads_as_different():
    changes = decision_changes(np.array([0.1]), np.array([np.nan]), np.array([True]), 1.0)
    assert changes["changed"] == 1
    assert changes["max_distance_change"] == np.inf


def test_model_threshold_separates_clean_pairs():
    # Same pairs at distance 0.5, different pairs at 1.5: every fold picks a
    # threshold between them, and the smallest such grid value is 0.51.
    distances = np.tile([0.5, 1.5], 10)
    issame = np.tile([True, False], 10)
    threshold, accuracy = model_threshold(distances, issame)
    assert threshold == pytest.approx(0.51)
    assert accuracy == pytest.approx(1.0)


def test_fp32_settings_are_known_settings():
    for runtime, setting in runner.FP32_SETTINGS | set(runner.SETTING_REQUIREMENTS):
        assert setting in runner.SETTINGS[runtime]


def test_select_settings_keeps_order():
    assert select_settings("litert", None) == ["default", "builtin", "fp32", "fp16"]
    assert select_settings("litert", ("fp16", "default")) == ["default", "fp16"]
    assert select_settings("ncnn", None) == ["default", "fp16-storage", "fp32"]
    assert select_settings("ncnn", ("builtin",)) == []


def test_missing_features_for_compiled_model():
    assert missing_features(CORTEX_A53, "litert", "fp16") == ["atomics", "asimdhp"]
    assert missing_features(CORTEX_A76, "litert", "fp16") == []
    assert missing_features(CORTEX_A53, "ncnn", "default") == []


def _conversion(tmp_path):
    for name in ("m_fp32.tflite", "m.ncnn.param", "m.ncnn.bin", "m.onnx"):
        (tmp_path / name).write_bytes(b"x")
    return {
        "artifacts": [
            {"name": "m_fp32.tflite", "runtime": "litert", "precision": "fp32",
             "files": ["m_fp32.tflite"], "status": "passed"},
            {"name": "m_int8.tflite", "runtime": "litert", "precision": "int8",
             "files": ["m_int8.tflite.failed"], "status": "failed"},
            {"name": "m.onnx", "runtime": "onnxruntime", "precision": "fp32",
             "files": ["m.onnx"], "status": "passed"},
            {"name": "m.ncnn", "runtime": "ncnn", "precision": "fp32",
             "files": ["m.ncnn.param", "m.ncnn.bin"], "status": "passed"},
        ]
    }


def test_select_artifacts_takes_passed_tflite_and_ncnn(tmp_path):
    entries, notes = select_artifacts(_conversion(tmp_path), tmp_path)
    assert [entry["name"] for entry in entries] == ["m_fp32.tflite", "m.ncnn"]
    assert entries[1]["paths"] == [str(tmp_path / "m.ncnn.param"), str(tmp_path / "m.ncnn.bin")]
    assert len(notes) == 1
    assert "m_int8.tflite" in notes[0]


def test_select_artifacts_rejects_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="not in"):
        select_artifacts(_conversion(tmp_path), tmp_path, names=("m_fp16.tflite",))


def test_select_artifacts_rejects_onnx_by_name(tmp_path):
    with pytest.raises(ValueError, match="onnxruntime"):
        select_artifacts(_conversion(tmp_path), tmp_path, names=("m.onnx",))


def test_select_artifacts_reports_missing_file(tmp_path):
    report = _conversion(tmp_path)
    (tmp_path / "m.ncnn.bin").unlink()
    with pytest.raises(ValueError, match="m.ncnn.bin"):
        select_artifacts(report, tmp_path)


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MFN_TF_ARM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "mfn-tf" / "arm"
    monkeypatch.setenv("MFN_TF_ARM_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"


def test_find_qemu_rejects_missing_path(tmp_path):
    with pytest.raises(SetupError, match="qemu-user-static"):
        find_qemu(tmp_path / "qemu-aarch64-static")


def test_empty_cache_is_not_ready(tmp_path):
    assert not Sysroot(tmp_path).is_ready()


@pytest.mark.skipif(not DEBIAN_KEYRING.is_file(), reason=f"{DEBIAN_KEYRING} not installed")
def test_apt_config_is_private(tmp_path):
    sysroot = Sysroot(tmp_path)
    env = sysroot._apt_config()
    config = (tmp_path / "apt" / "apt.conf").read_text()
    assert env["APT_CONFIG"] == str(tmp_path / "apt" / "apt.conf")
    assert 'APT::Architecture "arm64";' in config
    assert f'Dir::State::status "{tmp_path}/apt/status";' in config
    assert f'Dir::Etc::SourceParts "{tmp_path}/apt/sources.list.d";' in config
    sources = (tmp_path / "apt" / "sources.list").read_text()
    assert sources.count("[arch=arm64 ") == 3
    assert " bookworm-security main" in sources


def _report(results):
    return {
        "created": "2026-01-01T00:00:00+00:00",
        "model_dir": "conv",
        "keras_model": "conv/embedding_folded.keras",
        "faces": {"dir": "faces", "count": 4, "shift_x": 0},
        "pairs": None,
        "face_count": 4,
        "emulation": {"qemu_version": "qemu-aarch64 version 7.2", "debian_suite": "bookworm",
                      "python": "3.11", "wheels": {"ncnn": "1"}, "threads": 1},
        "cpus": [CORTEX_A53.to_dict()],
        "settings": runner.SETTINGS,
        "results": results,
        "notes": [],
    }


def _entry(setting, judged, **figures):
    entry = {"cpu": "cortex-a53", "artifact": "m.ncnn", "runtime": "ncnn", "precision": "fp32",
             "setting": setting, "judged": judged, "bar": 0.99999 if judged else None,
             "status": "ok", "count": 4, "min_cosine": 0.999, "median_cosine": 0.9995,
             "max_abs_diff": 0.01, "meets_bar": (False if judged else None)}
    entry.update(figures)
    return entry


def test_list_failures_names_bar_and_errors():
    results = [
        _entry("fp32", True),
        _entry("default", False),
        {**_entry("fp32", True), "artifact": "m2.ncnn", "status": "failed",
         "error": "the emulated runner stopped (killed by SIGILL)"},
    ]
    failures = list_failures(_report(results))
    assert len(failures) == 2
    assert "below the fp32 bar of 0.99999" in failures[0]
    assert "SIGILL" in failures[1]


def test_render_markdown_statuses():
    results = [
        _entry("fp32", True, min_cosine=1.0, meets_bar=True),
        _entry("default", False),
        {**_entry("fp16", False), "runtime": "litert", "status": "skipped",
         "reason": "cortex-a53 lacks CPU feature(s) atomics"},
    ]
    text = render_markdown(_report(results))
    assert "## cortex-a53" in text
    assert "| `m.ncnn` | fp32 | 1.000000 |" in text
    assert "| pass |" in text
    assert "| measured |" in text
    assert "lacks CPU feature(s) atomics" in text
