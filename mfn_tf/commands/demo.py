"""`python cli.py demo`: the whole pipeline on a generated dataset.

It runs, in one process, what these commands do:

    python cli.py data synth --out DEMO/data
    python cli.py train --stage softmax  --data-dir DEMO/data --prefix DEMO/softmax --override demo
    python cli.py train --stage arcface  --data-dir DEMO/data --prefix DEMO/arcface --override demo \
        --pretrained DEMO/softmax/model.keras
    python cli.py train --stage finetune --data-dir DEMO/data --prefix DEMO/finetune --override demo \
        --pretrained DEMO/arcface/model.keras --set max_steps=30 --set lr_steps=
    python cli.py eval --model DEMO/finetune/best.keras --data-dir DEMO/data --targets synth
    python cli.py convert --target all --model DEMO/finetune/best.keras --out DEMO/convert \
        --calibration-dir DEMO/data/faces
    python cli.py bench --model-dir DEMO/convert --quick --face-dir DEMO/data/faces

`DEMO/data/faces` holds the images of `synth.bin` as files, the folder of
aligned faces that int8 calibration and the parity checks read.
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


STEPS = 7
# Marks a folder the demo wrote, so that --overwrite never deletes anything else.
DEMO_MARKER = ".mfn-tf-demo"


def _banner(number, text):
    click.echo(f"\n=== {number}/{STEPS} {text} ===")


def _write_face_folder(bin_path, out_dir):
    """Write the encoded images of a `.bin` as files, one per image."""
    from mfn_tf.data.verification_bin import load_bin

    images, _ = load_bin(bin_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(images):
        suffix = ".png" if data.startswith(b"\x89PNG") else ".jpg"
        (out_dir / f"face_{index:04d}{suffix}").write_bytes(data)
    return out_dir


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo", show_default=True,
              help="Folder for the generated data, the three runs and the reports.")
@click.option("--overwrite", is_flag=True,
              help="Delete an earlier demo in --out first (only a folder the demo wrote).")
def demo(out_dir, overwrite):
    """Train the three stages, evaluate, convert and benchmark on synthetic faces.

    The data are generated, deterministic synthetic identities: the demo
    checks that the pipeline runs end to end in a few minutes on a CPU, and
    its accuracy figures mean nothing for real faces. See the README for
    the commands on real data.
    """
    from bench.host import DEMO_SETTINGS, run_host_benchmark
    from converters.convert import convert_model
    from converters.options import ConvertOptions
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
        if not (out / DEMO_MARKER).exists():
            raise click.ClickException(
                f"{out} was not written by the demo (no {DEMO_MARKER} file), so --overwrite "
                "leaves it alone; choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("Written by `python cli.py demo`; --overwrite may delete this folder.\n")
    started = time.perf_counter()
    timings = {}

    _banner(1, "Generate a synthetic insightface dataset")
    data_dir = out / "data"
    tick = time.perf_counter()
    write_synthetic_dataset(data_dir, SyntheticConfig())
    timings["data"] = time.perf_counter() - tick

    pretrained = None
    summaries = {}
    for number, stage in enumerate(("softmax", "arcface", "finetune"), start=2):
        _banner(number, f"Train stage {stage}")
        settings = FINETUNE_SETTINGS if stage == "finetune" else {}
        recipe = load_recipe(stage, ["demo"], dict(settings))
        tick = time.perf_counter()
        summaries[stage] = train_stage(recipe, data_dir, out / stage, pretrained=pretrained)
        timings[stage] = time.perf_counter() - tick
        pretrained = summaries[stage]["final_model"]

    _banner(5, "Evaluate the best stage-3 checkpoint on synth.bin")
    final = summaries["finetune"]["best_model"] or summaries["finetune"]["final_model"]
    tick = time.perf_counter()
    backbone = load_backbone(final)
    result = evaluate_bin(backbone, data_dir / "synth.bin", name="synth")
    timings["eval"] = time.perf_counter() - tick

    _banner(6, "Convert to TFLite, ONNX and ncnn, each checked against Keras")
    faces = _write_face_folder(data_dir / "synth.bin", data_dir / "faces")
    tick = time.perf_counter()
    convert_model(
        backbone,
        out / "convert",
        ConvertOptions(targets_explicit=False, calibration_dir=faces),
        source=str(final),
    )
    timings["convert"] = time.perf_counter() - tick

    _banner(7, "Benchmark the converted models on this machine")
    tick = time.perf_counter()
    run_host_benchmark(out / "convert", out / "bench", face_dir=faces, **DEMO_SETTINGS)
    timings["bench"] = time.perf_counter() - tick

    report = {
        "stages": summaries,
        "synth_accuracy_flip": result.accuracy,
        "synth_accuracy_std": result.accuracy_std,
        "convert_report": str(out / "convert" / "report.json"),
        "bench_report": str(out / "bench" / "host_benchmark.md"),
        "seconds": {key: round(value, 1) for key, value in timings.items()},
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    click.echo(
        f"\nDemo finished in {report['total_seconds']:.0f} s. "
        f"Accuracy-Flip on held-out synthetic identities: "
        f"{result.accuracy:.5f}+-{result.accuracy_std:.5f}\n"
        f"Plots: {out}/*/training.png; converted models: {out / 'convert'} "
        f"(report.md); benchmark: {out / 'bench' / 'host_benchmark.md'}; "
        f"summary: {out / 'demo.json'}"
    )
