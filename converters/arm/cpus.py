"""Emulated aarch64 CPU models: parsing `--cpu`, probing and `/proc/cpuinfo`.

QEMU's user-mode emulator passes the host's `/proc/cpuinfo` through to
the emulated program. That file describes an x86 CPU, and LiteRT's CPU
detection (the cpuinfo library) crashes on it. QEMU 7.2 looks a path up
under its `-L` prefix first, so a file at `PREFIX/proc/cpuinfo` is served
instead. It must describe the emulated CPU: LiteRT picks its dot-product
and fp16 kernels from the CPU part number, so a file that names a newer
core than `QEMU_CPU` ends in an illegal instruction.

The file is written from what the emulated CPU itself reports: the
HWCAP bits that QEMU passes in the auxiliary vector and MIDR_EL1, which
QEMU lets user code read, as Linux does.
"""

import re
from dataclasses import dataclass

# Linux's names for the AT_HWCAP and AT_HWCAP2 bits on arm64, in bit order
# (arch/arm64/include/uapi/asm/hwcap.h, the strings of
# arch/arm64/kernel/cpuinfo.c).
HWCAP_NAMES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
    "asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm "
    "dit uscat ilrcpc flagm ssbs sb paca pacg"
).split()
HWCAP2_NAMES = (
    "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint "
    "svei8mm svef32mm svef64mm svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres "
    "mte3 sme smei16i64 smef64f64 smei8i32 smef16f32 smeb16f32 smef32f32 "
    "smefa64 wfxt ebf16 sveebf16"
).split()

# The CPUs checked when `--cpu` is not given: an ARMv8.0 little core without
# fp16 arithmetic, an ARMv8.2 big core with it, and QEMU's model with every
# feature it emulates but SME.
# NOTE: with SME on (plain `max`, QEMU 7.2), XNNPACK's int8 kernels return
# wrong embeddings; whether QEMU or XNNPACK is at fault is not known.
DEFAULT_CPUS = ("cortex-a53", "cortex-a76", "max,sme=off")

# Runs inside the emulated Python: prints AT_HWCAP, AT_HWCAP2 and MIDR_EL1.
# The two instructions are `mrs x0, midr_el1` and `ret`.
PROBE_SCRIPT = """
import ctypes, json, mmap
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
libc.getauxval.argtypes = [ctypes.c_ulong]
AT_HWCAP, AT_HWCAP2 = 16, 26
code = bytes.fromhex("000038d5c0035fd6")
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
address = ctypes.addressof(ctypes.c_char.from_buffer(page))
midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(address)()
print(json.dumps({"hwcap": libc.getauxval(AT_HWCAP), "hwcap2": libc.getauxval(AT_HWCAP2), "midr": midr}))
"""


def parse_cpu_list(text):
    """Split a `--cpu` value into QEMU CPU specs.

    CPUs are separated by commas. QEMU's own property syntax also uses
    commas (`max,sme=off`), so an item containing "=" belongs to the CPU
    before it: "cortex-a53,max,sme=off" is ["cortex-a53", "max,sme=off"].

    Raises:
        ValueError: the list is empty or starts with a property.
    """
    specs = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        if "=" in item:
            if not specs:
                raise ValueError(
                    f"invalid --cpu value {text!r}: property {item!r} must follow a "
                    "CPU model name, as in 'max,sme=off'"
                )
            specs[-1] = f"{specs[-1]},{item}"
        else:
            specs.append(item)
    if not specs:
        raise ValueError(f"invalid --cpu value {text!r}: name at least one CPU model")
    return list(dict.fromkeys(specs))


def folder_name(spec):
    """Return a file-system-safe folder name for a CPU spec ("max,sme=off" -> "max_sme-off")."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", spec.replace("=", "-"))


def _feature_names(bits, names):
    return [name for index, name in enumerate(names) if bits >> index & 1]


@dataclass(frozen=True)
class CpuModel:
    """One emulated CPU as QEMU presents it to a program."""

    spec: str
    hwcap: int
    hwcap2: int
    midr: int

    @property
    def features(self):
        """The Linux feature names of the HWCAP bits, as `/proc/cpuinfo` lists them."""
        return _feature_names(self.hwcap, HWCAP_NAMES) + _feature_names(
            self.hwcap2, HWCAP2_NAMES
        )

    def has(self, feature):
        return feature in self.features

    @property
    def implementer(self):
        return self.midr >> 24 & 0xFF

    @property
    def variant(self):
        return self.midr >> 20 & 0xF

    @property
    def part(self):
        return self.midr >> 4 & 0xFFF

    @property
    def revision(self):
        return self.midr & 0xF

    def cpuinfo(self, processor_count):
        """Render `/proc/cpuinfo` as an arm64 Linux kernel writes it."""
        block = (
            "processor\t: {index}\n"
            "BogoMIPS\t: 50.00\n"
            f"Features\t: {' '.join(self.features)}\n"
            f"CPU implementer\t: 0x{self.implementer:02x}\n"
            "CPU architecture: 8\n"
            f"CPU variant\t: 0x{self.variant:x}\n"
            f"CPU part\t: 0x{self.part:03x}\n"
            f"CPU revision\t: {self.revision}\n\n"
        )
        return "".join(block.format(index=index) for index in range(processor_count))

    def to_dict(self):
        return {
            "spec": self.spec,
            "midr": f"0x{self.midr:08x}",
            "implementer": f"0x{self.implementer:02x}",
            "part": f"0x{self.part:03x}",
            "features": self.features,
            "fp16_arithmetic": self.has("asimdhp"),
            "dot_product": self.has("asimddp"),
            "lse_atomics": self.has("atomics"),
        }
