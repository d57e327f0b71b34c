"""The artifacts to benchmark, read from a converter output folder.

`python cli.py convert` writes `report.json` and `model_io.json`. The
first lists the artifacts with their runtime, precision, files and parity
status, the folded Keras model among them (schema in docs/conversion.md).
The second has the input size and the ncnn blob names. The benchmark adds
one model of its own:

- the fp32 ncnn model converted again without folding BatchNorm, so that
  the speed-up from folding is measured rather than assumed. It is
  exported once into `OUT/unfolded/`, checked against the folded ncnn
  model on the benchmark face, and reused by later runs.
"""

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import BenchmarkError
from bench.results import FOLDED_NCNN, UNFOLDED_NCNN

logger = logging.getLogger(__name__)

RUNTIME_LABELS = {"keras": "Keras", "litert": "TFLite", "onnxruntime": "ONNX Runtime", "ncnn": "ncnn"}
# The Python module each runtime needs on the machine that runs it.
RUNTIME_MODULES = {
    "keras": "tensorflow",
    "litert": "ai_edge_litert",
    "onnxruntime": "onnxruntime",
    "ncnn": "ncnn",
}
KERAS_REFERENCE = "keras_fp32"
UNFOLDED_DIR = "unfolded"
UNFOLDED_STEM = "mobilefacenet_unfolded"
# Cosine similarity the unfolded ncnn model must reach against the folded
# one: both compute the same function in fp32.
UNFOLDED_MIN_COSINE = 0.99999


@dataclass(frozen=True)
class Artifact:
    """One model file (or file pair) and the runtime that runs it."""

    name: str
    label: str
    runtime: str
    precision: str
    files: tuple

    @property
    def device_files(self):
        """The files a phone benchmark needs: benchncnn reads only the `.param`."""
        if self.runtime == "ncnn":
            return tuple(path for path in self.files if Path(path).suffix == ".param")
        return self.files


def artifact_name(entry):
    """Return the benchmark's name for a `report.json` artifact entry.

    "keras_fp32", "tflite_int8", "tflite_qat_int8", "onnx_fp32",
    "ncnn_fp16"...: the runtime family, "qat" for quantization-aware
    training, the precision, and "_unfolded" for a conversion run with
    `--no-fold`.
    """
    family = {"keras": "keras", "litert": "tflite", "onnxruntime": "onnx", "ncnn": "ncnn"}.get(
        entry["runtime"]
    )
    if family is None:
        raise BenchmarkError(
            f"report.json lists artifact {entry.get('name')!r} with runtime "
            f"{entry['runtime']!r}, which the benchmark cannot run"
        )
    qat = "qat_" if "qat" in str(entry.get("name", "")).lower() else ""
    unfolded = "_unfolded" if entry.get("folded") is False else ""
    return f"{family}_{qat}{entry['precision']}{unfolded}"


def artifact_label(name, runtime, precision):
    """Return the name shown in tables, e.g. "TFLite QAT int8"."""
    if name == KERAS_REFERENCE:
        return "Keras fp32 (reference)"
    qat = " QAT" if "_qat_" in name else ""
    unfolded = " (BN unfolded)" if name.endswith("_unfolded") else ""
    return f"{RUNTIME_LABELS[runtime]}{qat} {precision}{unfolded}"


def read_conversion(model_dir):
    """Return `(report, model_io)` of a converter output folder.

    Raises:
        BenchmarkError: the folder has no readable `report.json`.
    """
    from converters.report import read_report

    model_dir = Path(model_dir)
    try:
        return read_report(model_dir)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as error:
        raise BenchmarkError(
            f"cannot read the conversion report in {model_dir}: {error}. Pass the "
            "--out folder of `python cli.py convert --target all`."
        ) from error


def input_size(model_io):
    """Return the square input size that `model_io.json` states (default 112)."""
    shape = (model_io.get("tflite") or {}).get("shape")
    return int(shape[1]) if shape else 112


def converted_artifacts(model_dir, report):
    """Return `(artifacts, notes)` for the entries of `report.json`.

    Entries whose parity check did not pass are left out, with a note.

    Raises:
        BenchmarkError: a listed file is missing.
    """
    model_dir = Path(model_dir)
    artifacts, notes = [], []
    for entry in report.get("artifacts", []):
        if entry.get("status") != "passed":
            notes.append(
                f"{entry.get('name')} left out: its conversion status is "
                f"{entry.get('status')!r}, not 'passed'."
            )
            continue
        files = tuple(model_dir / name for name in entry["files"])
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise BenchmarkError(
                f"report.json lists {', '.join(missing)} for {entry.get('name')}, but "
                "the file is missing; convert the model again"
            )
        name = artifact_name(entry)
        artifacts.append(
            Artifact(
                name=name,
                label=artifact_label(name, entry["runtime"], entry["precision"]),
                runtime=entry["runtime"],
                precision=entry["precision"],
                files=files,
            )
        )
    return artifacts, notes


def _cosine(a, b):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_unfolded(folded, unfolded, face, model_io):
    """Raise unless the unfolded ncnn model computes what the folded one does."""
    from converters.runtimes import open_runner

    reference = open_runner("ncnn", folded.files, model_io=model_io).embed(face)
    candidate = open_runner("ncnn", unfolded.files, model_io=model_io).embed(face)
    cosine = _cosine(reference, candidate)
    if cosine < UNFOLDED_MIN_COSINE:
        raise BenchmarkError(
            f"the unfolded ncnn model {unfolded.files[0]} disagrees with "
            f"{folded.files[0]}: cosine similarity {cosine:.6f} < {UNFOLDED_MIN_COSINE}. "
            f"Delete {Path(unfolded.files[0]).parent} and run again."
        )
    return cosine


def unfolded_ncnn(report, model_io, out_dir, folded, face, keras_model=None):
    """Return the unfolded fp32 ncnn artifact, exporting it on first use.

    A new export is checked against the folded ncnn model `folded` on
    `face` before it is used. Later runs reuse it while `source.json`
    names the same source model.

    Args:
        report, model_io: the parsed `report.json` and `model_io.json`.
            `report["source_model"]` is the model to export, unless
            `keras_model` overrides it.
        out_dir: the benchmark output folder; the model goes to
            `out_dir/unfolded/`.
    """
    source = str(keras_model or report.get("source_model") or "")
    folder = Path(out_dir) / UNFOLDED_DIR
    param = folder / f"{UNFOLDED_STEM}.ncnn.param"
    weights = folder / f"{UNFOLDED_STEM}.ncnn.bin"
    record = folder / "source.json"
    artifact = Artifact(
        UNFOLDED_NCNN,
        artifact_label(UNFOLDED_NCNN, "ncnn", "fp32"),
        "ncnn",
        "fp32",
        (param, weights),
    )
    if param.is_file() and weights.is_file() and record.is_file():
        recorded = json.loads(record.read_text())
        if recorded.get("source_model") == source:
            logger.info("reusing the unfolded ncnn model in %s", folder)
            return artifact
        logger.info(
            "the unfolded ncnn model in %s came from %s; exporting %s again",
            folder,
            recorded.get("source_model"),
            source,
        )
    if not source:
        raise BenchmarkError(
            "report.json names no source model to export the unfolded ncnn model "
            "from; pass --keras-model"
        )
    missing = [name for name in ("tensorflow", "tf2onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise BenchmarkError(
            f"exporting the unfolded ncnn model needs {' and '.join(missing)}, which "
            "is not installed here. Run the benchmark once where the converter runs "
            f"and copy {folder} along, or pass --no-unfolded."
        )
    from converters.ncnn_export import export_ncnn_unfolded
    from converters.slim import build_embedding_model
    from mfn_tf.model.loading import load_backbone

    logger.info("exporting %s to ncnn without folding BatchNorm, into %s", source, folder)
    folder.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    backbone, _ = build_embedding_model(load_backbone(source), fold=False)
    counts = export_ncnn_unfolded(backbone, param, weights, input_size=backbone.input_shape[1])
    cosine = check_unfolded(folded, artifact, face, model_io)
    record.write_text(
        json.dumps(
            {"source_model": source, "layer_counts": counts, "cosine_to_folded": cosine},
            indent=2,
        )
        + "\n"
    )
    return artifact


def check_runtimes(artifacts):
    """Raise unless the Python module of every artifact's runtime is installed."""
    missing = {
        artifact.name: RUNTIME_MODULES[artifact.runtime]
        for artifact in artifacts
        if importlib.util.find_spec(RUNTIME_MODULES[artifact.runtime]) is None
    }
    if missing:
        needs = ", ".join(f"{name} needs {module}" for name, module in missing.items())
        raise BenchmarkError(
            f"runtime not installed: {needs}. Install it (`pip install -e \".[convert]\"`), "
            "or leave those artifacts out with --artifacts."
        )


def select(artifacts, only, extra_names=()):
    """Keep the artifacts named in `only` (all when None); reject unknown names.

    `extra_names` are names that are valid although not in `artifacts`
    yet (the unfolded ncnn model before its export).
    """
    if not only:
        return artifacts
    names = [artifact.name for artifact in artifacts] + list(extra_names)
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise BenchmarkError(
            f"unknown artifact name(s) {', '.join(unknown)}; this folder has: {', '.join(names)}"
        )
    return [artifact for artifact in artifacts if artifact.name in only]


def _order(artifact):
    order = ("keras", "onnxruntime", "litert", "ncnn")
    return order.index(artifact.runtime), artifact.name


def host_artifacts(model_dir, out_dir, face, keras_model=None, only=None, unfolded=True):
    """Return `(artifacts, model_io, notes)` for the host benchmark."""
    report, model_io = read_conversion(model_dir)
    available, notes = converted_artifacts(model_dir, report)
    with_unfolded = unfolded and (not only or UNFOLDED_NCNN in only)
    artifacts = select(available, only, extra_names=[UNFOLDED_NCNN] if unfolded else [])
    check_runtimes(artifacts)
    if with_unfolded:
        folded = next((a for a in available if a.name == FOLDED_NCNN), None)
        if folded is None:
            raise BenchmarkError(
                f"{model_dir} has no passing fp32 ncnn model to compare the unfolded "
                "one with; convert with --target all, or pass --no-unfolded"
            )
        check_runtimes([folded])
        artifacts.append(unfolded_ncnn(report, model_io, out_dir, folded, face, keras_model))
    return sorted(artifacts, key=_order), model_io, notes


def android_artifacts(model_dir, out_dir, face, keras_model=None, only=None):
    """Return `(artifacts, input size)` for the phone: TFLite and fp32 ncnn.

    The ncnn fp16 model is left out because benchncnn loads only the
    `.param`, which is the same for both precisions.
    """
    report, model_io = read_conversion(model_dir)
    available, _ = converted_artifacts(model_dir, report)
    available = [
        a for a in available if a.runtime == "litert" or (a.runtime == "ncnn" and a.precision == "fp32")
    ]
    artifacts = select(available, only, extra_names=[UNFOLDED_NCNN])
    folded = next((a for a in available if a.name == FOLDED_NCNN), None)
    if only and UNFOLDED_NCNN in only and folded is None:
        raise BenchmarkError(
            f"{UNFOLDED_NCNN} needs the folded fp32 ncnn model, which {model_dir} lacks"
        )
    if folded is not None and (not only or UNFOLDED_NCNN in only):
        artifacts.append(unfolded_ncnn(report, model_io, out_dir, folded, face, keras_model))
    if not artifacts:
        raise BenchmarkError(f"{model_dir} has no TFLite or ncnn artifact to run on the phone")
    return sorted(artifacts, key=_order), input_size(model_io)
