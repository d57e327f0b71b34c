"""`python cli.py train`: one stage of insightface's three-stage recipe."""

import logging
import re

import click

from mfn_tf.training.recipe import STAGES, RecipeError, load_recipe, parse_set_options

logger = logging.getLogger(__name__)


@click.command()
@click.option("--stage", type=click.Choice(STAGES), required=True,
              help="softmax pretraining, arcface (s=64, m=0.5) or finetune (s=128).")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="insightface dataset folder (train.rec, train.idx, property, *.bin), "
                   "or a folder with one sub-folder of images per identity.")
@click.option("--prefix", "run_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder for checkpoints, logs and plots.")
@click.option("--pretrained", default=None,
              help="Start from this checkpoint: a .keras file from an earlier stage, "
                   "or an insightface MXNet checkpoint as PREFIX,EPOCH.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --prefix from its newest checkpoint "
                   "(weights, optimizer state, step and LR).")
@click.option("--override", "overrides", multiple=True, metavar="NAME|FILE.toml",
              help="Recipe override applied over the stage: a name from recipes/, such as 'cpu' "
              "for short CPU runs, or a path to a .toml file. Repeatable.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Set one recipe value, such as --set max_steps=500 or "
                   "--set lr_steps=100,200. Repeatable; wins over everything else.")
def train(stage, data_dir, run_dir, pretrained, resume, overrides, settings):
    """Train one stage of the recipe.

    \b
    Stages chain as in insightface's MobileFaceNet reproduction:
      python cli.py train --stage softmax  --data-dir D --prefix runs/softmax
      python cli.py train --stage arcface  --data-dir D --prefix runs/arcface \\
          --pretrained runs/softmax/model.keras
      python cli.py train --stage finetune --data-dir D --prefix runs/finetune \\
          --pretrained runs/arcface/model.keras
    """
    try:
        recipe = load_recipe(stage, overrides, parse_set_options(settings))
    except RecipeError as error:
        raise click.UsageError(str(error)) from error
    if resume and pretrained:
        raise click.UsageError("--resume continues a run from its own checkpoint; drop --pretrained")

    from mfn_tf.training.trainer import RunDirectoryError, train_stage

    import tensorflow as tf

    try:
        summary = train_stage(recipe, data_dir, run_dir, pretrained=pretrained, resume=resume)
    except (RunDirectoryError, FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    except KeyboardInterrupt:
        from mfn_tf.training.checkpoints import read_state

        state = read_state(run_dir)
        if state and state.get("checkpoint"):
            click.echo(
                f"Interrupted. The newest checkpoint in {run_dir} is at step {state['step']}; "
                "run the same command with --resume to continue.",
                err=True,
            )
        else:
            click.echo(f"Interrupted before the first checkpoint; nothing in {run_dir} to resume.", err=True)
        raise SystemExit(130) from None
    except tf.errors.OpError as error:
        # A bad record found by the input pipeline reaches here wrapped in
        # TensorFlow's error, with the DatasetError text inside its message.
        found = re.search(r"DatasetError: (.+)", error.message)
        if found is None:
            raise
        raise click.ClickException(
            f"training stopped: {found.group(1).strip()}. Checkpoints written before "
            f"the error are in {run_dir}; fix or re-pack the data, then continue with --resume."
        ) from None
    message = (
        f"Stage {stage} finished at step {summary['step']} in {summary['seconds']:.0f} s. "
        f"Final model: {summary['final_model']}"
    )
    if summary.get("best_model") and summary.get("best_monitor"):
        message += (
            f"; best {summary['best_monitor']}={summary['best_value']:.5f} "
            f"at step {summary['best_step']}: {summary['best_model']}"
        )
    click.echo(message)
