"""The aarch64 sysroot that emulated checks run in, built once per user.

Nothing is installed into `/` and the machine's dpkg architectures are left
alone. apt-get runs with a private configuration and state folder under
the cache folder, so it only reads Debian's arm64 package lists and
downloads `.deb` files, and `dpkg -x` unpacks them into the sysroot:

1. Debian 12 (bookworm) arm64 packages of Python 3.11 and the C and C++
   runtime libraries that the runtimes' wheels link against;
2. the aarch64 wheels of numpy, ncnn and ai-edge-litert, installed by
   `pip install --target` at the versions installed on the host, so the
   emulated runs use the same releases as the x86 parity checks.

QEMU itself comes from the host: Debian's `qemu-user-static` package, an
ordinary amd64 package (`sudo apt-get install qemu-user-static`). It runs
the sysroot's Python as `qemu-aarch64-static -L SYSROOT
SYSROOT/usr/bin/python3.11`, without binfmt registration. No step needs
root.

The cache folder (default `~/.cache/mfn-tf/arm`) contains:

- `apt/`: apt's private state and the downloaded packages;
- `sysroot/`: the unpacked root, with the wheels in `opt/mfn-tf/site-packages`;
- `sysroot.json`: the installed packages and wheels, written only after
  every step passed;
- `cpus/`: one small root per emulated CPU (see `emulation.py`).
"""

import datetime
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "MFN_TF_ARM_CACHE"
QEMU_ENV = "MFN_TF_QEMU"
MIRROR_ENV = "MFN_TF_DEBIAN_MIRROR"
SECURITY_MIRROR_ENV = "MFN_TF_DEBIAN_SECURITY_MIRROR"

DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# apt resolves their dependencies (libc6, libssl3, zlib1g...). libgomp1 is
# the OpenMP runtime that ncnn's threads use.
DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgomp1")
PYTHON_VERSION = "3.11"
PYTHON = Path("usr/bin/python3.11")
SITE_PACKAGES = Path("opt/mfn-tf/site-packages")
WHEELS = ("numpy", "ncnn", "ai-edge-litert")
# Debian 12 has glibc 2.36, so every manylinux wheel up to 2.36 runs on it.
GLIBC_MINOR = 36
QEMU_NAMES = ("qemu-aarch64-static", "qemu-aarch64")
COMMAND_TIMEOUT_S = 1800

QEMU_HINT = (
    "Install Debian's qemu-user-static package (an ordinary amd64 package): "
    "`sudo apt-get install qemu-user-static`, or pass --qemu /path/to/qemu-aarch64-static "
    f"(or set {QEMU_ENV})."
)
NETWORK_HINT = (
    "apt-get needs HTTP access to the Debian mirror {mirror}; set "
    f"{MIRROR_ENV} and {SECURITY_MIRROR_ENV} to a reachable Debian mirror "
    "(its proxy settings come from /etc/apt/apt.conf.d as usual)."
)
PIP_HINT = (
    "pip needs access to a package index with aarch64 cp311 wheels of "
    f"{', '.join(WHEELS)} (PyPI has them); check `pip config list` for the "
    "index and proxy it uses."
)


class SetupError(RuntimeError):
    """A step of setting up the emulation failed; the message gives the fix."""


def default_cache_dir():
    """Return the per-user cache folder: $MFN_TF_ARM_CACHE, else $XDG_CACHE_HOME/mfn-tf/arm."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mfn-tf" / "arm"


def find_qemu(path=None):
    """Return the QEMU aarch64 user-mode emulator to use.

    Raises:
        SetupError: none is found.
    """
    path = path or os.environ.get(QEMU_ENV)
    if path:
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            raise SetupError(f"QEMU emulator {path} is not an executable file. {QEMU_HINT}")
        return Path(path)
    for name in QEMU_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise SetupError(f"no QEMU aarch64 user-mode emulator ({' or '.join(QEMU_NAMES)}) on PATH. {QEMU_HINT}")


def qemu_version(qemu):
    """Return the first line of `qemu --version`, e.g. "qemu-aarch64 version 7.2.22 (...)"."""
    result = run_checked([str(qemu), "--version"], f"running {qemu} --version", QEMU_HINT)
    return result.stdout.splitlines()[0].strip()


def run_checked(command, what, hint, env=None, timeout=COMMAND_TIMEOUT_S):
    """Run `command`, raising SetupError with its stderr and `hint` on failure."""
    logger.debug("running %s", " ".join(str(part) for part in command))
    try:
        result = subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except FileNotFoundError as error:
        raise SetupError(f"{what} failed: {error.filename} not found. {hint}") from error
    except subprocess.TimeoutExpired as error:
        raise SetupError(f"{what} timed out after {timeout} s. {hint}") from error
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-3000:]
        raise SetupError(f"{what} failed (exit status {result.returncode}):\n{output}\n{hint}")
    return result


def host_wheel_versions():
    """Return {wheel: version or None}: the host's installed releases to mirror."""
    versions = {}
    for name in WHEELS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


class Sysroot:
    """The cache folder's paths and the state of its sysroot."""

    def __init__(self, cache_dir=None):
        self.cache_dir = Path(cache_dir or default_cache_dir()).expanduser().resolve()
        self.apt_dir = self.cache_dir / "apt"
        self.root = self.cache_dir / "sysroot"
        self.stamp_path = self.cache_dir / "sysroot.json"
        self.cpus_dir = self.cache_dir / "cpus"

    @property
    def python(self):
        return self.root / PYTHON

    @property
    def site_packages(self):
        return self.root / SITE_PACKAGES

    def stamp(self):
        """Return the contents of `sysroot.json`, or None before setup finished."""
        if not self.stamp_path.is_file():
            return None
        try:
            return json.loads(self.stamp_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def is_ready(self, wheel_versions=None):
        """Return whether setup finished with the wheels of `wheel_versions` (default: the host's)."""
        stamp = self.stamp()
        if stamp is None or not self.python.is_file():
            return False
        expected = wheel_versions or host_wheel_versions()
        installed = stamp.get("wheels", {})
        return all(
            expected_version is None or installed.get(name) == expected_version
            for name, expected_version in expected.items()
        )

    @contextmanager
    def _lock(self):
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ensure(self, qemu, rebuild=False):
        """Build the sysroot unless it is ready; return the stamp dictionary.

        `qemu` runs the sysroot's Python once, to compile its modules.

        Raises:
            SetupError: a step failed; the message names it and what to do.
        """
        wheel_versions = host_wheel_versions()
        with self._lock():
            if rebuild:
                shutil.rmtree(self.root, ignore_errors=True)
                self.stamp_path.unlink(missing_ok=True)
            if self.is_ready(wheel_versions):
                return self.stamp()
            self.stamp_path.unlink(missing_ok=True)
            packages = self.stamp_packages() if self.python.is_file() else None
            if packages is None:
                packages = self._build_root()
            self._install_wheels(wheel_versions)
            self._compile_bytecode(qemu)
            stamp = {
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "debian_suite": DEBIAN_SUITE,
                "mirror": _mirror(),
                "python": PYTHON_VERSION,
                "packages": packages,
                "wheels": _installed_wheels(self.site_packages),
            }
            self.stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
            logger.info("aarch64 sysroot ready in %s", self.root)
            return stamp

    def stamp_packages(self):
        """Return {package: version} of the unpacked `.deb` files, from apt's archive."""
        archives = self.apt_dir / "archives"
        if not archives.is_dir():
            return None
        packages = {}
        for deb in sorted(archives.glob("*.deb")):
            name, deb_version, _ = deb.name.split("_", 2)
            packages[name] = deb_version.replace("%3a", ":")
        return packages or None

    # Step 1: Debian's arm64 packages, through a private apt configuration.

    def _apt_config(self):
        """Write apt's private configuration; return the environment that selects it."""
        keyring = DEBIAN_KEYRING
        if not keyring.is_file():
            raise SetupError(
                f"Debian's archive keyring {keyring} is missing, so apt cannot check "
                "the packages' signatures. Install it: `sudo apt-get install "
                "debian-archive-keyring`."
            )
        apt = self.apt_dir
        for folder in ("lists/partial", "archives/partial", "cache", "sources.list.d", "preferences.d"):
            (apt / folder).mkdir(parents=True, exist_ok=True)
        (apt / "status").touch()

        mirror = _mirror()
        security = os.environ.get(SECURITY_MIRROR_ENV, DEFAULT_SECURITY_MIRROR)
        options = f"[arch=arm64 signed-by={keyring}]"
        (apt / "sources.list").write_text(
            f"deb {options} {mirror} {DEBIAN_SUITE} main\n"
            f"deb {options} {mirror} {DEBIAN_SUITE}-updates main\n"
            f"deb {options} {security} {DEBIAN_SUITE}-security main\n"
        )

        # Every path apt would read or write outside this folder is redirected,
        # except /etc/apt/apt.conf.d, which contains the machine's proxy settings.
        settings = {
            "APT::Architecture": "arm64",
            "Dir::State": apt,
            "Dir::State::Lists": apt / "lists",
            "Dir::State::status": apt / "status",
            "Dir::Cache": apt / "cache",
            "Dir::Cache::archives": apt / "archives",
            "Dir::Etc::SourceList": apt / "sources.list",
            "Dir::Etc::SourceParts": apt / "sources.list.d",
            "Dir::Etc::Preferences": apt / "preferences",
            "Dir::Etc::PreferencesParts": apt / "preferences.d",
            # As root, apt downloads as the `_apt` user, who cannot enter a
            # home folder; as any other user it never switches.
            "APT::Sandbox::User": "root",
        }
        lines = [f'{key} "{value}";' for key, value in settings.items()]
        lines.append('APT::Architectures { "arm64"; };')
        config = apt / "apt.conf"
        config.write_text("\n".join(lines) + "\n")
        return dict(os.environ, APT_CONFIG=str(config), DEBIAN_FRONTEND="noninteractive")

    def _build_root(self):
        for tool in ("apt-get", "dpkg"):
            if shutil.which(tool) is None:
                raise SetupError(
                    f"{tool} not found: building the aarch64 sysroot needs Debian's "
                    "apt-get and dpkg (a Debian or Ubuntu host). Run this command on "
                    "such a machine, or point --cache-dir at a sysroot built there."
                )
        env = self._apt_config()
        hint = NETWORK_HINT.format(mirror=_mirror())
        logger.info("downloading Debian %s arm64 package lists", DEBIAN_SUITE)
        run_checked(["apt-get", "update"], "apt-get update (arm64 lists, private state)", hint, env=env)
        logger.info("downloading arm64 packages: %s and dependencies", ", ".join(DEBIAN_PACKAGES))
        archives = self.apt_dir / "archives"
        for old in archives.glob("*.deb"):
            old.unlink()
        run_checked(
            ["apt-get", "install", "--download-only", "--no-install-recommends", "--yes", *DEBIAN_PACKAGES],
            "apt-get install --download-only (arm64, private state)",
            hint,
            env=env,
        )
        debs = sorted(archives.glob("*.deb"))
        if not debs:
            raise SetupError(f"apt-get downloaded no packages into {archives}. {hint}")

        partial = self.root.with_name("sysroot.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
        partial.mkdir(parents=True)
        logger.info("unpacking %d packages into %s", len(debs), self.root)
        for deb in debs:
            run_checked(
                ["dpkg", "-x", deb, partial],
                f"dpkg -x {deb.name}",
                f"remove {archives} and run the setup again",
            )
        if not (partial / PYTHON).is_file():
            raise SetupError(
                f"the unpacked packages contain no {PYTHON}; remove {self.cache_dir} and run "
                "the setup again"
            )
        partial.rename(self.root)
        return self.stamp_packages()

    # Step 2: the runtimes' aarch64 wheels.

    def _install_wheels(self, wheel_versions):
        target = self.site_packages
        shutil.rmtree(target, ignore_errors=True)
        requirements = [
            f"{name}=={wanted}" if wanted else name for name, wanted in wheel_versions.items()
        ]
        platforms = []
        for minor in range(17, GLIBC_MINOR + 1):
            platforms += ["--platform", f"manylinux_2_{minor}_aarch64"]
        logger.info("installing aarch64 wheels: %s", ", ".join(requirements))
        run_checked(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--target", target, "--only-binary=:all:", "--no-compile",
                "--python-version", PYTHON_VERSION, "--implementation", "cp",
                "--abi", "cp" + PYTHON_VERSION.replace(".", ""), *platforms, *requirements,
            ],
            "pip install of the aarch64 wheels",
            PIP_HINT,
        )
        installed = _installed_wheels(target)
        missing = [name for name in wheel_versions if name not in installed]
        if missing:
            raise SetupError(f"pip did not install {', '.join(missing)} into {target}. {PIP_HINT}")


    # Step 3: bytecode. dpkg -x skips the maintainer scripts that compile
    # Debian's standard library, and pip ran with --no-compile. Without
    # `.pyc` files, every emulated start compiles numpy and the standard
    # library again (about 6 s more for `import numpy`).

    def _compile_bytecode(self, qemu):
        logger.info("compiling the sysroot's Python modules under emulation")
        run_checked(
            [
                qemu, "-L", self.root, self.python, "-m", "compileall", "-q",
                self.root / "usr/lib" / f"python{PYTHON_VERSION}", self.site_packages,
            ],
            "compiling the sysroot's Python modules (compileall under QEMU)",
            f"rebuild the sysroot with --rebuild; if it fails again, check {qemu}. {QEMU_HINT}",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )


def _mirror():
    return os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)


def _installed_wheels(site_packages):
    """Return {distribution: version} read from the `.dist-info` folders."""
    installed = {}
    for info in Path(site_packages).glob("*.dist-info"):
        name, _, installed_version = info.name[: -len(".dist-info")].partition("-")
        installed[name.lower().replace("_", "-")] = installed_version
    return installed
