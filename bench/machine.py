"""Describe the machine a host benchmark runs on.

Latency figures mean little without the CPU, the number of cores the
process may use, the library versions and how busy the machine was, so
every report carries them. Works on Linux (x86 and ARM boards such as a
Raspberry Pi or an RK3588) and macOS.
"""

import os
import platform
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Distributions whose versions decide the figures.
LIBRARIES = ("numpy", "tensorflow", "keras", "ai-edge-litert", "onnxruntime", "ncnn")


def library_versions(names=LIBRARIES):
    """Return `{distribution: version}`, "not installed" where absent."""
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cpuinfo_fields(text):
    fields = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator and value.strip():
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model_from_cpuinfo(text):
    """Return the CPU model named in Linux's `/proc/cpuinfo`, or None.

    x86 kernels print "model name"; ARM kernels often print only "CPU
    part", sometimes "Hardware" (the SoC) or "Model" (the board, e.g.
    "Raspberry Pi 4 Model B Rev 1.4").
    """
    fields = _cpuinfo_fields(text)
    for key in ("model name", "Model", "Hardware", "cpu model", "uarch"):
        if key in fields:
            return fields[key]
    return None


def count_physical_cores(text):
    """Return the number of distinct (physical id, core id) pairs, or None."""
    cores = set()
    physical = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or None


def _run_quietly(command):
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _lscpu_model():
    output = _run_quietly(["lscpu"])
    for line in (output or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip() != "-":
            return value.strip()
    return None


def cpu_model():
    """Return a human-readable CPU model for Linux or macOS."""
    if platform.system() == "Darwin":
        return _run_quietly(["sysctl", "-n", "machdep.cpu.brand_string"]) or platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    model = cpu_model_from_cpuinfo(cpuinfo.read_text()) if cpuinfo.is_file() else None
    board = Path("/proc/device-tree/model")
    if model is None and board.is_file():
        model = board.read_text().strip("\x00\n ")
    return model or _lscpu_model() or platform.processor() or platform.machine()


def usable_cores():
    """Return the number of cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_host():
    """Return the facts about this machine that a benchmark report states."""
    cpuinfo = Path("/proc/cpuinfo")
    physical = count_physical_cores(cpuinfo.read_text()) if cpuinfo.is_file() else None
    if physical is None and platform.system() == "Darwin":
        output = _run_quietly(["sysctl", "-n", "hw.physicalcpu"])
        physical = int(output) if output and output.isdigit() else None
    return {
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable_cores(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "load_average_start": load_average(),
    }


def _memory_gib():
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    output = _run_quietly(["sysctl", "-n", "hw.memsize"])
    return round(int(output) / 2**30, 1) if output and output.isdigit() else None


def load_average():
    """Return the 1, 5 and 15 minute load averages, or None on Windows."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(value, 2) for value in os.getloadavg()]
