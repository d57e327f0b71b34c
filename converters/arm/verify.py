"""Run every ncnn and TFLite artifact of a conversion on emulated aarch64 CPUs.

For each CPU model, artifact and runtime setting, one emulated process
(`runner.py`) embeds the chosen faces, and the host compares the result
with the Keras model's embeddings (`metrics.py`). Emulated time does not
measure a phone's speed, so only correctness is checked.

A setting whose arithmetic is fp32 by construction must reach the
artifact's parity bar, as on x86 (`converters.parity.PARITY_BARS`).
Settings that store or compute in fp16 are measured and reported without
a bar.
"""

import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from converters.arm import runner
from converters.arm.cells import Cell, missing_features, run_cell, score_cell
from converters.arm.cpus import DEFAULT_CPUS
from converters.arm.emulation import Emulator
from converters.arm.face_sets import folder_face_set, pairs_face_set
from converters.arm.report import PLOT_FILE, build_report, plot_cosines, write_reports
from converters.arm.sysroot import Sysroot, find_qemu
from converters.parity import PARITY_BARS, cosine_similarities
from converters.report import read_report

logger = logging.getLogger(__name__)

RUNTIMES = ("litert", "ncnn")


@dataclass
class VerifyOptions:
    """Options of a verification run (see `python cli.py verify-arm --help`)."""

    cpus: tuple = DEFAULT_CPUS
    images_dir: Path = None
    images: int = 16
    pairs: Path = None
    pairs_count: int = 100
    pair_selection: str = "spread"
    threshold: float = None
    shift_x: int = 0
    settings: tuple = None
    artifacts: tuple = None
    threads: int = 1
    jobs: int = 1
    keras_model: Path = None
    cache_dir: Path = None
    qemu: Path = None
    progress: bool = True


def select_artifacts(report, model_dir, names=None):
    """Return `(entries, notes)`: the passed TFLite and ncnn artifacts to run.

    Raises:
        ValueError: a name in `names` is not in the report, or a file is missing.
    """
    entries, notes = [], []
    listed = {entry["name"]: entry for entry in report.get("artifacts", [])}
    runnable = sorted(name for name, entry in listed.items() if entry["runtime"] in RUNTIMES)
    for name in names or ():
        if name not in listed:
            raise ValueError(
                f"artifact {name!r} is not in {model_dir}/report.json; its TFLite and "
                f"ncnn artifacts are {', '.join(runnable) or 'none'}"
            )
    for entry in report.get("artifacts", []):
        if names and entry["name"] not in names:
            continue
        if entry["runtime"] not in RUNTIMES:
            if names:
                raise ValueError(
                    f"artifact {entry['name']!r} runs on {entry['runtime']}; only TFLite "
                    "(litert) and ncnn artifacts run on emulated aarch64"
                )
            continue
        if entry.get("status") != "passed":
            notes.append(
                f"{entry['name']} left out: its conversion status is {entry.get('status')!r}."
            )
            continue
        files = [Path(model_dir) / name for name in entry["files"]]
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise ValueError(
                f"report.json lists {', '.join(missing)} for {entry['name']}, but the "
                "file is missing; convert the model again"
            )
        entries.append({**entry, "paths": [str(path.resolve()) for path in files]})
    if not entries:
        raise ValueError(
            f"{model_dir}/report.json lists no passed TFLite or ncnn artifact to check; "
            "run `python cli.py convert --target tflite --target ncnn` first"
        )
    return entries, notes


def select_settings(runtime, requested):
    """Return the settings of `runtime` to run, in `SETTINGS` order."""
    available = list(runner.SETTINGS[runtime])
    return [name for name in available if not requested or name in requested]


def list_failures(report):
    """Return one line per run that failed or per fp32 setting below its bar."""
    return [
        _describe_failure(entry)
        for entry in report["results"]
        if entry["status"] == "failed" or entry.get("meets_bar") is False
    ]


def _describe_failure(entry):
    if entry["status"] == "failed":
        return f"{entry['cpu']} / {entry['artifact']} / {entry['setting']}: {entry['error']}"
    return (
        f"{entry['cpu']} / {entry['artifact']} / {entry['setting']}: minimum cosine "
        f"similarity {entry['min_cosine']:.6f} on {entry['count']} faces is below the "
        f"{entry['precision']} bar of {entry['bar']}"
    )


def load_face_set(model, options, report):
    """Load the faces (or pairs) and their Keras embeddings."""
    images_dir = options.images_dir or (report.get("parity_faces") or {}).get("dir")
    if images_dir is None:
        raise ValueError("pass --images-dir: report.json names no parity faces folder")
    if options.pairs is not None:
        return pairs_face_set(
            model,
            options.pairs,
            images_dir,
            options.pairs_count,
            selection=options.pair_selection,
            threshold=options.threshold,
            shift=options.shift_x,
            progress=options.progress,
        )
    return folder_face_set(model, images_dir, options.images, shift=options.shift_x, progress=options.progress)


def _keras_model_path(model_dir, model_io, report, keras_model):
    if keras_model:
        return keras_model
    file = (model_io.get("keras") or {}).get("file")
    if file and (Path(model_dir) / file).is_file():
        return Path(model_dir) / file
    return report["source_model"]


def setup_emulation(cpu_specs, cache_dir=None, qemu=None, rebuild=False):
    """Build the sysroot if needed and probe each CPU; return `(emulator, cpus, roots)`.

    Raises:
        SetupError: a setup step failed.
        UnknownCpuError: QEMU does not emulate a requested CPU.
    """
    sysroot = Sysroot(cache_dir)
    sysroot.ensure(find_qemu(qemu), rebuild=rebuild)
    emulator = Emulator(sysroot, qemu)
    cpus = [emulator.probe(spec) for spec in cpu_specs]
    roots = [emulator.cpu_root(cpu) for cpu in cpus]
    for cpu in cpus:
        logger.info(
            "%s: MIDR 0x%08x, %s", cpu.spec, cpu.midr, " ".join(cpu.features)
        )
    return emulator, cpus, roots


def verify_arm(model_dir, options=None, out_dir=None):
    """Check a conversion's artifacts on emulated aarch64; return the report.

    Writes `arm_report.json`, `arm_report.md` and `arm_cosine.png` into
    `out_dir` (default: `model_dir`).

    A run that fails or misses its bar does not raise: it is recorded in
    the report, and `list_failures` lists it.

    Raises:
        SetupError, UnknownCpuError: the emulation cannot run.
        ValueError: bad options or an unusable conversion folder.
    """
    from mfn_tf.model.loading import load_backbone

    options = options or VerifyOptions()
    model_dir = Path(model_dir)
    report, model_io = read_report(model_dir)
    artifacts, notes = select_artifacts(report, model_dir, options.artifacts)
    emulator, cpus, roots = setup_emulation(options.cpus, options.cache_dir, options.qemu)

    keras_path = _keras_model_path(model_dir, model_io, report, options.keras_model)
    model = load_backbone(keras_path)
    face_set = load_face_set(model, options, report)
    blobs = {
        "input": (model_io.get("ncnn") or {}).get("input_blob", "in0"),
        "output": (model_io.get("ncnn") or {}).get("output_blob", "out0"),
    }

    cells = []
    for cpu, root in zip(cpus, roots):
        for artifact in artifacts:
            for setting in select_settings(artifact["runtime"], options.settings):
                cell = Cell(cpu, root, artifact, setting)
                missing = missing_features(cpu, artifact["runtime"], setting)
                if missing:
                    cell.result = {
                        "status": "skipped",
                        "reason": f"{cpu.spec} lacks CPU feature(s) {', '.join(missing)} "
                        "that this setting needs",
                    }
                cells.append(cell)
    pending = [cell for cell in cells if not cell.result]

    with tempfile.TemporaryDirectory(prefix="mfn-tf-arm-") as work:
        work_dir = Path(work)
        faces_path = work_dir / "faces.npy"
        np.save(faces_path, face_set.images)
        total = len(pending) * len(face_set.images)
        lock = threading.Lock()
        with tqdm(total=total, desc="emulated aarch64", unit="face", disable=not options.progress) as bar:

            def on_progress(count):
                with lock:
                    bar.update(count)

            def run(cell):
                logger.debug("running %s", cell.label)
                run_cell(emulator, cell, faces_path, work_dir, options.threads, blobs, on_progress)

            with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
                list(pool.map(run, pending))

    results = [score_cell(cell, face_set) for cell in cells]
    arm_report = build_report(
        model_dir=model_dir,
        keras_model=keras_path,
        face_set=face_set,
        emulator=emulator,
        cpus=cpus,
        threads=options.threads,
        results=results,
        notes=notes,
    )
    out_dir = Path(out_dir or model_dir)
    write_reports(out_dir, arm_report)
    plot_cosines(_plot_rows(cells, face_set), out_dir / PLOT_FILE)
    return arm_report


def _plot_rows(cells, face_set):
    """Return `plot_cosines` rows; a run without embeddings keeps its row, empty."""
    rows = {}
    for cell in cells:
        runtime = cell.artifact["runtime"]
        bar = None
        if (runtime, cell.setting) in runner.FP32_SETTINGS:
            bar = PARITY_BARS[cell.artifact["precision"]]
        embeddings = cell.result.get("embeddings")
        cosines = None
        if embeddings is not None:
            cosines = cosine_similarities(face_set.reference, embeddings)
        label = f"{cell.artifact['name']} {cell.setting}"
        rows.setdefault(cell.cpu.spec, []).append((label, cosines, bar))
    return rows
