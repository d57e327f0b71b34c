"""Benchmark measurements and the figures derived from them.

Host and Android runs produce the same `BenchmarkResult`, so one report
writer serves both. The derived figures are small pure functions: the
summary of a latency sample, the fastest artifact at each thread count,
and the BatchNorm fusion ratio (folded ncnn over unfolded ncnn).
"""

import statistics
from dataclasses import asdict, dataclass, field

# Artifact names of the two ncnn models whose ratio measures BatchNorm
# folding: the converter's fp32 model and the same model exported with
# every BatchNorm as its own layer.
FOLDED_NCNN = "ncnn_fp32"
UNFOLDED_NCNN = "ncnn_fp32_unfolded"


@dataclass
class Measurement:
    """Latency and memory of one artifact at one thread count.

    Attributes:
        artifact: the artifact's name, e.g. "tflite_int8".
        label: the name shown in tables, e.g. "TFLite int8 (XNNPACK)".
        runtime: "keras", "litert", "onnxruntime" or "ncnn".
        precision: "fp32", "fp16" or "int8".
        threads: the thread count the runtime was given.
        samples_ms: the latencies the summary is computed from: every
            timed image on the host, each run's average on Android.
        median_ms, min_ms, max_ms: per-image latency in milliseconds.
        peak_rss_mib: the process's peak resident set size in MiB, as the
            OS reports it; None where it could not be measured.
        details: runtime-specific facts (load time, XNNPACK coverage...).
    """

    artifact: str
    label: str
    runtime: str
    precision: str
    threads: int
    samples_ms: list
    median_ms: float
    min_ms: float
    max_ms: float
    peak_rss_mib: float | None = None
    details: dict = field(default_factory=dict)


@dataclass
class BenchmarkResult:
    """Everything one benchmark run measured, and where and how."""

    target: str  # "host" or "android"
    machine: dict
    settings: dict
    measurements: list
    notes: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def summarize(samples_ms):
    """Return `(median, min, max)` of a non-empty latency sample."""
    if not samples_ms:
        raise ValueError("cannot summarize an empty latency sample")
    return statistics.median(samples_ms), min(samples_ms), max(samples_ms)


def thread_counts(measurements):
    return sorted({measurement.threads for measurement in measurements})


def fastest_by_threads(measurements):
    """Return `{threads: measurement}` with the lowest median per thread count."""
    fastest = {}
    for measurement in measurements:
        best = fastest.get(measurement.threads)
        if best is None or measurement.median_ms < best.median_ms:
            fastest[measurement.threads] = measurement
    return dict(sorted(fastest.items()))


def fusion_ratios(measurements, folded=FOLDED_NCNN, unfolded=UNFOLDED_NCNN):
    """Return `{threads: (folded median, unfolded median, ratio)}`.

    The ratio is folded over unfolded median latency: 0.9 means folding
    BatchNorm into the convolutions saved 10%. Thread counts that lack
    either model are left out. `fusion_min_ratios` gives the same ratio of
    the fastest images.
    """
    by_key = {(m.artifact, m.threads): m for m in measurements}
    ratios = {}
    for threads in thread_counts(measurements):
        folded_run = by_key.get((folded, threads))
        unfolded_run = by_key.get((unfolded, threads))
        if folded_run and unfolded_run:
            ratios[threads] = (
                folded_run.median_ms,
                unfolded_run.median_ms,
                folded_run.median_ms / unfolded_run.median_ms,
            )
    return ratios


def fusion_min_ratios(measurements, folded=FOLDED_NCNN, unfolded=UNFOLDED_NCNN):
    """Return `{threads: folded min / unfolded min}`.

    On a busy machine the medians include time the OS gave to other
    processes; the fastest image of each model is the least disturbed.
    """
    by_key = {(m.artifact, m.threads): m for m in measurements}
    return {
        threads: by_key[(folded, threads)].min_ms / by_key[(unfolded, threads)].min_ms
        for threads in thread_counts(measurements)
        if (folded, threads) in by_key and (unfolded, threads) in by_key
    }
