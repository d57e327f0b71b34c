"""`python cli.py bench`: benchmark converted models here or on a phone."""

import logging

import click
from click.core import ParameterSource

from bench.errors import BenchmarkError

logger = logging.getLogger(__name__)

HOST_ONLY = ("iterations", "warmup", "face", "face_dir", "no_unfolded", "quick")
ANDROID_ONLY = ("benchncnn", "benchmark_model", "serial", "adb", "loops", "powersave", "cooldown", "remote_dir")


def _explicit(ctx, names):
    return [
        name
        for name in names
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    ]


def _echo_summary(result, paths):
    from bench.results import fastest_by_threads, fusion_min_ratios, fusion_ratios

    for threads, best in fastest_by_threads(result.measurements).items():
        click.echo(f"fastest at {threads} thread(s): {best.label}, median {best.median_ms:.2f} ms")
    min_ratios = fusion_min_ratios(result.measurements)
    for threads, (folded, unfolded, ratio) in fusion_ratios(result.measurements).items():
        click.echo(
            f"BatchNorm folding at {threads} thread(s): {folded:.2f} ms folded, "
            f"{unfolded:.2f} ms unfolded, ratio {ratio:.3f} (fastest images: "
            f"{min_ratios[threads]:.3f})"
        )
    click.echo(f"report: {paths['markdown']} (also .csv, .json, chart {paths['chart']})")


@click.command()
@click.option("--model-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Output folder of `python cli.py convert` (report.json, model_io.json, models).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Folder for the report, logs and the unfolded ncnn model [default: MODEL_DIR/bench].")
@click.option("--threads", default="1,2,all", show_default=True,
              help="Comma-separated thread counts; 'all' is every usable core (on a phone: "
                   "every core of the --powersave set).")
@click.option("--repeats", type=click.IntRange(min=1),
              help="Rounds; every artifact runs once per round, alternating [default: 5 here, 3 on a phone].")
@click.option("--artifacts", "only",
              help="Comma-separated artifact names to run, e.g. ncnn_fp32,tflite_int8 [default: all].")
@click.option("--keras-model",
              help="Model (.keras or PREFIX,EPOCH) to export the unfolded ncnn model from, where "
                   "report.json's source_model is not loadable here.")
@click.option("--iterations", default=20, show_default=True, type=click.IntRange(min=1),
              help="Timed images per artifact per round (this machine).")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0),
              help="Untimed images per artifact after loading (this machine).")
@click.option("--face", type=click.Path(exists=True, dir_okay=False),
              help="Aligned face image to time on [default: a synthetic face].")
@click.option("--face-dir", type=click.Path(exists=True, file_okay=False),
              help="Folder of aligned faces; its first image is used.")
@click.option("--no-unfolded", is_flag=True,
              help="Skip the ncnn model without BatchNorm folding (and the fusion ratio).")
@click.option("--quick", is_flag=True,
              help="A few seconds per artifact: 1 thread, 2 rounds of 10 images, 3 warm-up images.")
@click.option("--android", is_flag=True, help="Run on an Android phone over adb instead.")
@click.option("--benchncnn", type=click.Path(dir_okay=False),
              help="arm64 benchncnn binary (ncnn); required with --android.")
@click.option("--benchmark-model", type=click.Path(dir_okay=False),
              help="arm64 benchmark_model binary (TensorFlow Lite); required with --android.")
@click.option("--serial", help="adb serial of the phone, where several are attached.")
@click.option("--adb", default="adb", show_default=True, help="adb executable.")
@click.option("--loops", default=50, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per tool invocation on the phone, after 8 warm-up runs.")
@click.option("--powersave", default=2, show_default=True, type=click.IntRange(0, 2),
              help="Phone cores: 0 all, 1 little, 2 big (ncnn's power-save modes).")
@click.option("--cooldown", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to sleep on the phone before every run.")
@click.option("--remote-dir", default="/data/local/tmp/mfn_tf_bench", show_default=True,
              help="Folder on the phone for the tools, models and logs.")
@click.pass_context
def bench(ctx, model_dir, out_dir, threads, repeats, only, keras_model, iterations, warmup,
          face, face_dir, no_unfolded, quick, android, benchncnn, benchmark_model, serial,
          adb, loops, powersave, cooldown, remote_dir):
    """Time every converted model side by side, here or on an Android phone.

    Here: the Keras model, ONNX Runtime, TFLite (fp32, fp16, int8) and ncnn
    (fp32, fp16, and fp32 without BatchNorm folding), each in its own
    process, alternating, for each thread count. On a phone (--android):
    ncnn with benchncnn and TFLite with benchmark_model over adb. Both write
    a Markdown table, a CSV, a JSON file and a bar chart into --out.
    """
    wrong = _explicit(ctx, HOST_ONLY if android else ANDROID_ONLY)
    if wrong:
        options = ", ".join("--" + name.replace("_", "-") for name in wrong)
        where = "this machine" if android else "--android"
        raise click.UsageError(f"{options} only applies to runs on {where}")
    artifact_names = [name.strip() for name in only.split(",") if name.strip()] if only else None
    out_dir = out_dir or str(click.format_filename(model_dir)).rstrip("/") + "/bench"

    from bench.report import write_report

    try:
        if android:
            if not benchncnn or not benchmark_model:
                raise click.UsageError(
                    "--android needs --benchncnn and --benchmark-model (see docs/android.md "
                    "for where to get them)"
                )
            from bench.android import run_android_benchmark

            result = run_android_benchmark(
                model_dir, benchncnn, benchmark_model, out_dir, threads=threads, loops=loops,
                repeats=repeats or 3, powersave=powersave, cooldown_s=cooldown, serial=serial,
                adb_executable=adb, remote_dir=remote_dir, keras_model=keras_model,
                only=artifact_names,
            )
            paths = write_report(result, out_dir, "android_benchmark")
        else:
            from bench.host import DEMO_SETTINGS, run_host_benchmark

            settings = {"threads": threads, "repeats": repeats or 5, "iterations": iterations,
                        "warmup": warmup}
            if quick:
                given = _explicit(ctx, ("threads", "repeats", "iterations", "warmup"))
                settings.update({key: value for key, value in DEMO_SETTINGS.items() if key not in given})
            result = run_host_benchmark(
                model_dir, out_dir, face=face, face_dir=face_dir, keras_model=keras_model,
                only=artifact_names, unfolded=not no_unfolded, write=False, **settings,
            )
            paths = write_report(result, out_dir, "host_benchmark")
    except BenchmarkError as error:
        raise click.ClickException(str(error)) from error
    _echo_summary(result, paths)
