"""`python cli.py convert`: export TFLite, ONNX and ncnn models, checked."""

import logging
from pathlib import Path

import click

from converters.options import (
    CALIBRATION_COUNT,
    PARITY_COUNT,
    TARGETS,
    ConvertOptions,
    validate_options,
)
from converters.qat import QAT_BATCH_SIZE, QAT_FACE_COUNT, QAT_LEARNING_RATE, QAT_STEPS


def _targets(values):
    if not values or "all" in values:
        return TARGETS
    return tuple(dict.fromkeys(values))


@click.command()
@click.option(
    "--model",
    "model_spec",
    required=True,
    help="A .keras backbone or training model written by this project, or an "
    "insightface MXNet checkpoint as PREFIX,EPOCH.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder, created if needed. Files of an earlier conversion into it are "
    "replaced, or deleted where this run does not write them.",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    type=click.Choice(TARGETS + ("all",)),
    help="Format to export; repeat for several. Default: all.",
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Precision to export; repeat for several. Default: every precision "
    "each target supports (TFLite fp32/fp16, plus int8 with --calibration-dir; "
    "ONNX fp32; ncnn fp32/fp16).",
)
@click.option(
    "--calibration-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of aligned 112x112 face crops (searched recursively) that "
    "calibrates int8 and trains QAT; parity uses it too unless --parity-dir is given.",
)
@click.option(
    "--calibration-count",
    type=click.IntRange(min=1),
    default=CALIBRATION_COUNT,
    show_default=True,
    help="Number of int8 calibration faces, spread evenly over the sorted folder.",
)
@click.option(
    "--parity-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of aligned 112x112 faces on which each artifact is compared "
    "with the Keras model. Default: --calibration-dir; calibration and QAT "
    "faces are then drawn from the images not used for parity.",
)
@click.option(
    "--parity-count",
    type=click.IntRange(min=1),
    default=PARITY_COUNT,
    show_default=True,
    help="Number of parity faces.",
)
@click.option(
    "--int8-input",
    type=click.Choice(["float32", "uint8"]),
    default="float32",
    show_default=True,
    help="Input type of the int8 TFLite models: float32 pixels like the other "
    "artifacts, or uint8 camera pixels (scale 1, zero point 0).",
)
@click.option(
    "--qat/--no-qat",
    default=False,
    show_default=True,
    help="Also build an int8 TFLite model by quantization-aware training "
    "(distillation on --qat-face-count faces from --calibration-dir; minutes on a CPU).",
)
@click.option("--qat-steps", type=click.IntRange(min=0), default=QAT_STEPS, show_default=True,
              help="QAT optimizer steps.")
@click.option("--qat-face-count", type=click.IntRange(min=1), default=QAT_FACE_COUNT,
              show_default=True,
              help="Faces from --calibration-dir that QAT distils on (beside the parity faces).")
@click.option("--qat-batch-size", type=click.IntRange(min=1), default=QAT_BATCH_SIZE,
              show_default=True, help="Faces per QAT step.")
@click.option("--qat-learning-rate", type=click.FloatRange(min=0, min_open=True),
              default=QAT_LEARNING_RATE, show_default=True, help="Adam learning rate for QAT.")
@click.option(
    "--no-equalize",
    "no_equalize",
    is_flag=True,
    hidden=True,
    help="Quantize without per-channel activation equalization (for comparisons).",
)
@click.option(
    "--no-fold",
    "no_fold",
    is_flag=True,
    hidden=True,
    help="Keep every BatchNorm as its own layer (onnx and ncnn targets only); a "
    "reference for measuring what folding saves.",
)
@click.option("--threads", "num_threads", type=click.IntRange(min=1), default=1,
              show_default=True, help="Threads of each runtime in the parity checks.")
def convert(
    model_spec,
    out_dir,
    targets,
    precisions,
    calibration_dir,
    calibration_count,
    parity_dir,
    parity_count,
    int8_input,
    qat,
    qat_steps,
    qat_face_count,
    qat_batch_size,
    qat_learning_rate,
    no_equalize,
    no_fold,
    num_threads,
):
    """Convert a model to TFLite, ONNX and ncnn and check each file.

    Every artifact runs in its own runtime on real faces and must reach a
    cosine similarity to the Keras embedding of 0.99999 (fp32), 0.9999
    (fp16) or 0.99 (int8). Artifacts below the bar are left as NAME.failed
    and the command exits with status 1. report.json, report.md and
    parity.png describe the run, model_io.json the models' input and output.
    """

    options = ConvertOptions(
        targets=_targets(targets),
        targets_explicit=bool(targets) and "all" not in targets,
        precisions=tuple(dict.fromkeys(precisions)) or None,
        calibration_dir=calibration_dir,
        calibration_count=calibration_count,
        parity_dir=parity_dir,
        parity_count=parity_count,
        int8_input=int8_input,
        equalize=not no_equalize,
        qat=qat,
        qat_steps=qat_steps,
        qat_face_count=qat_face_count,
        qat_batch_size=qat_batch_size,
        qat_learning_rate=qat_learning_rate,
        fold=not no_fold,
        num_threads=num_threads,
    )
    try:
        validate_options(options)
    except ValueError as error:
        raise click.UsageError(str(error)) from error

    # tf2onnx and TensorFlow log every conversion step at INFO; `-v` shows them.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("tf2onnx", "tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.WARNING)

    # TensorFlow loads here, after the options are known to fit together.
    from converters.convert import ConversionError, convert_model
    from mfn_tf.model.loading import ModelLoadError, load_backbone

    try:
        model = load_backbone(model_spec)
    except (FileNotFoundError, ModelLoadError) as error:
        raise click.ClickException(str(error)) from error
    try:
        report = convert_model(model, out_dir, options, source=model_spec)
    except ConversionError as error:
        click.echo(f"Wrote the report to {out_dir / 'report.md'}", err=True)
        raise click.ClickException(str(error)) from error
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    for artifact in report["artifacts"]:
        parity = artifact["parity"]
        click.echo(
            f"{artifact['name']:36s} {artifact['precision']:5s} "
            f"min cosine {parity['min_cosine']:.6f}  {artifact['status']}"
        )
    click.echo(f"Wrote {len(report['artifacts'])} artifacts and report.md to {out_dir}")
