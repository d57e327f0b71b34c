"""`python cli.py verify-arm`: check converted models on emulated aarch64."""

import logging
from pathlib import Path

import click

from converters.arm.cpus import DEFAULT_CPUS, parse_cpu_list
from converters.arm.face_sets import PAIR_SELECTIONS
from converters.arm.runner import SETTINGS

logger = logging.getLogger(__name__)

ALL_SETTINGS = tuple(dict.fromkeys(name for settings in SETTINGS.values() for name in settings))


def _cpu_list(ctx, param, value):
    try:
        return tuple(parse_cpu_list(value))
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@click.command()
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Output folder of `python cli.py convert` (with report.json). Required "
    "unless --setup-only.",
)
@click.option(
    "--cpu",
    "cpus",
    default=",".join(DEFAULT_CPUS),
    show_default=True,
    callback=_cpu_list,
    help="QEMU CPU models, comma-separated; QEMU properties follow their model "
    "(`max,sme=off`). `qemu-aarch64-static -cpu help` lists the models.",
)
@click.option(
    "--images-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Aligned 112x112 faces (searched recursively); with --pairs, the LFW "
    "image root (Name/Name_0001.jpg). Default: the conversion's parity faces.",
)
@click.option(
    "--images",
    type=click.IntRange(min=1),
    help="Number of faces, spread over --images-dir (without --pairs).  [default: 16]",
)
@click.option(
    "--pairs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="LFW pairs.txt: also count the same/different decisions that change "
    "at the Keras model's verification threshold.",
)
@click.option(
    "--pairs-count",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Number of pairs to run under emulation.",
)
@click.option(
    "--pair-selection",
    type=click.Choice(PAIR_SELECTIONS),
    default="spread",
    show_default=True,
    help="spread: pairs spread evenly over the file; nearest: the pairs whose "
    "Keras distance is nearest the threshold, the ones a small change can flip.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, max=4),
    help="Verification threshold on the squared distance of L2-normalised "
    "embeddings. Default: the 10-fold protocol's (median of the fold "
    "thresholds) on all pairs of --pairs, with the Keras model.",
)
@click.option(
    "--shift-x",
    type=int,
    default=0,
    show_default=True,
    help="Shift the faces right by this many pixels, repeating the edge "
    "column; 8 moves SphereFace-style LFW crops onto insightface's alignment.",
)
@click.option(
    "--setting",
    "settings",
    multiple=True,
    type=click.Choice(ALL_SETTINGS),
    help="Runtime setting to run; repeat for several. Default: every setting "
    "of each runtime (see docs/arm_verification.md).",
)
@click.option(
    "--artifact",
    "artifacts",
    multiple=True,
    help="Artifact name from report.json; repeat for several. Default: every "
    "passed TFLite and ncnn artifact.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Threads per emulated runtime.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Emulated runs at the same time.",
)
@click.option(
    "--keras-model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Reference Keras model. Default: the Keras file named in model_io.json.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for arm_report.json, arm_report.md and arm_cosine.png. "
    "Default: --model-dir.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the aarch64 sysroot is kept. Default: $MFN_TF_ARM_CACHE, else "
    "~/.cache/mfn-tf/arm.",
)
@click.option(
    "--qemu",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="QEMU user-mode emulator. Default: $MFN_TF_QEMU, else "
    "qemu-aarch64-static on PATH.",
)
@click.option(
    "--setup-only",
    is_flag=True,
    help="Set up the emulation (sysroot, CPU probes) and exit.",
)
@click.option("--rebuild", is_flag=True, help="Rebuild the sysroot from scratch first.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
def verify_arm(
    model_dir,
    cpus,
    images_dir,
    images,
    pairs,
    pairs_count,
    pair_selection,
    threshold,
    shift_x,
    settings,
    artifacts,
    threads,
    jobs,
    keras_model,
    out_dir,
    cache_dir,
    qemu,
    setup_only,
    rebuild,
    no_progress,
):
    """Run every ncnn and TFLite artifact of a conversion on emulated aarch64.

    Each artifact runs under QEMU user-mode emulation on each CPU model,
    with each runtime setting, on real faces, and is compared with the
    Keras model's embeddings. This checks ARM kernels (NEON, fp16
    arithmetic) for correctness; emulated time is no measure of speed.
    The first run sets the emulation up in a per-user cache.
    """
    from converters.arm.emulation import UnknownCpuError
    from converters.arm.sysroot import SetupError
    from converters.arm.verify import VerifyOptions, list_failures, setup_emulation, verify_arm as run

    if images is not None and pairs is not None:
        raise click.UsageError(
            "--images applies without --pairs; with --pairs the faces are those of "
            "the pairs, set by --pairs-count"
        )
    try:
        if setup_only or rebuild:
            emulator, probed, _ = setup_emulation(cpus, cache_dir, qemu, rebuild=rebuild)
            click.echo(f"emulation ready: {emulator.qemu_version}, sysroot {emulator.sysroot.root}")
            for cpu in probed:
                click.echo(f"  {cpu.spec}: {' '.join(cpu.features)}")
            if setup_only:
                return
        if model_dir is None:
            raise click.UsageError("--model-dir is required unless --setup-only is given")
        options = VerifyOptions(
            cpus=cpus,
            images_dir=images_dir,
            images=images or 16,
            pairs=pairs,
            pairs_count=pairs_count,
            pair_selection=pair_selection,
            threshold=threshold,
            shift_x=shift_x,
            settings=settings or None,
            artifacts=artifacts or None,
            threads=threads,
            jobs=jobs,
            keras_model=keras_model,
            cache_dir=cache_dir,
            qemu=qemu,
            progress=not no_progress,
        )
        report = run(model_dir, options, out_dir)
    except (SetupError, UnknownCpuError, ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    destination = out_dir or model_dir
    click.echo(f"wrote {destination}/arm_report.md, arm_report.json and arm_cosine.png")
    failures = list_failures(report)
    if failures:
        raise click.ClickException(
            f"{len(failures)} emulated check(s) failed:\n" + "\n".join(f"- {line}" for line in failures)
        )
