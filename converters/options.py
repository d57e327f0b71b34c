"""Options of a conversion run, checked before anything heavy is imported.

The command line builds a `ConvertOptions` and validates it here, so a
wrong combination fails in a second, not after TensorFlow has loaded.
"""

from dataclasses import dataclass
from pathlib import Path

from converters.qat import QAT_BATCH_SIZE, QAT_FACE_COUNT, QAT_LEARNING_RATE, QAT_STEPS

TARGETS = ("tflite", "onnx", "ncnn")
PRECISIONS_BY_TARGET = {
    "tflite": ("fp32", "fp16", "int8"),
    "onnx": ("fp32",),
    "ncnn": ("fp32", "fp16"),
}
ARTIFACT_STEM = "mobilefacenet"
FAILED_SUFFIX = ".failed"
# Enough faces for a stable minimum cosine, few enough to run each
# artifact on them in seconds.
PARITY_COUNT = 64
# TFLite's calibrator takes each tensor's min/max over all calibration
# faces, so more faces widen the ranges with rare extremes and coarsen
# every other face's resolution. With insightface's MobileFaceNet and 64
# unseen LFW parity faces, the int8 minimum cosine similarity was 0.981,
# 0.985, 0.991, 0.987 and 0.976 with 30, 50, 100, 300 and 1000 faces.
CALIBRATION_COUNT = 100


@dataclass
class ConvertOptions:
    """Targets, precisions and face folders of a run (see `python cli.py convert --help`)."""

    targets: tuple = TARGETS
    # False when the targets are the default "all": then a precision that
    # some target lacks only skips that target.
    targets_explicit: bool = True
    # None: every precision a target supports; int8 only with calibration faces.
    precisions: tuple = None
    calibration_dir: Path = None
    calibration_count: int = CALIBRATION_COUNT
    parity_dir: Path = None
    parity_count: int = PARITY_COUNT
    int8_input: str = "float32"
    equalize: bool = True
    qat: bool = False
    qat_steps: int = QAT_STEPS
    qat_face_count: int = QAT_FACE_COUNT
    qat_batch_size: int = QAT_BATCH_SIZE
    qat_learning_rate: float = QAT_LEARNING_RATE
    fold: bool = True
    # One thread per runtime in parity checks: ncnn's OpenMP threads spin
    # and slowed to 48 ms per face (from 3 ms) on a loaded 2-core machine.
    num_threads: int = 1
    progress: bool = True


def precisions_for(target, options):
    """Return the precisions to export for `target` under `options`."""
    supported = PRECISIONS_BY_TARGET[target]
    if options.precisions is None:
        if target == "tflite" and options.calibration_dir is None:
            return ("fp32", "fp16")
        return supported
    return tuple(precision for precision in options.precisions if precision in supported)


def validate_options(options):
    """Raise ValueError for a combination of options that cannot work."""
    unknown = [target for target in options.targets if target not in TARGETS]
    if unknown:
        raise ValueError(f"unknown target {unknown[0]!r}; expected one of {TARGETS}")
    for precision in options.precisions or ():
        if not any(precision in PRECISIONS_BY_TARGET[target] for target in options.targets):
            raise ValueError(
                f"precision {precision} is not available for target(s) "
                f"{', '.join(options.targets)}: TFLite has fp32/fp16/int8, ONNX fp32, "
                "ncnn fp32/fp16 (ncnn int8 needs ncnn's own calibration tools, which "
                "PyPI does not ship)"
            )
    for target in options.targets:
        if options.targets_explicit and not precisions_for(target, options):
            raise ValueError(
                f"target {target} has no artifact at precision(s) "
                f"{', '.join(options.precisions)}: it exports "
                f"{'/'.join(PRECISIONS_BY_TARGET[target])}"
            )
    wants_int8 = "tflite" in options.targets and "int8" in precisions_for("tflite", options)
    if (wants_int8 or options.qat) and options.calibration_dir is None:
        raise ValueError(
            "int8 TFLite and QAT need real aligned faces: pass --calibration-dir "
            "with a folder of aligned 112x112 face crops"
        )
    if options.qat and "tflite" not in options.targets:
        raise ValueError("--qat produces a TFLite model; add --target tflite")
    if not options.fold and "tflite" in options.targets:
        raise ValueError(
            "--no-fold applies to the onnx and ncnn targets only: the TFLite "
            "converter folds BatchNorm into convolutions itself"
        )
    if options.parity_dir is None and options.calibration_dir is None:
        raise ValueError(
            "parity checks need real aligned faces: pass --parity-dir (or "
            "--calibration-dir, which parity also uses) with a folder of aligned "
            "112x112 face crops"
        )
    if options.int8_input not in ("float32", "uint8"):
        raise ValueError(f"--int8-input must be float32 or uint8, not {options.int8_input!r}")
