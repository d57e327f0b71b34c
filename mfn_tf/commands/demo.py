"""`python cli.py demo`: the whole pipeline on a generated dataset.

It runs, in one process, what these commands do:

    python cli.py data synth --out DEMO/data
    python cli.py train --stage softmax  --data-dir DEMO/data --prefix DEMO/softmax --override demo
    python cli.py train --stage arcface  --data-dir DEMO/data --prefix DEMO/arcface --override demo \
        --pretrained DEMO/softmax/model.keras
    python cli.py train --stage finetune --data-dir DEMO/data --prefix DEMO/finetune --override demo \
        --pretrained DEMO/arcface/model.keras --set max_steps=30 --set lr_steps=
    python cli.py eval --model DEMO/finetune/best.keras --data-dir DEMO/data --targets synth
"""

import json
import logging
import shutil
import time
from pathlib import Path

import click

logger = logging.getLogger(__name__)

# Stage 3 is short: it fine-tunes at lr 0.001 and changes little.
FINETUNE_SETTINGS = {"max_steps": "30", "lr_steps": ""}


def _banner(text):
    click.echo(f"\n=== {text} ===")


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo", show_default=True,
              help="Folder for the generated data, the three runs and the reports.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier demo in --out first.")
def demo(out_dir, overwrite):
    """Run the three training stages and the evaluation on synthetic faces.

    The data are generated, deterministic synthetic identities: the demo
    checks that the pipeline runs end to end in a few minutes on a CPU, and
    its accuracy figures mean nothing for real faces. See the README for
    the commands on real data.
    """
    from mfn_tf.data.synthetic import SyntheticConfig, write_synthetic_dataset
    from mfn_tf.evaluation.evaluate import evaluate_bin
    from mfn_tf.model.loading import load_backbone
    from mfn_tf.training.recipe import load_recipe
    from mfn_tf.training.trainer import train_stage

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise click.ClickException(
                f"{out} is not empty; pass --overwrite to replace the earlier demo, "
                "or choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings = {}

    _banner("1/5 Generate a synthetic insightface dataset")
    data_dir = out / "data"
    tick = time.perf_counter()
    write_synthetic_dataset(data_dir, SyntheticConfig())
    timings["data"] = time.perf_counter() - tick

    pretrained = None
    summaries = {}
    for number, stage in enumerate(("softmax", "arcface", "finetune"), start=2):
        _banner(f"{number}/5 Train stage {stage}")
        settings = FINETUNE_SETTINGS if stage == "finetune" else {}
        recipe = load_recipe(stage, ["demo"], dict(settings))
        tick = time.perf_counter()
        summaries[stage] = train_stage(recipe, data_dir, out / stage, pretrained=pretrained)
        timings[stage] = time.perf_counter() - tick
        pretrained = summaries[stage]["final_model"]

    _banner("5/5 Evaluate the best stage-3 checkpoint on synth.bin")
    final = summaries["finetune"]["best_model"] or summaries["finetune"]["final_model"]
    tick = time.perf_counter()
    result = evaluate_bin(load_backbone(final), data_dir / "synth.bin", name="synth")
    timings["eval"] = time.perf_counter() - tick

    report = {
        "stages": summaries,
        "synth_accuracy_flip": result.accuracy,
        "synth_accuracy_std": result.accuracy_std,
        "seconds": {key: round(value, 1) for key, value in timings.items()},
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    click.echo(
        f"\nDemo finished in {report['total_seconds']:.0f} s. "
        f"Accuracy-Flip on held-out synthetic identities: "
        f"{result.accuracy:.5f}+-{result.accuracy_std:.5f}\n"
        f"Plots: {out}/*/training.png; summary: {out / 'demo.json'}"
    )
