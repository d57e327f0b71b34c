"""Parse the console output of the on-device benchmark tools.

- ncnn's `benchncnn` (`benchmark/benchncnn.cpp` in Tencent/ncnn) prints its
  settings (`loop_count = 8`, `num_threads = 4`, ...) and one line per
  model, `<name>  min = 28.10  max = 30.22  avg = 28.90`, in milliseconds,
  all to stderr. An unreadable `.param` makes ncnn print
  `fopen <path> failed` and benchncnn still prints a timing line for the
  empty network, so the error lines are checked as well as the result.
- TensorFlow Lite's `benchmark_model` prefixes every line with `INFO:`,
  `WARN:` or `ERROR:`. After each of its two phases (warm-up, then the
  timed runs) it prints the per-run statistics in microseconds,
  `count=50 first=.. curr=.. min=.. max=.. avg=.. std=..` (newer builds
  add `p5=.. median=.. p95=..`), then a summary line
  `Inference timings in us: Init: .., First inference: .., Warmup (avg):
  .., Inference (avg): ..` and, where supported, `Memory footprint delta
  from the start of the tool (MB): init=.. overall=..`.
- toybox `time -v` (Android's `toybox time`) prints `Max RSS (KiB): N`
  among other resource figures, to stderr.
"""

import re
from dataclasses import dataclass, field

from bench.errors import ToolOutputError

_BENCHNCNN_RESULT = re.compile(
    r"^\s*(?P<name>\S+)\s+min =\s*(?P<min>[\d.]+)\s+max =\s*(?P<max>[\d.]+)"
    r"\s+avg =\s*(?P<avg>[\d.]+)\s*$"
)
_BENCHNCNN_SETTING = re.compile(
    r"^(?P<key>loop_count|num_threads|powersave|gpu_device|cooling_down) = (?P<value>-?\d+)\s*$"
)
# Messages that ncnn and benchncnn print for an unusable model or argument.
_NCNN_ERRORS = re.compile(
    r"fopen .* failed|network graph not ready|input tensor shape empty|"
    r"unrecognized arg|not exists or registered|load_param .* failed|"
    r"parse .* failed|param is too old|find_blob_index_by_name .* failed|"
    r"unsupported input shape|Segmentation fault|Aborted"
)

_TFLITE_PREFIX = re.compile(r"^(INFO|WARN|WARNING|ERROR|FATAL): ?")
_TFLITE_PHASE = re.compile(r"Running benchmark for at least (\d+) iterations")
_TFLITE_STAT = re.compile(r"^count=\d+")
_TFLITE_SUMMARY = re.compile(
    r"Inference timings in us: Init: (?P<init>[\d.e+]+), First inference: (?P<first>[\d.e+]+), "
    r"Warmup \(avg\): (?P<warmup>[\d.e+]+|nan), Inference \(avg\): (?P<inference>[\d.e+]+)"
)
_TFLITE_FOOTPRINT = re.compile(
    r"Memory footprint delta from the start of the tool \(MB\): "
    r"init=(?P<init>[\d.e+-]+) overall=(?P<overall>[\d.e+-]+)"
)
_TFLITE_THREADS = re.compile(r"^Num threads: \[(-?\d+)\]")
_TFLITE_XNNPACK = re.compile(
    r"Explicitly applied XNNPACK delegate, and the model graph will be "
    r"(?P<coverage>completely|partially) executed by the delegate"
    r"(?: w/ (?P<kernels>\d+) delegate kernels)?"
)

_TOYBOX_MAX_RSS = re.compile(r"^Max RSS \(KiB\):\s*(\d+)\s*$", re.MULTILINE)
_TOYBOX_TIME_LINE = re.compile(
    r"^(Real|User|System) time \(s\):|^Max RSS \(KiB\):|^(Major|Minor) faults:|"
    r"^File system (inputs|outputs):|^(Voluntary|Involuntary) context switches:"
)


@dataclass
class ToolTiming:
    """Per-image latency of one tool run, in milliseconds.

    `median_ms` is None where the tool does not print a median (benchncnn,
    and benchmark_model builds without percentiles).
    """

    min_ms: float
    max_ms: float
    avg_ms: float
    count: int
    median_ms: float | None = None
    details: dict = field(default_factory=dict)


def tool_tail(text, lines=15):
    """Return the last `lines` lines of a tool's output, without `time -v`'s report."""
    kept = [line for line in text.strip().splitlines() if not _TOYBOX_TIME_LINE.match(line)]
    return "\n".join(kept[-lines:])


def parse_benchncnn(text, name, expected=None, source="benchncnn output"):
    """Return the timing of model `name` from benchncnn's output.

    Args:
        text: everything benchncnn printed (stdout and stderr together).
        name: the model name as benchncnn prints it, which is the
            `param=` value for a user model.
        expected: settings that must appear as benchncnn echoes them, e.g.
            `{"num_threads": 4, "loop_count": 50}`; a mismatch means the
            binary ignored an argument.
        source: what to call the output in an error (a log file name).

    Raises:
        ToolOutputError: an ncnn error line, no result line for `name`, or
            a setting that differs from `expected`.
    """
    settings = {}
    result = None
    for line in text.splitlines():
        setting = _BENCHNCNN_SETTING.match(line.strip())
        if setting:
            settings[setting["key"]] = int(setting["value"])
            continue
        match = _BENCHNCNN_RESULT.match(line)
        if match and match["name"] == name:
            result = match
    if result is None:
        raise ToolOutputError(
            f"{source}: benchncnn printed no result line for {name!r}. Older "
            "benchncnn builds ignore `param=` and `shape=` and run only their "
            "built-in model list; build benchncnn from a current ncnn (see "
            f"docs/android.md). Last lines:\n{tool_tail(text)}"
        )
    for line in text.splitlines():
        if _NCNN_ERRORS.search(line):
            raise ToolOutputError(
                f"{source}: benchncnn reported an error: {line.strip()!r}. "
                f"Last lines:\n{tool_tail(text)}"
            )
    for key, value in (expected or {}).items():
        if key in settings and settings[key] != value:
            raise ToolOutputError(
                f"{source}: benchncnn ran with {key} = {settings[key]}, but "
                f"{value} was requested"
            )
    return ToolTiming(
        min_ms=float(result["min"]),
        max_ms=float(result["max"]),
        avg_ms=float(result["avg"]),
        count=settings.get("loop_count", 0),
        details={"settings": settings},
    )


def _parse_stat_line(line):
    """Parse `count=.. first=.. min=..` (or `count=N curr=X(all same)`)."""
    values = {}
    for token in line.replace("(all same)", "").split():
        key, _, value = token.partition("=")
        if value:
            values[key] = float(value)
    if "min" not in values:
        # Every run took the same time: only `curr` is printed.
        for key in ("min", "max", "avg"):
            values[key] = values["curr"]
    return values


def parse_benchmark_model(text, expected_threads=None, source="benchmark_model output"):
    """Return the timed-phase latency from TFLite benchmark_model's output.

    The statistics come from the line after the last "Running benchmark
    for at least N iterations", which starts the timed phase. The first
    such line starts the warm-up.

    Raises:
        ToolOutputError: an `ERROR:`/`FATAL:` line, no summary line, or a
            thread count other than `expected_threads`.
    """
    lines = [line.rstrip() for line in text.splitlines()]
    bodies = []
    for line in lines:
        prefix = _TFLITE_PREFIX.match(line)
        if prefix and prefix.group(1) in ("ERROR", "FATAL"):
            raise ToolOutputError(
                f"{source}: benchmark_model reported an error: {line.strip()!r}. "
                f"Last lines:\n{tool_tail(text)}"
            )
        bodies.append(_TFLITE_PREFIX.sub("", line).strip())

    summary = None
    for body in bodies:
        summary = _TFLITE_SUMMARY.search(body) or summary
    if summary is None:
        raise ToolOutputError(
            f"{source}: benchmark_model printed no 'Inference timings in us' "
            f"line; the run did not finish. Last lines:\n{tool_tail(text)}"
        )

    stats = None
    phases = [index for index, body in enumerate(bodies) if _TFLITE_PHASE.search(body)]
    if phases:
        for body in bodies[phases[-1] + 1 :]:
            if _TFLITE_STAT.match(body):
                stats = _parse_stat_line(body)
                break
    if stats is None:
        raise ToolOutputError(
            f"{source}: benchmark_model printed no statistics line "
            f"(count=.. min=.. max=..) for its timed runs. Last lines:\n{tool_tail(text)}"
        )

    details = {"init_us": float(summary["init"]), "first_inference_us": float(summary["first"])}
    for body in bodies:
        threads = _TFLITE_THREADS.match(body)
        if threads:
            details["num_threads"] = int(threads.group(1))
        footprint = _TFLITE_FOOTPRINT.search(body)
        if footprint:
            details["footprint_overall_mb"] = float(footprint["overall"])
        xnnpack = _TFLITE_XNNPACK.search(body)
        if xnnpack:
            details["xnnpack"] = xnnpack["coverage"]
            if xnnpack["kernels"]:
                details["xnnpack_kernels"] = int(xnnpack["kernels"])
    if expected_threads is not None and details.get("num_threads", expected_threads) != expected_threads:
        raise ToolOutputError(
            f"{source}: benchmark_model ran with {details['num_threads']} threads, "
            f"but {expected_threads} were requested"
        )
    median = stats.get("median")
    return ToolTiming(
        min_ms=stats["min"] / 1000.0,
        max_ms=stats["max"] / 1000.0,
        avg_ms=stats["avg"] / 1000.0,
        count=int(stats["count"]),
        median_ms=median / 1000.0 if median is not None else None,
        details=details,
    )


def parse_max_rss_kib(text):
    """Return toybox `time -v`'s `Max RSS (KiB)`, or None if absent."""
    match = _TOYBOX_MAX_RSS.search(text)
    return int(match.group(1)) if match else None
