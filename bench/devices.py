"""Device classes: which hardware a run targets, how to time on it, how to describe it.

``cpu`` resolves to this host's architecture (x86 or arm). Asking for hardware the host lacks is a
usage error: a green run that measured something else would be worse than none.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from compress.errors import UserError

DEVICE_CHOICES = ("cpu", "x86", "arm", "cuda")


def host_arch() -> str:
    m = platform.machine().lower()
    if m in ("x86_64", "amd64", "i686", "i386"):
        return "x86"
    if m in ("aarch64", "arm64") or m.startswith("arm"):
        return "arm"
    return m


@dataclass(frozen=True)
class Device:
    kind: str  # "x86" | "arm" | "cuda"
    torch_device: str  # "cpu" | "cuda"

    def sync(self) -> None:
        if self.kind == "cuda":
            import torch

            torch.cuda.synchronize()


def resolve_device(name: str, cuda_available: bool | None = None, arch: str | None = None) -> Device:
    arch = arch or host_arch()
    if name not in DEVICE_CHOICES:
        raise UserError(f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "cpu":
        name = arch
    if name == "cuda":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        if not cuda_available:
            raise UserError("--device cuda: no CUDA GPU is visible to torch on this host; "
                            "run on a GPU machine or use --device cpu")
        return Device("cuda", "cuda")
    if name != arch:
        raise UserError(f"--device {name}: this host is {arch} ({platform.machine()}); run on a {name} machine, "
                        f"use --device cpu, or see README 'ARM under emulation'")
    return Device(name, "cpu")


def cpu_model() -> str:
    try:
        import cpuinfo

        brand = cpuinfo.get_cpu_info().get("brand_raw")
        if brand:
            return " ".join(brand.split())
    except Exception:  # cpuinfo shells out on some platforms; a missing model name is not fatal
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


EMULATION_ENV = "RESNET18_BENCH_EMULATED"


# The ISA features that decide which kernels oneDNN, FBGEMM, MLAS and OpenVINO pick: two CPUs
# that differ in one of them run different code for the same model (VNNI int8 dot products,
# bf16 and AMX tiles on x86; dot-product, int8 matrix-multiply, SVE and bf16 on ARM).
KERNEL_FEATURES = {
    "x86": ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
            "amx_tile", "amx_int8", "amx_bf16"),
    "arm": ("asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme"),
}
# The first fingerprint format, "<device>|<CPU model string or GPU name>|threads=N[|emulated=...]",
# kept for baselines recorded with it (bench/baselines.py, FINGERPRINT_RULES).
LEGACY_FINGERPRINT_FORMAT = 1
FINGERPRINT_FORMAT = 2


def parse_cpuinfo(text: str, arch: str) -> dict:
    """The identity of the first processor in a /proc/cpuinfo text: x86 vendor, family, model and
    stepping, or ARM implementer, part, variant and revision (MIDR fields); and the kernel-relevant
    ISA features it lists (``KERNEL_FEATURES``), in that table's order."""
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break  # the end of the first processor's block
            continue
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip().lower(), value.strip())
    flags = set((first.get("flags") or first.get("features") or "").split())
    out: dict = {"features": [f for f in KERNEL_FEATURES.get(arch, ()) if f in flags]}
    if arch == "x86":
        out.update(vendor=first.get("vendor_id"), family=_int(first.get("cpu family")),
                   model=_int(first.get("model")), stepping=_int(first.get("stepping")))
    elif arch == "arm":
        out.update(implementer=first.get("cpu implementer"), part=first.get("cpu part"),
                   variant=first.get("cpu variant"), revision=_int(first.get("cpu revision")))
    return out


def _int(value: str | None) -> int | None:
    try:
        return int(value, 0) if value is not None else None
    except ValueError:
        return None


def cache_sizes_kb(sysfs_cpu0: str = "/sys/devices/system/cpu/cpu0/cache") -> dict:
    """{"l2_kb": ..., "l3_kb": ...} from sysfs (None where the kernel does not say)."""
    out: dict = {"l2_kb": None, "l3_kb": None}
    try:
        entries = sorted(os.listdir(sysfs_cpu0))
    except OSError:
        return out
    for name in entries:
        if not name.startswith("index"):
            continue
        try:
            with open(os.path.join(sysfs_cpu0, name, "level")) as fh:
                level = fh.read().strip()
            with open(os.path.join(sysfs_cpu0, name, "size")) as fh:
                size = fh.read().strip().upper()
        except OSError:
            continue
        kb = _size_kb(size)
        if level in ("2", "3") and kb is not None:
            out[f"l{level}_kb"] = kb
    return out


def _size_kb(size: str) -> int | None:
    units = {"K": 1, "M": 1024, "G": 1024 * 1024}
    try:
        return int(size[:-1]) * units[size[-1]] if size and size[-1] in units else int(size) // 1024
    except ValueError:
        return None


def cpu_identity(arch: str, cpuinfo_path: str = "/proc/cpuinfo",
                 sysfs_cpu0: str = "/sys/devices/system/cpu/cpu0/cache") -> dict:
    try:
        with open(cpuinfo_path) as fh:
            text = fh.read()
    except OSError:
        text = ""
    return {**parse_cpuinfo(text, arch), **cache_sizes_kb(sysfs_cpu0)}


def gpu_identity(props, driver: str | None, cuda: str | None, cudnn: int | None) -> dict:
    """What makes two CUDA runs comparable: the GPU (name, compute capability, memory, SMs) and
    the driver, CUDA and cuDNN that chose its kernels. ``props``: torch.cuda.get_device_properties."""
    return {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": getattr(props, "multi_processor_count", None),
            "driver": driver, "cuda": cuda, "cudnn": str(cudnn) if cudnn else None}


def machine_info(device: Device, threads: int) -> dict:
    arch = device.kind if device.kind in ("x86", "arm") else host_arch()
    info = {
        "node": platform.node(), "arch": platform.machine(), "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(), "threads": threads, "gpu_name": None, "gpu_driver": None,
        "cuda_version": None, "os": platform.platform(), "python": platform.python_version(),
        # Set by scripts/arm-emulated.sh (qemu-user): such latencies say nothing about real hardware.
        "emulated": os.environ.get(EMULATION_ENV) or None,
        "cpu": cpu_identity(arch), "gpu": None,
    }
    if device.kind == "cuda":
        import torch

        info["gpu_name"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
        info["gpu_driver"] = _nvidia_driver()
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info["gpu"] = gpu_identity(torch.cuda.get_device_properties(0), info["gpu_driver"], info["cuda_version"], cudnn)
    return info


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as fh:
            first = fh.readline()
        return first.split("Kernel Module")[1].split()[0] if "Kernel Module" in first else first.strip()
    except (OSError, IndexError):
        return None


def cuda_description(index: int = 0) -> str:
    """One line for logs (scripts/gpu-check.sh): the GPU torch sees, its driver and the CUDA stack,
    or why there is none. Safe on a host without a GPU."""
    import torch

    stack = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (a CPU build of torch)'}"
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to torch ({stack}; driver {_nvidia_driver() or 'not loaded'})"
    p = torch.cuda.get_device_properties(index)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return (f"{p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB, {torch.cuda.device_count()} visible), "
            f"driver {_nvidia_driver() or 'unknown'}, {stack}, cuDNN {cudnn or 'none'}")


def fingerprint(device: Device, info: dict) -> str:
    """What makes absolute latencies comparable, as one stable string: the device class, the
    hardware by identity rather than by marketing name (VM CPU strings are often just "AMD EPYC":
    a family 25 and a family 26 EPYC under that name ran one item at 17.2 and 8.9 ms), the ISA
    features that pick kernels, caches, cores and threads; for CUDA the GPU, its compute capability
    and the driver, CUDA and cuDNN. Same string, same machine class; anything else is another
    machine, compared by ratios only."""
    emulated = f"|emulated={info['emulated']}" if info.get("emulated") else ""
    if device.kind == "cuda":
        g = info.get("gpu") or {}
        hw = (f"{g.get('name') or info.get('gpu_name')}|sm={g.get('compute_capability')}|"
              f"driver={g.get('driver')}|cuda={g.get('cuda')}|cudnn={g.get('cudnn')}")
    else:
        c = info.get("cpu") or {}
        if device.kind == "arm":
            ident = f"implementer={c.get('implementer')} part={c.get('part')} variant={c.get('variant')} r{c.get('revision')}"
        else:
            ident = f"{c.get('vendor')} family={c.get('family')} model={c.get('model')} stepping={c.get('stepping')}"
        hw = (f"{info.get('cpu_model')}|{ident}|isa={'+'.join(c.get('features') or []) or 'none'}|"
              f"l2={c.get('l2_kb')}K l3={c.get('l3_kb')}K|cores={info.get('cpu_count')}")
    return f"v{FINGERPRINT_FORMAT}|{device.kind}|{hw}|threads={info['threads']}{emulated}"


def machine_label(kind: str, info: dict) -> str:
    """A short name for tables and plot legends: device, CPU model string with its family/model
    (or ARM part, or GPU with compute capability), threads. The fingerprint is the exact identity."""
    c, g = info.get("cpu") or {}, info.get("gpu") or {}
    if kind == "cuda":
        hw = f"{info.get('gpu_name')}" + (f" (sm {g['compute_capability']})" if g.get("compute_capability") else "")
    elif c.get("family") is not None:
        hw = f"{info.get('cpu_model')} ({c.get('vendor')} {c.get('family')}/{c.get('model')})"
    elif c.get("part") is not None:
        hw = f"{info.get('cpu_model')} ({c.get('implementer')}/{c.get('part')})"
    else:
        hw = f"{info.get('cpu_model')}"
    emulated = f" · emulated={info['emulated']}" if info.get("emulated") else ""
    return f"{kind} · {hw} · threads={info.get('threads')}{emulated}"


def legacy_fingerprint(kind: str, info: dict) -> str:
    """The first format: device class, CPU model string or GPU name, threads. Baselines keyed by
    it predate the hardware identity; bench/baselines.py matches them by this string."""
    hw = info.get("gpu_name") if kind == "cuda" else info.get("cpu_model")
    emulated = f"|emulated={info['emulated']}" if info.get("emulated") else ""
    return f"{kind}|{hw}|threads={info.get('threads')}{emulated}"


def fingerprint_format(fp: str) -> int:
    """2 for "v2|..." strings, 1 for the first format (no version prefix)."""
    head = fp.split("|", 1)[0]
    return int(head[1:]) if head[:1] == "v" and head[1:].isdigit() else LEGACY_FINGERPRINT_FORMAT
