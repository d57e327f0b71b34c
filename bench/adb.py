"""A thin, checked wrapper around the `adb` command line.

Every call checks adb's exit status and shows adb's own message on
failure. Shell commands end with `; echo mfn_tf_exit_status=$?`, so the
device command's exit status is read from its output: that works with
every adb version, including those whose `adb shell` does not return the
remote status.
"""

import logging
import re
import shutil
import subprocess
from pathlib import Path

from bench.errors import AdbError

logger = logging.getLogger(__name__)

STATUS_MARKER = "mfn_tf_exit_status="
STATUS_SUFFIX = f"; echo {STATUS_MARKER}$?"
ADB_TIMEOUT_S = 120
PLATFORM_TOOLS_HINT = (
    "Install Android SDK Platform-Tools "
    "(https://developer.android.com/tools/releases/platform-tools) and put "
    "adb on PATH, or pass --adb PATH"
)

_STATUS_LINE = re.compile(rf"^{STATUS_MARKER}(\d+)\s*$", re.MULTILINE)


def find_adb(executable="adb"):
    """Return the path of the adb executable.

    Raises:
        AdbError: adb is not on PATH and not an existing file.
    """
    path = shutil.which(executable)
    if path is None:
        raise AdbError(f"adb not found: {executable!r}. {PLATFORM_TOOLS_HINT}.")
    return path


def _run(command, timeout):
    logger.debug("running %s", " ".join(command))
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise AdbError(
            f"`{' '.join(command)}` timed out after {timeout} s; check the USB "
            "connection and that the phone is unlocked"
        ) from error
    except OSError as error:
        raise AdbError(f"cannot run {command[0]}: {error}. {PLATFORM_TOOLS_HINT}.") from error


def parse_devices(text):
    """Return `[(serial, state), ...]` from `adb devices` output."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            devices.append((parts[0], parts[1]))
    return devices


def list_devices(executable):
    """Return the devices that `adb devices` lists, with their states."""
    result = _run([executable, "devices"], ADB_TIMEOUT_S)
    if result.returncode != 0:
        raise AdbError(
            f"`adb devices` failed (exit status {result.returncode}):\n"
            f"{(result.stdout + result.stderr).strip()}"
        )
    return parse_devices(result.stdout)


def choose_device(devices, serial=None):
    """Return the serial of the one ready device to use.

    Raises:
        AdbError: no device, the requested one is absent, it is not ready
            (unauthorized, offline), or several are ready and no serial
            selects one.
    """
    if not devices:
        raise AdbError(
            "no Android device found by `adb devices`. Connect the phone over "
            "USB, enable USB debugging (Settings > Developer options) and "
            "accept this computer's key on the phone."
        )
    states = dict(devices)
    if serial is not None and serial not in states:
        raise AdbError(
            f"device {serial!r} is not attached; `adb devices` lists: "
            + ", ".join(f"{name} ({state})" for name, state in devices)
        )
    ready = [name for name, state in devices if state == "device"]
    if serial is None and len(ready) > 1:
        raise AdbError(
            f"several devices are attached ({', '.join(ready)}); choose one with --serial"
        )
    name = serial or (ready[0] if ready else devices[0][0])
    if states[name] == "unauthorized":
        raise AdbError(
            f"device {name} is unauthorized: unlock the phone and accept the "
            "USB debugging prompt, then run again"
        )
    if states[name] != "device":
        raise AdbError(
            f"device {name} is {states[name]}; reconnect it (or run "
            "`adb kill-server`) until `adb devices` shows it as 'device'"
        )
    return name


class Adb:
    """adb bound to one device serial."""

    def __init__(self, executable, serial):
        self.executable = executable
        self.serial = serial

    def _command(self, *args):
        return [self.executable, "-s", self.serial, *args]

    def shell(self, command, timeout=ADB_TIMEOUT_S):
        """Run `command` in the device shell; return `(output, exit status)`.

        Raises:
            AdbError: adb itself failed, or the output has no exit status
                (the connection dropped mid-command).
        """
        result = _run(self._command("shell", command + STATUS_SUFFIX), timeout)
        output = result.stdout
        statuses = _STATUS_LINE.findall(output)
        if result.returncode != 0 or not statuses:
            raise AdbError(
                f"`adb shell {command}` on {self.serial} failed (adb exit status "
                f"{result.returncode}):\n{(output + result.stderr).strip()}"
            )
        return _STATUS_LINE.sub("", output).rstrip("\n"), int(statuses[-1])

    def shell_checked(self, command, what, timeout=ADB_TIMEOUT_S):
        """Run `command`; raise AdbError naming `what` unless it exits with 0."""
        output, status = self.shell(command, timeout=timeout)
        if status != 0:
            raise AdbError(
                f"{what} failed on {self.serial} (`{command}` exited with status "
                f"{status}):\n{output.strip()}"
            )
        return output

    def push(self, local, remote):
        """Copy a file to the device; raise AdbError with adb's message on failure."""
        result = _run(self._command("push", str(local), remote), ADB_TIMEOUT_S)
        if result.returncode != 0:
            raise AdbError(
                f"adb push {local} -> {remote} failed on {self.serial} (exit status "
                f"{result.returncode}):\n{(result.stdout + result.stderr).strip()}\n"
                "Check the free space in /data/local/tmp and that the phone is unlocked."
            )

    def pull(self, remote, local):
        """Copy a file from the device; raise AdbError with adb's message on failure."""
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        result = _run(self._command("pull", remote, str(local)), ADB_TIMEOUT_S)
        if result.returncode != 0:
            raise AdbError(
                f"adb pull {remote} -> {local} failed on {self.serial} (exit status "
                f"{result.returncode}):\n{(result.stdout + result.stderr).strip()}"
            )
