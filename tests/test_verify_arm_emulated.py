"""A small converted model's TFLite and ncnn files on emulated aarch64.

Needs QEMU and the cached aarch64 sysroot (`make arm-env`); skips with the
reason where they are missing.
"""

import json

import numpy as np
import pytest

from converters.arm.emulation import Emulator, UnknownCpuError
from converters.arm.sysroot import SetupError, Sysroot, find_qemu
from converters.arm.verify import VerifyOptions, list_failures, verify_arm

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

CPUS = ("cortex-a53", "cortex-a76")


@pytest.fixture(scope="module")
def emulation():
    try:
        find_qemu()
    except SetupError as error:
        pytest.skip(str(error))
    sysroot = Sysroot()
    if not sysroot.is_ready():
        pytest.skip(f"no aarch64 sysroot in {sysroot.cache_dir}; run `make arm-env`")
    return sysroot


@pytest.fixture(scope="module")
def tiny_conversion(tmp_path_factory, lfw_images):
    import keras

    from converters.convert import convert_model
    from converters.options import ConvertOptions
    from mfn_tf.model.mobilefacenet import MobileFaceNet

    keras.utils.set_random_seed(0)
    model = MobileFaceNet(width_multiplier=0.25)
    out = tmp_path_factory.mktemp("tiny_conversion")
    options = ConvertOptions(
        targets=("tflite", "ncnn"),
        precisions=("fp32",),
        parity_dir=lfw_images,
        parity_count=4,
        progress=False,
    )
    convert_model(model, out, options, source="tiny MobileFaceNet")
    return out


@pytest.fixture(scope="module")
def small_pairs(tmp_path_factory, lfw_pairs):
    """The first same and the first different pair of each LFW fold."""
    lines = lfw_pairs.read_text().splitlines()[1:]
    chosen = []
    for fold in range(10):
        start = fold * 600
        chosen += [lines[start], lines[start + 300]]
    path = tmp_path_factory.mktemp("pairs") / "pairs.txt"
    path.write_text("10\t1\n" + "\n".join(chosen) + "\n")
    return path


@pytest.fixture(scope="module")
def arm_report(emulation, tiny_conversion, small_pairs, lfw_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("arm_report")
    options = VerifyOptions(
        cpus=CPUS,
        images_dir=lfw_images,
        pairs=small_pairs,
        pairs_count=4,
        pair_selection="nearest",
        jobs=2,
        cache_dir=emulation.cache_dir,
        progress=False,
    )
    report = verify_arm(tiny_conversion, options, out_dir=out)
    return report, out


@pytest.mark.parametrize("spec", ["cortex-x99", "cortex-a53,sve=on"])
def test_probe_rejects_unknown_cpu(emulation, spec):
    with pytest.raises(UnknownCpuError, match="-cpu help"):
        Emulator(emulation).probe(spec)


def test_probe_reads_cpu_identity(emulation):
    cpu = Emulator(emulation).probe("cortex-a76")
    assert cpu.midr == 0x414FD0B1
    assert cpu.has("asimdhp")
    assert cpu.has("asimddp")


def _entry(report, cpu, runtime, setting):
    matches = [
        entry
        for entry in report["results"]
        if entry["cpu"] == cpu and entry["runtime"] == runtime and entry["setting"] == setting
    ]
    assert len(matches) == 1, f"expected one {cpu}/{runtime}/{setting} entry"
    return matches[0]


def test_report_files_written(arm_report):
    report, out = arm_report
    assert json.loads((out / "arm_report.json").read_text())["results"] == report["results"]
    assert "## cortex-a76" in (out / "arm_report.md").read_text()
    assert (out / "arm_cosine.png").stat().st_size > 0


def test_every_cpu_artifact_and_setting_reported(arm_report):
    report, _ = arm_report
    # 2 CPUs x (TFLite: 4 settings + ncnn: 3 settings).
    assert len(report["results"]) == 14
    assert [cpu["spec"] for cpu in report["cpus"]] == list(CPUS)


def test_fp32_settings_reach_parity_bar(arm_report):
    report, _ = arm_report
    assert list_failures(report) == []
    judged = [entry for entry in report["results"] if entry["judged"] and entry["status"] == "ok"]
    # a53: TFLite default and builtin, ncnn fp32; a76: those and TFLite fp32.
    assert len(judged) == 7
    for entry in judged:
        assert entry["min_cosine"] >= entry["bar"], entry


def test_compiled_model_skipped_without_lse(arm_report):
    report, _ = arm_report
    for setting in ("fp32", "fp16"):
        entry = _entry(report, "cortex-a53", "litert", setting)
        assert entry["status"] == "skipped"
        assert "atomics" in entry["reason"]


def test_ncnn_fp16_arithmetic_only_with_asimdhp(arm_report):
    report, _ = arm_report
    a53 = _entry(report, "cortex-a53", "ncnn", "default")
    a76 = _entry(report, "cortex-a76", "ncnn", "default")
    a76_fp32 = _entry(report, "cortex-a76", "ncnn", "fp32")
    assert a53["runtime_info"]["cpu_asimdhp"] is False
    assert a76["runtime_info"]["cpu_asimdhp"] is True
    assert a76["runtime_info"]["use_fp16_arithmetic"] is True
    assert a76_fp32["runtime_info"]["use_fp16_arithmetic"] is False
    # The random tiny model's embeddings reach magnitudes in the thousands,
    # so fp16 arithmetic moves them far more than fp32 rounding does.
    assert a76["max_abs_diff"] > 10 * a76_fp32["max_abs_diff"]
    assert a76["min_cosine"] < a53["min_cosine"]


def test_litert_fp16_measured_on_a76(arm_report):
    report, _ = arm_report
    entry = _entry(report, "cortex-a76", "litert", "fp16")
    assert entry["status"] == "ok"
    assert entry["runtime_info"]["xnnpack_flags"] & 0x4
    assert entry["bar"] is None
    assert 0.99 < entry["min_cosine"] < 0.999999


def test_pairs_and_decisions(arm_report):
    report, _ = arm_report
    pairs = report["pairs"]
    assert pairs["count"] == 4
    assert pairs["pairs_in_file"] == 20
    assert 0 < pairs["threshold"] < 4
    assert pairs["excluded_pairs_min_margin"] >= 0
    for entry in report["results"]:
        if entry["status"] != "ok":
            continue
        assert entry["decisions"]["pairs"] == 4
        assert np.isfinite(entry["decisions"]["max_distance_change"])
        if entry["judged"]:
            assert entry["decisions"]["changed"] == 0, entry
