"""Benchmark every converted artifact side by side on this machine.

Each artifact runs in its own worker process (`bench.worker`) per thread
count, so its peak memory is what the OS counts for that process and a
native crash stops only that worker. For each thread count the workers
load their model and warm up one after another. Then the timed blocks
alternate between artifacts, round after round, and each round starts one
artifact later. A machine that speeds up or slows down during the run so
affects all artifacts alike. Idle workers wait on a pipe and use no CPU,
and a short pause after every block lets the previous runtime's spinning
threads go to sleep before the next one is timed.
"""

import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.artifacts import host_artifacts, input_size, read_conversion
from bench.errors import BenchmarkError
from bench.face import benchmark_face
from bench.machine import describe_host, load_average, usable_cores
from bench.report import write_report
from bench.results import BenchmarkResult, Measurement, summarize

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Pause after each timed block. onnxruntime, XNNPACK and OpenMP keep their
# threads spinning for a few milliseconds after a run; 0.2 s is far longer.
BLOCK_PAUSE_S = 0.2

# Maximum wait for a worker's reply. Loading TensorFlow on a busy machine
# takes tens of seconds and a block of images far less, so a worker that
# stays silent longer is taken to hang.
WORKER_TIMEOUT_S = 600

# A setting that takes a few seconds per artifact, for `make demo`.
DEMO_SETTINGS = {"threads": "1", "repeats": 2, "iterations": 10, "warmup": 3}


def resolve_threads(spec, cores=None):
    """Parse "1,2,all" into sorted distinct thread counts; "all" is every usable core."""
    cores = cores or usable_cores()
    counts = []
    for item in str(spec).split(","):
        item = item.strip()
        if item == "all":
            counts.append(cores)
        elif item.isdigit() and int(item) > 0:
            counts.append(int(item))
        else:
            raise BenchmarkError(
                f"invalid thread count {item!r} in {spec!r}; use positive integers "
                "or 'all', e.g. 1,2,all"
            )
    return sorted(set(counts))


class Worker:
    """One `bench.worker` process: an artifact loaded at one thread count."""

    def __init__(self, artifact, threads, face_path, warmup, model_io, log_path):
        self.artifact = artifact
        self.threads = threads
        self.log_path = log_path
        spec = {
            "runtime": artifact.runtime,
            "precision": artifact.precision,
            "files": [str(path) for path in artifact.files],
            "threads": threads,
            "warmup": warmup,
            "face": str(face_path),
            "model_io": model_io,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.ready = self._receive()

    @property
    def name(self):
        return f"{self.artifact.label} ({self.threads} thread{'s' if self.threads > 1 else ''})"

    def _failure(self, reason):
        self.process.wait(timeout=30)
        self._log.flush()
        tail = "\n".join(Path(self.log_path).read_text(errors="replace").strip().splitlines()[-20:])
        return BenchmarkError(
            f"the worker for {self.name} {reason} (exit status "
            f"{self.process.returncode}); its log {self.log_path} ends with:\n{tail}"
        )

    def _receive(self):
        ready, _, _ = select.select([self.process.stdout], [], [], WORKER_TIMEOUT_S)
        if not ready:
            self.process.kill()
            raise self._failure(f"sent no reply within {WORKER_TIMEOUT_S} s and was killed")
        line = self.process.stdout.readline()
        if not line:
            raise self._failure("exited without a reply")
        message = json.loads(line)
        if "error" in message:
            raise self._failure(f"failed: {message['error']}")
        return message

    def _send(self, request):
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._failure("exited") from None
        return self._receive()

    def run(self, iterations):
        return self._send({"command": "run", "iterations": iterations})["latencies_ms"]

    def stop(self):
        reply = self._send({"command": "stop"})
        self.process.wait(timeout=60)
        self._log.close()
        return reply

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _measure_thread_count(artifacts, threads, face_path, settings, model_io, log_dir, progress):
    """Run every artifact at `threads`; return its measurements."""
    workers = []
    try:
        for artifact in artifacts:
            progress.set_postfix_str(f"loading {artifact.label}, {threads} threads")
            log_path = log_dir / f"worker_{artifact.name}_t{threads}.log"
            workers.append(
                Worker(artifact, threads, face_path, settings["warmup"], model_io, log_path)
            )
        latencies = {worker.artifact.name: [] for worker in workers}
        for round_index in range(settings["repeats"]):
            shift = round_index % len(workers)
            for worker in workers[shift:] + workers[:shift]:
                progress.set_postfix_str(f"{worker.name}, round {round_index + 1}")
                latencies[worker.artifact.name] += worker.run(settings["iterations"])
                progress.update(1)
                time.sleep(BLOCK_PAUSE_S)
        measurements = []
        for worker in workers:
            stopped = worker.stop()
            median, low, high = summarize(latencies[worker.artifact.name])
            measurements.append(
                Measurement(
                    artifact=worker.artifact.name,
                    label=worker.artifact.label,
                    runtime=worker.artifact.runtime,
                    precision=worker.artifact.precision,
                    threads=threads,
                    samples_ms=latencies[worker.artifact.name],
                    median_ms=median,
                    min_ms=low,
                    max_ms=high,
                    peak_rss_mib=stopped["peak_rss_mib"],
                    details={
                        "load_s": round(worker.ready["load_s"], 3),
                        "baseline_rss_mib": round(worker.ready["baseline_rss_mib"], 1),
                        **worker.ready["details"],
                    },
                )
            )
        return measurements
    finally:
        for worker in workers:
            worker.kill()


def _runtime_notes(artifacts):
    runtimes = {(artifact.runtime, artifact.precision) for artifact in artifacts}
    notes = []
    if any(runtime == "litert" for runtime, _ in runtimes):
        notes.append(
            "TFLite runs through LiteRT's interpreter (ai-edge-litert) with its default "
            "CPU delegate, XNNPACK."
        )
    if ("keras", "fp32") in runtimes:
        notes.append("Keras runs one traced tf.function without XLA, with 1 inter-op thread.")
    if ("ncnn", "fp16") in runtimes:
        notes.append(
            "ncnn fp16 stores fp16 weights; on CPUs without fp16 arithmetic (x86) ncnn "
            "converts them and computes in fp32."
        )
    return notes


def run_host_benchmark(
    model_dir,
    out_dir=None,
    threads="1,2,all",
    repeats=5,
    iterations=20,
    warmup=10,
    face=None,
    face_dir=None,
    keras_model=None,
    only=None,
    unfolded=True,
    write=True,
):
    """Benchmark the artifacts of a converter output folder on this machine.

    Args:
        model_dir: the `--out` folder of `python cli.py convert`.
        out_dir: where the report, the worker logs and the unfolded ncnn
            model go; default `model_dir/bench`.
        threads: thread counts, e.g. "1,2,all" ("all": every usable core).
        repeats: rounds; every artifact runs once per round, alternating.
        iterations: timed images per artifact per round.
        warmup: untimed images per artifact after loading.
        face, face_dir: the input face (see `bench.face.benchmark_face`).
        keras_model: the model to export the unfolded ncnn model from,
            where report.json's `source_model` is not loadable here.
        only: artifact names to run (e.g. ["ncnn_fp32", "tflite_int8"]),
            or None for all.
        unfolded: also measure the ncnn model without BatchNorm folding.
        write: write `host_benchmark.{md,csv,json,png}` into `out_dir`.

    Returns:
        A `BenchmarkResult` with target "host". Its `settings` and `notes`
        describe how it was measured.
    """
    if repeats < 1 or iterations < 1 or warmup < 0:
        raise BenchmarkError(
            f"repeats ({repeats}) and iterations ({iterations}) must be at least 1, "
            f"warmup ({warmup}) at least 0"
        )
    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir else model_dir / "bench"
    counts = resolve_threads(threads)
    machine = describe_host()

    # Read the conversion first, so a folder without one gets no bench/ folder.
    _, model_io = read_conversion(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    face_array, face_description = benchmark_face(face, face_dir, input_size(model_io))
    artifacts, model_io, notes = host_artifacts(
        model_dir, out_dir, face_array, keras_model=keras_model, only=only, unfolded=unfolded
    )
    if not artifacts:
        raise BenchmarkError(f"no artifact to benchmark in {model_dir}")

    log_dir = out_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    settings = {"repeats": repeats, "iterations": iterations, "warmup": warmup}
    measurements = []
    with tempfile.TemporaryDirectory(prefix="mfn-bench-") as work:
        face_path = Path(work) / "face.npy"
        np.save(face_path, face_array)
        total = len(counts) * repeats * len(artifacts)
        with tqdm(total=total, desc="host benchmark", unit="block") as progress:
            for count in counts:
                measurements += _measure_thread_count(
                    artifacts, count, face_path, settings, model_io, log_dir, progress
                )
    machine["load_average_end"] = load_average()

    baseline = min(m.details["baseline_rss_mib"] for m in measurements)
    partitioned = {
        m.label: m.details["xnnpack_partitions"]
        for m in measurements
        if m.details.get("xnnpack_partitions", 1) > 1
    }
    for label, partitions in partitioned.items():
        notes.append(
            f"{label} runs as {partitions} XNNPACK partitions: the ops between them run on "
            "TFLite's built-in kernels, with a hand-over at every boundary."
        )
    result = BenchmarkResult(
        target="host",
        machine=machine,
        settings={
            "Input": face_description,
            "Threads": ", ".join(map(str, counts)),
            "Runs": (
                f"{warmup} warm-up images per artifact after loading, then {repeats} "
                f"rounds of {iterations} timed images; artifacts alternate within "
                "each round, and each block starts with one untimed image"
            ),
            "Timing": (
                "wall time of one embed call per image through the runtime's Python "
                "binding, including its input copy and layout change"
            ),
            "Peak memory": (
                "peak resident set size (VmHWM on Linux, ru_maxrss on macOS) of each "
                "artifact's own worker process: Python, numpy, the runtime library and "
                f"the model; the workers peaked at {baseline:.0f} MiB before loading "
                "any runtime"
            ),
        },
        measurements=measurements,
        notes=notes + _runtime_notes(artifacts),
    )
    if write:
        write_report(result, out_dir, "host_benchmark")
    return result
