"""One emulated run per CPU, artifact and runtime setting, and its figures.

Each run is its own emulated process, so a runtime that stops with an
illegal instruction on one CPU loses only that run.
"""

import json
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.arm import runner
from converters.arm.metrics import decision_changes, embedding_agreement, pair_distances
from converters.parity import PARITY_BARS

STDERR_TAIL_LINES = 15


@dataclass
class Cell:
    """One emulated run: a CPU, an artifact and a runtime setting."""

    cpu: object
    root: Path
    artifact: dict
    setting: str
    result: dict = field(default_factory=dict)

    @property
    def label(self):
        return f"{self.cpu.spec} / {self.artifact['name']} / {self.setting}"


def missing_features(cpu, runtime, setting):
    return [
        feature
        for feature in runner.SETTING_REQUIREMENTS.get((runtime, setting), ())
        if not cpu.has(feature)
    ]


def _describe_exit(returncode):
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _stderr_tail(path):
    lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    # LiteRT logs its accelerator registry at INFO level on every start.
    lines = [line for line in lines if not line.startswith("INFO:")]
    return "\n".join(lines[-STDERR_TAIL_LINES:])


def run_cell(emulator, cell, faces_path, work_dir, threads, blobs, on_progress):
    """Run one cell's emulated process; store status and embeddings in `cell.result`."""
    stem = f"{cell.root.name}-{Path(cell.artifact['name']).name}-{cell.setting}"
    job = {
        "runtime": cell.artifact["runtime"],
        "files": cell.artifact["paths"],
        "setting": cell.setting,
        "threads": threads,
        "faces": str(faces_path),
        "output": str(work_dir / f"{stem}.npy"),
        "ncnn_blobs": blobs,
    }
    job_path = work_dir / f"{stem}.json"
    job_path.write_text(json.dumps(job))
    stderr_path = work_dir / f"{stem}.stderr"
    command = emulator.command(cell.root, [str(Path(runner.__file__).resolve()), str(job_path)])

    outcome = None
    with open(stderr_path, "w") as stderr:
        try:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=emulator.environment(cell.cpu.spec),
            )
        except OSError as error:
            cell.result = {"status": "failed", "error": f"cannot start {command[0]}: {error}"}
            return
        for line in process.stdout:
            if line.startswith("progress "):
                on_progress(1)
            elif line.startswith("result "):
                outcome = json.loads(line[len("result "):])
        returncode = process.wait()

    if returncode != 0 or outcome is None:
        cell.result = {
            "status": "failed",
            "error": f"the emulated runner stopped ({_describe_exit(returncode)}):\n"
            + _stderr_tail(stderr_path),
        }
        return
    if outcome["status"] == "skipped":
        cell.result = {"status": "skipped", "reason": outcome["reason"]}
        return
    cell.result = {
        "status": "ok",
        "runtime_info": outcome["info"],
        "embeddings": np.load(job["output"]),
    }


def score_cell(cell, face_set):
    """Return the report entry of a cell, with its figures against the Keras embeddings."""
    runtime, precision = cell.artifact["runtime"], cell.artifact["precision"]
    judged = (runtime, cell.setting) in runner.FP32_SETTINGS
    entry = {
        "cpu": cell.cpu.spec,
        "artifact": cell.artifact["name"],
        "runtime": runtime,
        "precision": precision,
        "setting": cell.setting,
        "judged": judged,
        "bar": PARITY_BARS[precision] if judged else None,
    }

    result = dict(cell.result)
    embeddings = result.pop("embeddings", None)
    entry.update(result)
    if embeddings is None:
        return entry
    if embeddings.shape != face_set.reference.shape:
        entry["status"] = "failed"
        entry["error"] = (
            f"the runtime returned embeddings of shape {embeddings.shape}; the Keras "
            f"model's are {face_set.reference.shape}"
        )
        cell.result.pop("embeddings")
        return entry

    entry.update(embedding_agreement(face_set.reference, embeddings))
    entry["meets_bar"] = bool(entry["min_cosine"] >= entry["bar"]) if judged else None
    if face_set.pair_indices is not None:
        entry["decisions"] = decision_changes(
            pair_distances(face_set.reference, face_set.pair_indices),
            pair_distances(embeddings, face_set.pair_indices),
            face_set.issame,
            face_set.threshold,
        )
    return entry


