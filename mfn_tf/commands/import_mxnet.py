"""`python cli.py import-mxnet`: an insightface MXNet checkpoint as a `.keras` model."""

import logging
from pathlib import Path

import click

logger = logging.getLogger(__name__)


@click.command("import-mxnet")
@click.argument("checkpoint", metavar="PREFIX,EPOCH")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The .keras file to write.")
@click.option("--embedding-size", type=click.IntRange(min=1), default=None,
              help="Reject the checkpoint unless its embedding has this many dimensions.")
@click.option("--backbone-only", is_flag=True,
              help="Write only the backbone, even where the checkpoint has the fc7 classifier.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def import_mxnet(checkpoint, out, embedding_size, backbone_only, overwrite):
    """Import an insightface MobileFaceNet checkpoint (MXNet) into Keras.

    \b
    The checkpoint is named PREFIX,EPOCH, as insightface's --pretrained
    names it, and its files PREFIX-symbol.json and PREFIX-%04d.params are
    read without MXNet. For example
      python cli.py import-mxnet models/model-y1-test2/model,0 --out y1.keras
    A deploy checkpoint becomes a backbone. A training checkpoint also
    contains fc7_weight, so OUT becomes a training model with the backbone
    and fc7. Its fc7 is a SoftmaxHead that carries the class centres, which
    `train --pretrained` loads into the recipe's head. `eval` reads either
    file.
    """
    from mfn_tf.importers import (
        MXNetImportError,
        NDArrayFileError,
        SymbolError,
        import_mxnet_checkpoint,
        parse_checkpoint_spec,
    )

    out = Path(out)
    if out.suffix != ".keras":
        raise click.BadParameter(f"{out} must end in .keras", param_hint="--out")
    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} already exists; pass --overwrite to replace it")
    try:
        prefix, epoch = parse_checkpoint_spec(checkpoint)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="PREFIX,EPOCH") from error
    try:
        backbone, fc7_kernel, info = import_mxnet_checkpoint(
            prefix, epoch, embedding_size=embedding_size
        )
    except (FileNotFoundError, MXNetImportError, NDArrayFileError, SymbolError) as error:
        raise click.ClickException(str(error)) from error

    model = backbone
    if fc7_kernel is not None and not backbone_only:
        from mfn_tf.heads import SoftmaxHead
        from mfn_tf.training.model_builder import HEAD_NAME, build_training_model

        head = SoftmaxHead(info.num_classes, name=HEAD_NAME)
        model = build_training_model(backbone, head)
        head.kernel.assign(fc7_kernel)
        if info.fc7_bias is not None:
            logger.warning(
                "fc7_bias (%d values) is not imported: the project's heads have "
                "no bias, as insightface's margin heads have none",
                info.fc7_bias.size,
            )

    # Save beside the target and rename, so that a failed save leaves no
    # partial model under the requested name.
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.stem + ".partial.keras")
    model.save(partial)
    partial.replace(out)

    click.echo(info.summary())
    kind = "training model (backbone + fc7)" if model is not backbone else "backbone"
    click.echo(f"wrote {kind} to {out}")
