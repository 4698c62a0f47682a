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


def machine_info(device: Device, threads: int) -> dict:
    info = {
        "node": platform.node(), "arch": platform.machine(), "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(), "threads": threads, "gpu_name": None, "gpu_driver": None,
        "cuda_version": None, "os": platform.platform(), "python": platform.python_version(),
        # Set by scripts/arm-emulated.sh (qemu-user): such latencies say nothing about real hardware.
        "emulated": os.environ.get(EMULATION_ENV) or None,
    }
    if device.kind == "cuda":
        import torch

        info["gpu_name"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
        info["gpu_driver"] = _nvidia_driver()
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
    """What makes absolute latencies comparable: device class, CPU model or GPU name, threads."""
    hw = info["gpu_name"] if device.kind == "cuda" else info["cpu_model"]
    emulated = f"|emulated={info['emulated']}" if info.get("emulated") else ""
    return f"{device.kind}|{hw}|threads={info['threads']}{emulated}"
