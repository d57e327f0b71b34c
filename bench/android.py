"""Benchmark the ncnn and TFLite artifacts on one Android phone over adb.

The phone runs the projects' own command-line benchmarks, which the user
downloads or builds (docs/android.md lists the files):

- ncnn's `benchncnn [loops] [threads] [powersave] -1 0 param=X shape=[W,H,C]`,
  which loads only the `.param` (zero weights), warms up 8 runs, then
  times `loops` runs and prints min, max and average;
- TFLite's `benchmark_model --graph=X --num_threads=T --use_xnnpack=true
  --warmup_runs=8 --num_runs=loops --min_secs=0 --warmup_min_secs=0`,
  the same warm-up and timed run counts.

Both run with the same thread counts and loops, after the same cool-down
sleep, on the same cores. benchncnn selects the cores with its power-save
mode: 0 all, 1 little, 2 big cores, where a core is big when its maximum
frequency is at least the midpoint of the slowest and fastest core's
(ncnn's rule). benchmark_model runs under `taskset` with the mask of
those cores. Runs alternate between artifacts, round after round. Each
run's output goes to a log file on the phone, which is pulled back and
parsed before the next run starts. Peak memory is toybox `time -v`'s Max
RSS, where the phone has toybox `time`.
"""

import logging
import shlex
from pathlib import Path

from tqdm import tqdm

from bench.adb import Adb, choose_device, find_adb, list_devices
from bench.artifacts import android_artifacts
from bench.errors import AdbError, BenchmarkError, ToolOutputError
from bench.face import benchmark_face
from bench.results import BenchmarkResult, Measurement, summarize
from bench.tool_output import (
    parse_benchmark_model,
    parse_benchncnn,
    parse_max_rss_kib,
    tool_tail,
)

logger = logging.getLogger(__name__)

REMOTE_DIR = "/data/local/tmp/mfn_tf_bench"
# Warm-up runs of both tools: benchncnn's fixed count on the CPU.
WARMUP_RUNS = 8
# A run may take long on a slow phone with many loops; beyond this it hangs.
RUN_TIMEOUT_S = 1800
POWERSAVE_NAMES = {0: "all cores", 1: "little cores", 2: "big cores"}

BINARY_HINTS = {
    "benchncnn": (
        "ncnn's releases do not ship benchncnn; build it for arm64-v8a with the "
        "Android NDK as docs/android.md shows (cmake -DNCNN_BUILD_BENCHMARK=ON)"
    ),
    "benchmark_model": (
        "download android_aarch64_benchmark_model from the TensorFlow Lite "
        "'Performance measurement' page, as docs/android.md shows"
    ),
}

_ELF_MAGIC = b"\x7fELF"
_EM_AARCH64 = 183

# One line per core: "cpuN MAX_KHZ GOVERNOR", "-" where a file is missing.
CPU_TABLE_COMMAND = (
    "for cpu in /sys/devices/system/cpu/cpu[0-9]*; do "
    'echo "${cpu##*/} $(cat $cpu/cpufreq/cpuinfo_max_freq 2>/dev/null || echo -) '
    '$(cat $cpu/cpufreq/scaling_governor 2>/dev/null || echo -)"; done'
)


# e_machine values of the ELF header (System V ABI) that a wrong download shows.
_ELF_MACHINES = {3: "x86", 40: "32-bit ARM (armeabi-v7a)", 62: "x86-64", 183: "aarch64"}


def check_android_binary(path, tool):
    """Return `path` if it is an aarch64 ELF executable, else raise.

    Raises:
        BenchmarkError: the file is missing, or is not an arm64 binary
            (a host build, a zip, a 32-bit build).
    """
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{tool} not found at {path}: {BINARY_HINTS[tool]}.")
    header = path.read_bytes()[:20]
    if header[:4] != _ELF_MAGIC:
        raise BenchmarkError(
            f"{path} is not an executable (no ELF header); pass the {tool} binary "
            f"itself, not an archive: {BINARY_HINTS[tool]}."
        )
    machine = int.from_bytes(header[18:20], "little")
    if header[4] != 2 or machine != _EM_AARCH64:
        bits = "64" if header[4] == 2 else "32"
        built_for = _ELF_MACHINES.get(machine, f"machine type {machine}")
        raise BenchmarkError(
            f"{path} is a {bits}-bit ELF binary for {built_for}, not aarch64 "
            f"(arm64-v8a); {BINARY_HINTS[tool]}."
        )
    return path


def parse_getprop(text):
    """Return `{property: value}` from `getprop` output (`[key]: [value]`)."""
    properties = {}
    for line in text.splitlines():
        key, separator, value = line.partition("]: [")
        if separator and key.startswith("[") and value.endswith("]"):
            properties[key[1:]] = value[:-1]
    return properties


def parse_cpu_table(text):
    """Return `[(cpu index, max kHz or None, governor or None), ...]`."""
    cpus = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[0].startswith("cpu") or not parts[0][3:].isdigit():
            continue
        max_khz = int(parts[1]) if parts[1].isdigit() else None
        governor = None if parts[2] == "-" else parts[2]
        cpus.append((int(parts[0][3:]), max_khz, governor))
    return sorted(cpus)


def core_sets(cpus):
    """Split cores into little and big by ncnn's rule.

    A core is little when its maximum frequency is below the midpoint of
    the lowest and highest maximum frequency. When all cores reach the
    same frequency, all are big. Cores without a frequency count as big.

    Returns:
        `{0: all cores, 1: little cores, 2: big cores}`, keyed by the
        power-save mode that selects them.
    """
    everything = [index for index, _, _ in cpus]
    known = [khz for _, khz, _ in cpus if khz]
    if not known or min(known) == max(known):
        return {0: everything, 1: [], 2: everything}
    midpoint = (min(known) + max(known)) // 2
    little = [index for index, khz, _ in cpus if khz and khz < midpoint]
    big = [index for index in everything if index not in little]
    return {0: everything, 1: little, 2: big}


def affinity_mask(cores):
    """Return the hexadecimal CPU mask that `taskset` takes, e.g. "f0"."""
    return format(sum(1 << core for core in cores), "x")


def _cpu_summary(cpus, cpuinfo_fields):
    groups = {}
    for _, khz, _ in cpus:
        groups[khz] = groups.get(khz, 0) + 1
    parts = [
        f"{count} x {khz / 1e6:.2f} GHz" if khz else f"{count} x unknown frequency"
        for khz, count in sorted(groups.items(), key=lambda item: item[0] or 0)
    ]
    summary = f"{len(cpus)} cores: " + ", ".join(parts)
    if "Hardware" in cpuinfo_fields:
        summary += f" ({cpuinfo_fields['Hardware']})"
    return summary


def _cpuinfo_fields(text):
    fields = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator:
            fields.setdefault(key.strip(), value.strip())
    return fields


def describe_device(getprop_text, cpuinfo_text, cpu_table_text):
    """Return the facts about the phone that the report states."""
    properties = parse_getprop(getprop_text)
    fields = _cpuinfo_fields(cpuinfo_text)
    cpus = parse_cpu_table(cpu_table_text)
    governors = sorted({governor for _, _, governor in cpus if governor})
    soc = " ".join(
        value
        for value in (properties.get("ro.soc.manufacturer"), properties.get("ro.soc.model"))
        if value
    )
    features = fields.get("Features", "").split()
    return {
        "manufacturer": properties.get("ro.product.manufacturer", "unknown"),
        "model": properties.get("ro.product.model", "unknown"),
        "soc": soc or properties.get("ro.board.platform") or fields.get("Hardware", "unknown"),
        "board_platform": properties.get("ro.board.platform"),
        "android": properties.get("ro.build.version.release", "unknown"),
        "sdk": properties.get("ro.build.version.sdk"),
        "abi": properties.get("ro.product.cpu.abi", "unknown"),
        "cpu_summary": _cpu_summary(cpus, fields),
        "cpus": [{"cpu": index, "max_khz": khz, "governor": gov} for index, khz, gov in cpus],
        "governor": ", ".join(governors) or "unknown",
        "fp16_arithmetic": "yes" if "asimdhp" in features else "no",
    }


def resolve_android_threads(spec, cores_in_mode):
    """Parse "1,2,all" where "all" is the number of cores in the power-save set."""
    counts = []
    for item in str(spec).split(","):
        item = item.strip()
        if item == "all":
            counts.append(cores_in_mode)
        elif item.isdigit() and int(item) > 0:
            counts.append(int(item))
        else:
            raise BenchmarkError(
                f"invalid thread count {item!r} in {spec!r}; use positive integers "
                "or 'all', e.g. 1,2,all"
            )
    return sorted(set(counts))


def benchncnn_command(param_name, threads, loops, powersave, input_shape):
    """Return benchncnn's argument list for one user model, CPU only."""
    width, height, channels = input_shape
    return [
        "./benchncnn",
        str(loops),
        str(threads),
        str(powersave),
        "-1",  # gpu device: CPU only
        "0",  # benchncnn's own 10 s cool-down; the caller sleeps instead
        f"param={param_name}",
        f"shape=[{width},{height},{channels}]",
    ]


def benchmark_model_command(graph_name, threads, loops):
    """Return benchmark_model's argument list with XNNPACK and fixed run counts."""
    return [
        "./benchmark_model",
        f"--graph={graph_name}",
        f"--num_threads={threads}",
        "--use_xnnpack=true",
        f"--warmup_runs={WARMUP_RUNS}",
        "--warmup_min_secs=0",
        f"--num_runs={loops}",
        "--min_secs=0",
    ]


def run_command(remote_dir, tool_args, log_name, cooldown_s, mask=None, measure_memory=True):
    """Return the device shell command of one timed run, output to `logs/`."""
    prefix = []
    if measure_memory:
        prefix += ["toybox", "time", "-v"]
    if mask:
        prefix += ["taskset", mask]
    tool = " ".join(shlex.quote(part) for part in prefix + tool_args)
    return (
        f"cd {shlex.quote(remote_dir)} && sleep {cooldown_s:g} && {tool} "
        f"> logs/{shlex.quote(log_name)} 2>&1"
    )


def plan_rounds(artifacts, threads, repeats):
    """Return the run order: rounds, then thread counts, then artifacts.

    Each round starts one artifact later than the previous one, so no
    artifact always runs right after the same other one.
    """
    plan = []
    for round_index in range(repeats):
        for count in threads:
            shift = round_index % len(artifacts)
            for artifact in artifacts[shift:] + artifacts[:shift]:
                plan.append((round_index, count, artifact))
    return plan


class AndroidSession:
    """The device side of one Android benchmark: set-up, runs, logs."""

    def __init__(self, adb, remote_dir, log_dir):
        self.adb = adb
        self.remote_dir = remote_dir
        self.log_dir = Path(log_dir)

    def probe_time(self):
        output, status = self.adb.shell("toybox time -v true 2>&1")
        return status == 0 and parse_max_rss_kib(output) is not None

    def prepare(self, files, executables):
        """Create the remote folder and push the tools and model files."""
        logs = shlex.quote(f"{self.remote_dir}/logs")
        self.adb.shell_checked(f"rm -rf {logs} && mkdir -p {logs}", "creating the benchmark folder")
        names = [Path(path).name for path in files]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:
            raise BenchmarkError(f"two files to push share the name {sorted(duplicates)}")
        for path in tqdm(files, desc="adb push", unit="file", leave=False):
            self.adb.push(path, f"{self.remote_dir}/{Path(path).name}")
        targets = " ".join(shlex.quote(f"{self.remote_dir}/{Path(path).name}") for path in executables)
        self.adb.shell_checked(f"chmod 755 {targets}", "making the benchmark tools executable")

    def run(self, command, log_name):
        """Run one timed command; return its pulled log text.

        Raises:
            AdbError: the tool exited with an error; the message has the
                end of its log.
        """
        output, status = self.adb.shell(command, timeout=RUN_TIMEOUT_S)
        local = self.log_dir / log_name
        try:
            self.adb.pull(f"{self.remote_dir}/logs/{log_name}", local)
        except AdbError:
            if status == 0:
                raise
            raise AdbError(
                f"`{command}` exited with status {status} and wrote no log:\n{output.strip()}"
            ) from None
        text = local.read_text(errors="replace")
        if status != 0:
            raise AdbError(
                f"the run logged in {local} exited with status {status}:\n{tool_tail(text)}"
            )
        return text


def _measurement(artifact, threads, timings, rss_kib, details):
    averages = [timing.avg_ms for timing in timings]
    median, _, _ = summarize(averages)
    peak = max(rss_kib) / 1024 if rss_kib else None
    return Measurement(
        artifact=artifact.name,
        label=artifact.label,
        runtime=artifact.runtime,
        precision=artifact.precision,
        threads=threads,
        samples_ms=averages,
        median_ms=median,
        min_ms=min(timing.min_ms for timing in timings),
        max_ms=max(timing.max_ms for timing in timings),
        peak_rss_mib=peak,
        details=details,
    )


def run_android_benchmark(
    model_dir,
    benchncnn,
    benchmark_model,
    out_dir,
    threads="1,2,all",
    loops=50,
    repeats=3,
    powersave=2,
    cooldown_s=10.0,
    serial=None,
    adb_executable="adb",
    remote_dir=REMOTE_DIR,
    keras_model=None,
    only=None,
):
    """Run the ncnn and TFLite artifacts of `model_dir` on an Android phone.

    Args:
        model_dir: the converter's output folder.
        benchncnn, benchmark_model: paths of the arm64 tool binaries.
        out_dir: where the unfolded ncnn model, the pulled logs and the
            report go.
        threads: thread counts, e.g. "1,2,all"; "all" is the number of
            cores in the power-save set.
        loops: timed runs per tool invocation (after 8 warm-up runs).
        repeats: invocations per artifact and thread count, alternating.
        powersave: 0 all cores, 1 little cores, 2 big cores.
        cooldown_s: sleep before every invocation, in seconds.
        keras_model: the Keras model to export the unfolded ncnn model
            from, where report.json does not name it.
        only: artifact names to run, or None for all.

    Returns:
        A `BenchmarkResult` with target "android".
    """
    if powersave not in POWERSAVE_NAMES:
        raise BenchmarkError(f"invalid power-save mode {powersave}; use 0, 1 or 2")
    if loops < 1 or repeats < 1 or cooldown_s < 0:
        raise BenchmarkError("loops and repeats must be at least 1 and the cool-down not negative")
    tools = {
        "benchncnn": check_android_binary(benchncnn, "benchncnn"),
        "benchmark_model": check_android_binary(benchmark_model, "benchmark_model"),
    }
    out_dir = Path(out_dir)
    # The face checks a newly exported unfolded ncnn model on this machine;
    # the phone tools make up their own input.
    face, _ = benchmark_face()
    artifacts, input_size = android_artifacts(
        model_dir, out_dir, face, keras_model=keras_model, only=only
    )

    executable = find_adb(adb_executable)
    adb = Adb(executable, choose_device(list_devices(executable), serial))
    logger.info("benchmarking on device %s", adb.serial)
    machine = describe_device(
        adb.shell_checked("getprop", "reading the device properties"),
        adb.shell_checked("cat /proc/cpuinfo", "reading /proc/cpuinfo"),
        adb.shell_checked(CPU_TABLE_COMMAND, "reading the CPU frequencies"),
    )
    machine["serial"] = adb.serial
    cores = core_sets([(c["cpu"], c["max_khz"], c["governor"]) for c in machine["cpus"]])
    if not cores[powersave]:
        raise BenchmarkError(
            f"power-save mode {powersave} selects {POWERSAVE_NAMES[powersave]}, but "
            "this phone's cores all reach the same frequency; use 0 or 2"
        )
    counts = resolve_android_threads(threads, len(cores[powersave]))
    mask = affinity_mask(cores[powersave]) if powersave else None

    log_dir = out_dir / "android_logs"
    session = AndroidSession(adb, remote_dir, log_dir)
    measure_memory = session.probe_time()
    notes = []
    if not measure_memory:
        notes.append("Peak memory not measured: this phone has no toybox `time`.")
    files = list(tools.values()) + [
        path for artifact in artifacts for path in artifact.device_files
    ]
    session.prepare(files, tools.values())

    timings, rss, details = {}, {}, {}
    plan = plan_rounds(artifacts, counts, repeats)
    for round_index, count, artifact in tqdm(plan, desc="android runs", unit="run"):
        log_name = f"r{round_index + 1:02d}_t{count}_{artifact.name}.txt"
        model_file = Path(artifact.device_files[0]).name
        if artifact.runtime == "ncnn":
            tool_args = benchncnn_command(model_file, count, loops, powersave, (input_size, input_size, 3))
            command = run_command(remote_dir, tool_args, log_name, cooldown_s, None, measure_memory)
        else:
            tool_args = benchmark_model_command(model_file, count, loops)
            command = run_command(remote_dir, tool_args, log_name, cooldown_s, mask, measure_memory)
        text = session.run(command, log_name)
        source = str(log_dir / log_name)
        try:
            if artifact.runtime == "ncnn":
                expected = {"num_threads": count, "loop_count": loops, "powersave": powersave}
                timing = parse_benchncnn(text, model_file, expected=expected, source=source)
            else:
                timing = parse_benchmark_model(text, expected_threads=count, source=source)
        except ToolOutputError as error:
            raise ToolOutputError(f"{error}\nThe device command was: {command}") from None
        key = (artifact, count)
        timings.setdefault(key, []).append(timing)
        kib = parse_max_rss_kib(text)
        if kib is not None:
            rss.setdefault(key, []).append(kib)
        details[key] = {
            name: value for name, value in timing.details.items() if name in ("xnnpack", "xnnpack_kernels")
        }

    measurements = [
        _measurement(artifact, count, runs, rss.get((artifact, count)), details[(artifact, count)])
        for (artifact, count), runs in timings.items()
    ]
    notes += [
        "median: the median of the runs' averages (each run times the loops "
        "after 8 warm-up runs); min and max: over all timed images.",
        "benchncnn loads the .param only and fills the weights with zeros; it "
        "runs every model with fp16 storage and arithmetic where the CPU "
        "supports them (fp16 arithmetic above), so the ncnn fp32 and fp16 "
        "models time alike and only the fp32 .param is run.",
    ]
    for m in measurements:
        coverage = m.details.get("xnnpack")
        if m.runtime == "litert" and coverage != "completely":
            kernels = m.details.get("xnnpack_kernels")
            notes.append(
                f"{m.label}, {m.threads} threads: XNNPACK ran "
                + (f"part of the graph ({kernels} delegate kernels)" if coverage else "none of the graph")
                + "; the rest ran on TFLite's built-in kernels."
            )
    governors = machine["governor"]
    if governors != "performance":
        notes.append(
            f"CPU governor {governors}: clock frequencies follow the load, so "
            "figures vary more than with the performance governor (settable as root)."
        )
    settings = {
        "Tools": f"{benchncnn} (ncnn) and {benchmark_model} (TFLite, with XNNPACK)",
        "Runs": f"{repeats} per artifact and thread count, alternating; {loops} timed loops after {WARMUP_RUNS} warm-up runs each",
        "Cores": f"power-save {powersave} ({POWERSAVE_NAMES[powersave]}: cpu {','.join(map(str, cores[powersave]))})",
        "Cool-down": f"{cooldown_s:g} s before every run",
        "Input": "benchncnn fills its input with 0.01, benchmark_model with random values",
        "Peak memory": "toybox time -v, Max RSS of the tool process" if measure_memory else "not measured",
    }
    return BenchmarkResult(
        target="android",
        machine=machine,
        settings=settings,
        measurements=sorted(measurements, key=lambda m: (m.threads, m.median_ms)),
        notes=notes,
    )
