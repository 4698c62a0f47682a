"""bench/devices.py: which hardware a run targets and how the machine is described.

Every resolution test injects ``arch`` / ``cuda_available`` so the outcome does not depend on
the host: the same assertions hold on an x86 laptop, an ARM board and a GPU box.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import devices
from bench.devices import DEVICE_CHOICES, Device, fingerprint, host_arch, machine_info, resolve_device
from bench.results import RESULTS_FIELDS, check_value
from compress.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    # The plugin prints str(err) as a usage error: it must be a single line.
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


# ---------------------------------------------------------------- resolve_device
@pytest.mark.parametrize("arch", ["x86", "arm"])
def test_cpu_means_this_hosts_architecture(arch):
    assert resolve_device("cpu", arch=arch) == Device(arch, "cpu")


@pytest.mark.parametrize("arch", ["x86", "arm"])
def test_naming_the_host_architecture_explicitly_is_the_same_as_cpu(arch):
    assert resolve_device(arch, arch=arch) == resolve_device("cpu", arch=arch)


def test_cuda_with_a_gpu():
    assert resolve_device("cuda", cuda_available=True) == Device("cuda", "cuda")


def test_cuda_without_a_gpu_is_a_user_error_not_a_cpu_run():
    # A green run that silently measured the CPU would be worse than no run at all.
    with pytest.raises(UserError) as err:
        resolve_device("cuda", cuda_available=False, arch="x86")
    msg = _one_line(err)
    assert "--device cuda" in msg and "no CUDA GPU" in msg
    assert "--device cpu" in msg  # says what to do instead


@pytest.mark.parametrize("want,host", [("arm", "x86"), ("x86", "arm")])
def test_foreign_cpu_architecture_names_the_host(want, host):
    with pytest.raises(UserError) as err:
        resolve_device(want, arch=host)
    msg = _one_line(err)
    assert f"--device {want}" in msg
    assert f"this host is {host}" in msg
    assert "--device cpu" in msg


def test_unknown_device_name_lists_the_choices():
    with pytest.raises(UserError) as err:
        resolve_device("gpu", arch="x86")
    msg = _one_line(err)
    assert "'gpu'" in msg
    assert all(choice in msg for choice in DEVICE_CHOICES)


def test_cuda_availability_is_asked_of_torch_only_when_not_given(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == Device("cuda", "cuda")


@pytest.mark.parametrize("machine,arch", [
    ("x86_64", "x86"), ("AMD64", "x86"), ("i686", "x86"),
    ("aarch64", "arm"), ("arm64", "arm"), ("armv7l", "arm"),
    ("riscv64", "riscv64"),  # unknown: passed through, so `--device cpu` still names it honestly
])
def test_host_arch_classifies_platform_machine(monkeypatch, machine, arch):
    monkeypatch.setattr(devices.platform, "machine", lambda: machine)
    assert host_arch() == arch


def test_sync_on_a_cpu_device_does_not_touch_cuda(monkeypatch):
    import torch

    def boom():
        raise AssertionError("torch.cuda.synchronize called for a CPU device")

    monkeypatch.setattr(torch.cuda, "synchronize", boom)
    Device("x86", "cpu").sync()


# ---------------------------------------------------------------- machine_info and fingerprint
def _schema_machine_info_keys() -> set[str]:
    """The machine_info keys of the example in docs/results-schema.md (the documented contract)."""
    text = (REPO / "docs" / "results-schema.md").read_text(encoding="utf-8")
    m = re.search(r'"machine_info":\s*\{', text)
    assert m, "docs/results-schema.md has no machine_info example"
    body = re.sub(r"//[^\n]*", "", text[m.end() - 1:])  # the example's comments are for the reader
    return set(json.JSONDecoder().raw_decode(body)[0])


def test_machine_info_keys_match_the_documented_schema():
    info = machine_info(Device("x86", "cpu"), threads=3)
    assert set(info) == _schema_machine_info_keys()
    # ...and the validator that guards results files accepts every value.
    check_value(info, RESULTS_FIELDS["machine_info"], "machine_info", "test", "fix it")


def test_machine_info_on_cpu_records_threads_and_no_gpu():
    info = machine_info(Device("x86", "cpu"), threads=3)
    assert info["threads"] == 3
    assert info["cpu_model"] and isinstance(info["cpu_model"], str)
    assert info["gpu_name"] is info["gpu_driver"] is info["cuda_version"] is None


def test_machine_info_on_cuda_names_the_gpu(monkeypatch):
    # Simulated GPU: torch is asked for the name, /proc for the driver.
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(devices, "_nvidia_driver", lambda: "580.65.06")
    props = SimpleNamespace(name="NVIDIA H200", major=9, minor=0, total_memory=141 * 2**30, multi_processor_count=132)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: props)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    info = machine_info(Device("cuda", "cuda"), threads=4)
    assert (info["gpu_name"], info["cuda_version"], info["gpu_driver"]) == ("NVIDIA H200", "13.0", "580.65.06")
    assert info["gpu"]["compute_capability"] == "9.0" and info["gpu"]["cudnn"] == "91002"
    assert "|sm=9.0|driver=580.65.06|cuda=13.0|cudnn=91002|" in fingerprint(Device("cuda", "cuda"), info)
    assert set(info) == _schema_machine_info_keys()
    check_value(info, RESULTS_FIELDS["machine_info"], "machine_info", "test", "fix it")


def test_nvidia_driver_version_is_parsed_from_proc(monkeypatch, tmp_path):
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:26 UTC 2025\n"
                    "GCC version:  gcc version 12.2.0\n")
    real_open = open
    # devices.py calls the builtin open(); a module global of the same name shadows it.
    monkeypatch.setattr(devices, "open", lambda path, *a, **k: real_open(proc, *a, **k), raising=False)
    assert devices._nvidia_driver() == "580.65.06"


def test_nvidia_driver_is_none_without_the_driver(monkeypatch):
    def missing(*a, **k):
        raise FileNotFoundError("/proc/driver/nvidia/version")

    monkeypatch.setattr(devices, "open", missing, raising=False)
    assert devices._nvidia_driver() is None


def test_cpu_model_falls_back_to_proc_cpuinfo_when_cpuinfo_fails(monkeypatch):
    import cpuinfo

    def broken():
        raise RuntimeError("cpuinfo could not run")

    monkeypatch.setattr(cpuinfo, "get_cpu_info", broken)
    model = devices.cpu_model()
    assert isinstance(model, str) and model.strip() == model and model


def test_fingerprint_of_this_cpu_names_kind_model_identity_and_threads():
    dev = Device(devices.host_arch(), "cpu")
    info = machine_info(dev, threads=3)
    fp = fingerprint(dev, info)
    assert fp.startswith(f"v2|{dev.kind}|{info['cpu_model']}|")
    assert fp.endswith("|threads=3")
    assert set(info["cpu"]) >= {"features", "l2_kb", "l3_kb"}


def test_fingerprint_of_a_gpu_names_the_gpu_not_the_cpu():
    info = {"cpu_model": "AMD EPYC 9R14", "gpu_name": "NVIDIA H200", "threads": 8}
    fp = fingerprint(Device("cuda", "cuda"), info)
    assert fp.startswith("v2|cuda|NVIDIA H200|") and "EPYC" not in fp


def test_fingerprint_changes_with_threads():
    # Latencies measured with 1 and 2 threads are not comparable: different fingerprints.
    base = {"cpu_model": "X", "gpu_name": None, "cpu": {"features": []}}
    dev = Device("x86", "cpu")
    assert fingerprint(dev, {**base, "threads": 1}) != fingerprint(dev, {**base, "threads": 2})


def test_an_emulated_run_says_so_and_gets_its_own_fingerprint(monkeypatch):
    monkeypatch.setenv(devices.EMULATION_ENV, "qemu-aarch64")
    info = machine_info(Device("arm", "cpu"), threads=2)
    assert info["emulated"] == "qemu-aarch64"
    assert fingerprint(Device("arm", "cpu"), info).endswith("|threads=2|emulated=qemu-aarch64")
    monkeypatch.delenv(devices.EMULATION_ENV)
    info = machine_info(Device("arm", "cpu"), threads=2)
    assert info["emulated"] is None and "emulated" not in fingerprint(Device("arm", "cpu"), info)


class _Config:
    """What read_options needs of a pytest config: getoption over parsed arguments."""

    def __init__(self, args: list[str]):
        from _pytest.config.argparsing import Parser

        from bench.options import add_options

        parser = Parser(_ispytest=True)
        add_options(parser)
        self.ns = parser.parse(args)
        self.rootpath = Path(".")

    def getoption(self, name: str):
        return getattr(self.ns, name.lstrip("-").replace("-", "_"))


@pytest.mark.parametrize("args,expected", [
    (["--device", "cuda"], (1, 256)),  # fill the GPU
    (["--device", "cpu"], (1, 32)),
    (["--device", "arm"], (1, 32)),
    (["--device", "cuda", "--batch-size", "64"], (1, 64)),  # an explicit list wins, 1 always included
])
def test_throughput_batch_defaults_to_256_on_cuda_and_32_on_cpus(args, expected):
    from bench.options import read_options

    assert read_options(_Config(args)).batch_sizes == expected
