"""`python cli.py eval`: verification accuracy on insightface `.bin` sets."""

import json
import logging
from pathlib import Path

import click

from mfn_tf.evaluation.embedding import DEFAULT_BATCH_SIZE
from mfn_tf.evaluation.evaluate import DEFAULT_TARGETS
from mfn_tf.evaluation.verification import FAR_TARGET, N_FOLDS

logger = logging.getLogger(__name__)


def parse_targets(value):
    """Split "lfw,cfp_fp,agedb_30" into target names, rejecting empty and
    repeated names."""
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise click.BadParameter(f"empty target name in {value!r}; expected names such as lfw,cfp_fp")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise click.BadParameter(f"target listed more than once: {', '.join(repeated)}")
    return names


def write_json(path, report):
    """Write `report` to `path` through a temporary file, so an interrupted
    run leaves no partial JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)


@click.command()
@click.option("--model", "model_spec", required=True,
              help="Model to evaluate: a .keras file written by this project (a backbone "
                   "or a training model), or an insightface MXNet checkpoint as PREFIX,EPOCH.")
@click.option("--data-dir", type=click.Path(file_okay=False), required=True,
              help="Folder with the verification sets as TARGET.bin.")
@click.option("--targets", default=",".join(DEFAULT_TARGETS), show_default=True,
              help="Comma-separated verification sets; each is read from DATA_DIR/TARGET.bin.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE,
              show_default=True,
              help="Images per forward pass (twice that with the mirrored images).")
@click.option("--step", type=int, default=0, show_default=True,
              help="Global step printed in the [target][step] lines and stored in the JSON.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write every figure of every target to this JSON file.")
@click.option("--roc", "roc_path", type=click.Path(dir_okay=False), default=None,
              help="Save the ROC curves of all targets to this image (PNG or SVG).")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Add each image's mirrored embedding (insightface's Accuracy-Flip).")
def evaluate(model_spec, data_dir, targets, batch_size, step, json_path, roc_path, flip):
    """Verification accuracy on insightface .bin sets (LFW, CFP-FP, AgeDB-30).

    \b
    Follows insightface's protocol: embeddings of each image and its mirror
    are summed and L2-normalised, and accuracy is the mean +- std over 10
    folds, each scored at the threshold that is best on the other nine.
    Prints insightface's lines, for example:
      [lfw][0]XNorm: 11.182153
      [lfw][0]Accuracy-Flip: 0.99517+-0.00450
      [lfw][0]TAR@FAR=0.001: 0.97967+-0.01127
    """
    names = parse_targets(targets)

    from mfn_tf.data.verification_bin import InvalidBinError, load_bin
    from mfn_tf.evaluation.evaluate import (
        decode_verification_set,
        evaluate_set,
        find_target,
        format_result_lines,
    )

    # Every file is found and unpickled before the model loads, so a typo
    # in --targets or a broken file fails within seconds.
    encoded = {}
    for name in names:
        try:
            path = find_target(data_dir, name)
            encoded[name] = (path, *load_bin(path))
        except (FileNotFoundError, InvalidBinError) as error:
            raise click.ClickException(str(error)) from error

    from mfn_tf.evaluation.embedding import ImageEmbedder
    from mfn_tf.model.loading import ModelLoadError, load_backbone

    try:
        backbone = load_backbone(model_spec)
    except (FileNotFoundError, ModelLoadError) as error:
        raise click.ClickException(str(error)) from error
    embedder = ImageEmbedder(backbone, batch_size)
    image_size = tuple(backbone.input_shape[1:3])

    results = {}
    for name, (path, images, issame) in encoded.items():
        try:
            verification_set = decode_verification_set(
                path, images, issame, name=name, image_size=image_size
            )
        except InvalidBinError as error:
            # The targets finished so far are still written out.
            _write_outputs(results, encoded, model_spec, step, flip, json_path, roc_path)
            raise click.ClickException(str(error)) from error
        results[name] = evaluate_set(embedder, verification_set, flip=flip, progress=True)
        for line in format_result_lines(results[name], step):
            click.echo(line)
    _write_outputs(results, encoded, model_spec, step, flip, json_path, roc_path)


def _write_outputs(results, encoded, model_spec, step, flip, json_path, roc_path):
    if json_path:
        report = {
            "model": str(model_spec),
            "step": step,
            "flip": flip,
            "n_folds": N_FOLDS,
            "far_target": FAR_TARGET,
            "targets": {
                name: {"path": str(encoded[name][0]), **result.to_dict()}
                for name, result in results.items()
            },
        }
        write_json(json_path, report)
        logger.info("figures written to %s", json_path)
    if roc_path and results:
        from mfn_tf.evaluation.plots import save_roc_plot

        save_roc_plot(
            {name: result.roc for name, result in results.items()},
            roc_path,
            title=f"ROC of {Path(model_spec).name}",
        )
        logger.info("ROC plot saved to %s", roc_path)
