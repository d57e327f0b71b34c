"""One conversion run: export every artifact, check it, publish what passes.

Each artifact is written into a staging folder inside the output folder,
run with its real runtime on real faces and compared with the Keras model.
Only an artifact at or above its parity bar moves into the output folder
under its final name. One below the bar, or whose export failed, moves
there with a `.failed` suffix, and an earlier finished file of that name is
removed. So nothing in the folder looks finished unless it passed. The
reports list every artifact either way, and `convert_model` then raises
`ConversionError` naming each failure.
"""

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from converters.equalize import equalize_activations
from converters.faces import find_face_images, load_faces, spread_sample
from converters.fold_batchnorm import fold_batchnorm
from converters.ncnn_export import export_ncnn, export_ncnn_unfolded
from converters.onnx_export import export_onnx
from converters.options import (
    ARTIFACT_STEM,
    FAILED_SUFFIX,
    ConvertOptions,
    precisions_for,
    validate_options,
)
from converters.parity import cosine_similarities, describe_failure, measure_parity
from converters.report import REPORT_JSON_FILE, build_model_io, build_report, write_reports
from converters.runtimes import KerasRunner, open_runner
from converters.slim import build_embedding_model, count_prelu_layers, describe_input_output
from converters.tflite_export import export_tflite
from mfn_tf.model.loading import get_backbone

logger = logging.getLogger(__name__)

class ConversionError(RuntimeError):
    """One or more artifacts failed to export or missed their parity bar."""

    def __init__(self, failures):
        self.failures = failures
        super().__init__(
            f"{len(failures)} artifact(s) failed:\n" + "\n".join(f"- {line}" for line in failures)
        )


@dataclass
class Artifact:
    """One planned output file (or file pair) and what is known about it."""

    name: str
    format: str
    runtime: str
    precision: str
    files: list
    folded: bool = True
    quantization: str = None
    status: str = "planned"
    size_bytes: int = None
    layer_counts: dict = None
    parity: dict = None
    export_seconds: float = None
    note: str = None
    error: str = None

    def to_dict(self):
        return {key: value for key, value in asdict(self).items() if value is not None}


def plan_artifacts(options):
    """Return the `Artifact`s that `options` requests, in export order."""
    stem = ARTIFACT_STEM if options.fold else f"{ARTIFACT_STEM}_unfolded"
    artifacts = []
    if "tflite" in options.targets:
        for precision in precisions_for("tflite", options):
            artifacts.append(
                Artifact(
                    name=f"{stem}_{precision}.tflite",
                    format="tflite",
                    runtime="litert",
                    precision=precision,
                    files=[f"{stem}_{precision}.tflite"],
                    quantization="post-training" if precision == "int8" else None,
                )
            )
        if options.qat:
            artifacts.append(
                Artifact(
                    name=f"{stem}_qat_int8.tflite",
                    format="tflite",
                    runtime="litert",
                    precision="int8",
                    files=[f"{stem}_qat_int8.tflite"],
                    quantization="quantization-aware training",
                )
            )
    if "onnx" in options.targets:
        artifacts.append(
            Artifact(
                name=f"{stem}.onnx",
                format="onnx",
                runtime="onnxruntime",
                precision="fp32",
                files=[f"{stem}.onnx"],
            )
        )
    if "ncnn" in options.targets:
        for precision in precisions_for("ncnn", options):
            name = stem if precision == "fp32" else f"{stem}_{precision}"
            artifacts.append(
                Artifact(
                    name=f"{name}.ncnn",
                    format="ncnn",
                    runtime="ncnn",
                    precision=precision,
                    files=[f"{name}.ncnn.param", f"{name}.ncnn.bin"],
                )
            )
    for artifact in artifacts:
        artifact.folded = options.fold
    return artifacts


@dataclass
class FaceSets:
    """The faces of one run: float32 `(N, S, S, 3)` RGB arrays in 0-255."""

    parity: np.ndarray
    parity_dir: Path
    calibration: np.ndarray = None
    qat: np.ndarray = None


def _sample_face_sets(options, input_size):
    """Load the parity faces and, where needed, calibration and QAT faces.

    When parity and calibration share a folder, the parity faces are
    chosen first and the others from the remaining images, so parity is
    measured on faces that calibration and QAT never saw.
    """
    parity_dir = Path(options.parity_dir or options.calibration_dir)
    parity_paths = spread_sample(find_face_images(parity_dir), options.parity_count)
    faces = FaceSets(parity=load_faces(parity_paths, input_size), parity_dir=parity_dir)
    if options.calibration_dir is None:
        return faces

    excluded = set(parity_paths)
    pool = [path for path in find_face_images(options.calibration_dir) if path not in excluded]
    if not pool:
        raise ValueError(
            f"{options.calibration_dir} has no faces left for calibration after the "
            f"{len(parity_paths)} parity faces; pass a separate --parity-dir or a "
            "smaller --parity-count"
        )
    faces.calibration = load_faces(spread_sample(pool, options.calibration_count), input_size)
    if options.qat:
        faces.qat = load_faces(spread_sample(pool, options.qat_face_count), input_size)
    return faces


def _size(folder, files):
    return sum((Path(folder) / name).stat().st_size for name in files)


def _publish(artifact, staging, out_dir):
    """Move an artifact's staged files into `out_dir` (see module docstring)."""
    for name in artifact.files:
        staged = staging / name
        final = out_dir / name
        failed = out_dir / f"{name}{FAILED_SUFFIX}"
        if artifact.status == "passed":
            failed.unlink(missing_ok=True)
            if staged.exists():
                shutil.move(str(staged), str(final))
        else:
            final.unlink(missing_ok=True)
            if staged.exists():
                shutil.move(str(staged), str(failed))
    if artifact.status != "passed":
        artifact.files = [f"{name}{FAILED_SUFFIX}" for name in artifact.files]


class _Converter:
    """The state shared by the exports of one run."""

    def __init__(self, model, out_dir, staging, options):
        backbone = get_backbone(model)
        self.backbone = backbone
        self.out_dir = out_dir
        self.staging = staging
        self.options = options
        self.input_size, self.embedding_size = describe_input_output(backbone)
        self.model, self.folded_pairs = build_embedding_model(backbone, fold=options.fold)
        face_sets = _sample_face_sets(options, self.input_size)
        self.faces = face_sets.parity
        self.parity_dir = face_sets.parity_dir
        self.calibration = face_sets.calibration
        self.qat_faces = face_sets.qat
        self.reference = KerasRunner(backbone).embed(self.faces)
        self._int8_model = None
        self._onnx_path = None
        self.qat_losses = None
        self.cosines = {}
        self.failures = []

    def int8_model(self):
        """Return the folded model with equalized activations, built once."""
        if self._int8_model is None:
            model = fold_batchnorm(self.backbone, name=self.model.name)
            self.int8_chains = (
                equalize_activations(model, self.calibration) if self.options.equalize else 0
            )
            self._int8_model = model
        return self._int8_model

    def int8_note(self):
        if not self.options.equalize:
            return "no activation equalization"
        return f"activation equalization on {self.int8_chains} conv-PReLU-conv chains"

    def onnx_path(self):
        """Return the path of the folded ONNX that ncnn converts, exported once."""
        if self._onnx_path is None:
            path = self.staging / f"{ARTIFACT_STEM}.intermediate.onnx"
            export_onnx(self.model, path, input_size=self.input_size)
            self._onnx_path = path
        return self._onnx_path

    def export(self, artifact):
        """Write the artifact's files into staging; return its layer counts."""
        paths = [self.staging / name for name in artifact.files]
        if artifact.format == "keras":
            import keras

            self.model.save(paths[0])
            return dict(_count_keras_layers(self.model, keras))
        if artifact.format == "tflite":
            if artifact.quantization == "quantization-aware training":
                return self._export_qat(paths[0])
            source = self.int8_model() if artifact.precision == "int8" else self.model
            if artifact.precision == "int8":
                artifact.note = self.int8_note()
            return export_tflite(
                source,
                paths[0],
                precision=artifact.precision,
                representative_images=self.calibration,
                int8_input=self.options.int8_input,
                input_size=self.input_size,
            )
        if artifact.format == "onnx":
            counts = export_onnx(
                self.model, paths[0], input_size=self.input_size, keep_batchnorm=not self.options.fold
            )
            if self.options.fold and self._onnx_path is None:
                # The artifact moves out of staging when published; ncnn
                # converts from a copy.
                self._onnx_path = self.staging / f"{ARTIFACT_STEM}.intermediate.onnx"
                shutil.copyfile(paths[0], self._onnx_path)
            return counts
        if artifact.format == "ncnn":
            fp16 = artifact.precision == "fp16"
            if not self.options.fold:
                return export_ncnn_unfolded(
                    self.model, paths[0], paths[1], fp16=fp16, input_size=self.input_size
                )
            return export_ncnn(
                self.onnx_path(), paths[0], paths[1], fp16=fp16, input_size=self.input_size
            )
        raise ValueError(f"unknown artifact format {artifact.format!r}")

    def _export_qat(self, path):
        from converters.qat import train_qat_tflite
        from converters.tflite_export import count_tflite_ops

        tflite_model, losses = train_qat_tflite(
            self.int8_model(),
            self.qat_faces,
            calibration_images=self.calibration,
            steps=self.options.qat_steps,
            batch_size=self.options.qat_batch_size,
            learning_rate=self.options.qat_learning_rate,
            input_size=self.input_size,
            progress=self.options.progress,
        )
        path.write_bytes(tflite_model)
        self.qat_losses = losses
        return dict(count_tflite_ops(tflite_model))

    def runner(self, artifact, folder):
        paths = [folder / name for name in artifact.files]
        if artifact.format == "keras":
            import keras

            return KerasRunner(keras.models.load_model(paths[0], compile=False))
        model_io = {"ncnn": {"input_blob": "in0", "output_blob": "out0"}}
        return open_runner(
            artifact.runtime,
            paths,
            precision=artifact.precision,
            num_threads=self.options.num_threads,
            model_io=model_io,
        )

    def process(self, artifact):
        logger.info("exporting %s", artifact.name)
        start = time.perf_counter()
        try:
            artifact.layer_counts = self.export(artifact)
            artifact.export_seconds = round(time.perf_counter() - start, 1)
            artifact.size_bytes = _size(self.staging, artifact.files)
            candidate = self.runner(artifact, self.staging).embed(self.faces)
            parity = measure_parity(self.reference, candidate, artifact.precision)
            self.cosines[artifact.name] = cosine_similarities(self.reference, candidate)
            artifact.parity = parity.to_dict()
            if parity.passed:
                artifact.status = "passed"
            else:
                artifact.status = "failed"
                self.failures.append(describe_failure(artifact.name, parity))
        except Exception as error:  # noqa: BLE001 - one artifact's failure must not stop the others
            logger.exception("%s failed", artifact.name)
            artifact.status = "failed"
            artifact.error = f"{type(error).__name__}: {error}"
            self.failures.append(f"{artifact.name}: export failed: {artifact.error}")
        if artifact.quantization == "quantization-aware training" and self.qat_losses is not None:
            artifact.note = f"{self.int8_note()}; {_describe_losses(self.qat_losses)}"
        _publish(artifact, self.staging, self.out_dir)
        if artifact.parity:
            logger.info(
                "%s: %s (min cosine %.6f, bar %s)",
                artifact.name,
                artifact.status,
                artifact.parity["min_cosine"],
                artifact.parity["bar"],
            )


def _describe_losses(losses):
    if not losses:
        return "no distillation steps"
    return (
        f"{len(losses)} distillation steps, loss (1 - cosine) "
        f"{np.mean(losses[:10]):.5f} over the first 10, "
        f"{np.mean(losses[-10:]):.5f} over the last 10"
    )


def _count_keras_layers(model, keras):
    counts = {}
    for layer in model.layers:
        name = type(layer).__name__
        if isinstance(layer, keras.layers.BatchNormalization):
            name = "BatchNormalization"
        counts[name] = counts.get(name, 0) + 1
    return counts


def convert_model(model, out_dir, options=None, source=None):
    """Convert a Keras backbone or training model; return the report.

    Args:
        model: a Keras MobileFaceNet backbone, or a training model nesting
            one under the name "mobilefacenet".
        out_dir: the output folder, created if needed.
        options: a `ConvertOptions`.
        source: how to name the model in the report (its file or spec).

    Raises:
        ValueError: the options do not fit together or the faces are unusable.
        ConversionError: after writing the reports, when any artifact failed.
    """
    options = options or ConvertOptions()
    validate_options(options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        converter = _Converter(model, out_dir, staging, options)
        keras_name = "embedding_folded.keras" if options.fold else "embedding_unfolded.keras"
        artifacts = [
            Artifact(
                name=keras_name,
                format="keras",
                runtime="keras",
                precision="fp32",
                files=[keras_name],
                folded=options.fold,
            )
        ]
        artifacts += plan_artifacts(options)
        earlier_files = _earlier_artifact_files(out_dir)
        for artifact in artifacts:
            converter.process(artifact)
        _remove_stale_files(out_dir, earlier_files, artifacts)

        report = build_report(
            source=source or getattr(model, "name", "model"),
            folded=options.fold,
            folded_pairs=converter.folded_pairs if options.fold else [],
            parity_faces={"dir": str(converter.parity_dir), "count": len(converter.faces)},
            calibration=(
                {
                    "dir": str(options.calibration_dir),
                    "count": len(converter.calibration),
                    "qat_count": len(converter.qat_faces) if converter.qat_faces is not None else None,
                }
                if converter.calibration is not None
                else None
            ),
            artifacts=[artifact.to_dict() for artifact in artifacts],
            options=_report_options(options, converter),
        )
        model_io = build_model_io(
            converter.input_size,
            converter.embedding_size,
            int8_input=options.int8_input,
            keras_file=keras_name,
        )
        model_io["prelu_layers"] = count_prelu_layers(converter.model)
        write_reports(out_dir, report, model_io, cosines=converter.cosines)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if converter.failures:
        raise ConversionError(converter.failures)
    return report


def _earlier_artifact_files(out_dir):
    """Return the files that an earlier conversion's report.json lists in `out_dir`."""
    path = out_dir / REPORT_JSON_FILE
    if not path.is_file():
        return set()
    try:
        report = json.loads(path.read_text())
        return {name for entry in report["artifacts"] for name in entry["files"]}
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring the unreadable earlier %s: %s", path, error)
        return set()


def _remove_stale_files(out_dir, earlier_files, artifacts):
    """Delete an earlier conversion's artifacts that this run did not write.

    Otherwise a folder converted twice, say ncnn then TFLite, would keep the
    first model's ncnn files beside a report that no longer lists them.
    """
    current = {name for artifact in artifacts for name in artifact.files}
    for name in sorted(earlier_files - current):
        for path in (out_dir / name, out_dir / f"{name}.failed"):
            if path.is_file():
                logger.warning("removing %s, left by an earlier conversion into %s", path.name, out_dir)
                path.unlink()


def _report_options(options, converter):
    return {
        "targets": list(options.targets),
        "precisions": list(options.precisions) if options.precisions else None,
        "int8_input": options.int8_input,
        "activation_equalization": options.equalize,
        "qat": (
            {
                "steps": options.qat_steps,
                "face_count": options.qat_face_count,
                "batch_size": options.qat_batch_size,
                "learning_rate": options.qat_learning_rate,
                "loss": "1 - cosine similarity to the float model's embedding",
            }
            if options.qat
            else None
        ),
        "input_size": converter.input_size,
        "embedding_size": converter.embedding_size,
    }
