"""Run the sysroot's Python under QEMU user-mode emulation, per CPU model.

Each CPU gets a small root of its own in the cache folder: symbolic links
to the top-level folders of the shared sysroot and a `proc/cpuinfo` that
describes that CPU (see `cpus.py`). QEMU is given that root with `-L`, so
the emulated program finds its libraries and the right cpuinfo there and
every other path (the model files, the temporary folder) on the host.
"""

import json
import logging
import os
import subprocess
from pathlib import Path

from converters.arm.cpus import PROBE_SCRIPT, CpuModel, folder_name
from converters.arm.sysroot import QEMU_HINT, SetupError, find_qemu, qemu_version

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120


class UnknownCpuError(ValueError):
    """A CPU model that this QEMU does not emulate."""


class Emulator:
    """QEMU's aarch64 user-mode emulator with a ready `Sysroot`."""

    def __init__(self, sysroot, qemu=None):
        if not sysroot.is_ready():
            raise SetupError(
                f"the aarch64 sysroot in {sysroot.cache_dir} is not set up; run "
                "`python cli.py verify-arm --setup-only` (or `make arm-env`)"
            )
        self.sysroot = sysroot
        self.qemu = find_qemu(qemu)
        self.qemu_version = qemu_version(self.qemu)

    def environment(self, cpu_spec):
        """Return the emulated program's environment: the host's is not passed on.

        Host variables such as PYTHONPATH or LD_LIBRARY_PATH name x86 files.
        """
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": str(self.sysroot.site_packages),
            "QEMU_CPU": cpu_spec,
        }

    def command(self, root, arguments):
        """Return the argv that runs the emulated Python with `arguments` under `root`."""
        python = Path(root) / self.sysroot.python.relative_to(self.sysroot.root)
        return [str(self.qemu), "-L", str(root), str(python), *arguments]

    def probe(self, cpu_spec):
        """Return the `CpuModel` that QEMU presents for `cpu_spec`.

        Raises:
            UnknownCpuError: QEMU does not know the model or a property.
            SetupError: the emulated Python fails to start.
        """
        command = self.command(self.sysroot.root, ["-c", PROBE_SCRIPT])
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=self.environment(cpu_spec),
                timeout=PROBE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as error:
            raise SetupError(
                f"probing CPU {cpu_spec!r} under {self.qemu} timed out after "
                f"{PROBE_TIMEOUT_S} s"
            ) from error
        if result.returncode != 0:
            message = result.stderr.strip()[-2000:]
            # QEMU 7.2's messages for an unknown model and an unknown property.
            if "unable to find CPU model" in message or "can't apply global" in message:
                raise UnknownCpuError(
                    f"{self.qemu_version} does not emulate CPU {cpu_spec!r}: {message}. "
                    f"`{self.qemu} -cpu help` lists its models."
                )
            raise SetupError(
                f"the emulated Python failed to start on CPU {cpu_spec!r} (exit status "
                f"{result.returncode}):\n{message}\nRebuild the sysroot with "
                f"`python cli.py verify-arm --setup-only --rebuild`. {QEMU_HINT}"
            )
        values = json.loads(result.stdout.strip().splitlines()[-1])
        return CpuModel(spec=cpu_spec, hwcap=values["hwcap"], hwcap2=values["hwcap2"], midr=values["midr"])

    def cpu_root(self, cpu):
        """Create (or refresh) the root for `cpu` and return its path."""
        root = self.sysroot.cpus_dir / folder_name(cpu.spec)
        (root / "proc").mkdir(parents=True, exist_ok=True)
        for entry in self.sysroot.root.iterdir():
            link = root / entry.name
            if link.is_symlink() or link.exists():
                continue
            link.symlink_to(entry)
        # One processor entry per host CPU, because the emulated program
        # counts CPUs from the host's /sys.
        (root / "proc" / "cpuinfo").write_text(cpu.cpuinfo(os.cpu_count() or 1))
        return root
