"""Everything the CUDA row decides without a GPU, tested on a CPU: which ONNX Runtime package is
installed (exactly one), which provider runs, the skip reasons and refusals on --device cuda, CUDA
timing that synchronizes before every clock read (a fake device), and scripts/gpu-check.sh's and
scripts/setup.sh's own checks. No test here needs a GPU; none asserts anything about this host's
speed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import measure
from bench.devices import Device, cuda_description
from bench.measure import LatencySpec, measure_latency, measure_throughput, warm_up
from bench.runtimes import get_runtime
from bench.runtimes import onnxruntime as ortmod
from bench.runtimes.base import TORCH_AO_NO_CUDA_INT8
from bench.runtimes.onnxruntime import (
    ORT_DISTRIBUTIONS,
    OnnxRuntime,
    OrtDist,
    OrtFacts,
    availability_reason,
    cuda_error_line,
    installed_ort_distributions,
    package_conflict,
    package_conflict_reason,
    provider_list,
    tensorrt_reason,
)
from compress.registry import get_recipe

REPO = Path(__file__).resolve().parents[1]
CUDA, X86 = Device("cuda", "cuda"), Device("x86", "cpu")
SITE, OTHER_SITE = "/venv/lib/python3.12/site-packages", "/opt/torch/lib/python3.12/site-packages"
CPU_BUILD = OrtDist("onnxruntime", "1.32.0", SITE)
GPU_BUILD = OrtDist("onnxruntime-gpu", "1.31.1", SITE)
CPU_PROVIDERS = ("AzureExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def one_line(msg: str | None) -> str:
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


def cpu_facts(**kw) -> OrtFacts:
    return OrtFacts(**{"installed": (CPU_BUILD,), "version": "1.32.0", "package": "onnxruntime",
                       "providers": CPU_PROVIDERS, **kw})


def gpu_facts(**kw) -> OrtFacts:
    return OrtFacts(**{"installed": (GPU_BUILD,), "version": "1.31.1", "package": "onnxruntime-gpu",
                       "cuda_build": "13.0", "providers": GPU_PROVIDERS, **kw})


# ---------------------------------------------------------------- package detection
def test_one_package_is_no_conflict():
    for dist in (CPU_BUILD, GPU_BUILD):
        assert package_conflict_reason([dist], "cuda") is None
    assert package_conflict_reason([], "x86") is None


@pytest.mark.parametrize("device_kind,keep", [("cuda", "gpu"), ("x86", "cpu"), ("arm", "cpu")])
def test_cpu_and_gpu_builds_together_are_a_conflict_naming_what_to_uninstall(device_kind, keep):
    msg = one_line(package_conflict_reason([CPU_BUILD, GPU_BUILD], device_kind))
    assert "onnxruntime 1.32.0" in msg and "onnxruntime-gpu 1.31.1" in msg and SITE in msg
    # Both go (removing one deletes files the other owns), then the device's one comes back.
    assert msg.endswith(f"pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'resnet18-bench[{keep}]'")


def test_any_two_onnxruntime_packages_conflict():
    openvino = OrtDist("onnxruntime-openvino", "1.24.1", SITE)
    msg = one_line(package_conflict_reason([GPU_BUILD, openvino]))
    assert "pip uninstall -y onnxruntime-gpu onnxruntime-openvino" in msg
    assert "'resnet18-bench[cpu]'" in msg and "'resnet18-bench[gpu]'" in msg  # no device: both named


def test_a_package_in_another_folder_is_shadowed_not_a_conflict():
    # A venv's onnxruntime-gpu in front of the base environment's onnxruntime: the venv's module
    # is the one imported, whole; nothing is overwritten.
    assert package_conflict_reason([GPU_BUILD, OrtDist("onnxruntime", "1.30.0", OTHER_SITE)], "cuda") is None


def test_two_versions_of_one_package_are_not_two_packages():
    assert package_conflict_reason([CPU_BUILD, OrtDist("onnxruntime", "1.31.0", SITE)], "x86") is None


def _fake_dist(name, version, files=(), where=SITE):
    return SimpleNamespace(metadata={"Name": name}, version=version, files=[Path(f) for f in files],
                           locate_file=lambda _p: Path(where))


def test_installed_distributions_are_found_by_name_or_by_the_module_they_install(monkeypatch):
    import importlib.metadata

    dists = [_fake_dist("onnxruntime_gpu", "1.31.1"),  # normalized: onnxruntime-gpu
             _fake_dist("onnxruntime-extensions", "0.14", ["onnxruntime_extensions/__init__.py"]),
             _fake_dist("onnxruntime-genai", "0.9", ["onnxruntime_genai/__init__.py"]),
             _fake_dist("onnxruntime-acme-npu", "1.0", ["onnxruntime/__init__.py", "onnxruntime/capi/x.so"]),
             _fake_dist("onnx", "1.23.2", ["onnx/__init__.py"])]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(dists))
    installed_ort_distributions.cache_clear()
    try:
        found = installed_ort_distributions()
    finally:
        installed_ort_distributions.cache_clear()
    assert [d.name for d in found] == ["onnxruntime-acme-npu", "onnxruntime-gpu"]
    assert all(d.location == str(Path(SITE).resolve()) for d in found)
    assert package_conflict_reason(found, "cuda")  # an unknown build that installs the module counts too


def test_this_environment_has_exactly_one_onnxruntime_package():
    # The environment the tests run in is made by scripts/setup.sh: exactly one ONNX Runtime package.
    names = {d.name for d in installed_ort_distributions()}
    assert len(names) == 1 and names <= set(ORT_DISTRIBUTIONS), names
    assert package_conflict("cuda") is None and package_conflict() is None


def test_the_start_up_check_reports_a_conflict(monkeypatch):
    monkeypatch.setattr(ortmod, "installed_ort_distributions", lambda: (CPU_BUILD, GPU_BUILD))
    msg = one_line(package_conflict("cuda"))
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in msg
    # ...and every ONNX Runtime item says the same, should the check not run at start-up.
    assert OnnxRuntime().unavailable_reason(CUDA) == msg


# ---------------------------------------------------------------- provider choice and skip reasons
def test_provider_choice():
    assert provider_list(CUDA.kind) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_list(X86.kind) == ["CPUExecutionProvider"]
    assert provider_list(X86.kind, "tensorrt") == ["CPUExecutionProvider"]  # TensorRT is a CUDA choice only


def test_tensorrt_provider_builds_fresh_engines_with_fp16_only_for_fp16():
    (name, opts), *rest = provider_list(CUDA.kind, "tensorrt", half=True)
    assert name == "TensorrtExecutionProvider" and rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert opts == {"trt_fp16_enable": "True", "trt_engine_cache_enable": "False"}
    assert provider_list(CUDA.kind, "tensorrt", half=False)[0][1]["trt_fp16_enable"] == "False"


def test_tensorrt_missing_is_a_usage_error_naming_the_fix(monkeypatch):
    assert tensorrt_reason(("TensorrtExecutionProvider", "CUDAExecutionProvider")) is None
    msg = tensorrt_reason(("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert "pip install tensorrt" in msg and "CUDAExecutionProvider, CPUExecutionProvider" in msg
    monkeypatch.setattr(ortmod, "installed_ort_distributions", lambda: (GPU_BUILD,))
    rt = OnnxRuntime()
    monkeypatch.setattr(ortmod, "ort_facts", lambda kind: gpu_facts())  # GPU build with TensorRT's provider
    assert rt.usage_error(CUDA, {"ort_cuda_ep": "tensorrt"}) is None
    monkeypatch.setattr(ortmod, "ort_facts",
                        lambda kind: gpu_facts(providers=("CUDAExecutionProvider", "CPUExecutionProvider")))
    assert rt.usage_error(X86, {"ort_cuda_ep": "tensorrt"}) is None  # only --device cuda asks for it
    assert rt.usage_error(CUDA, {"ort_cuda_ep": "cuda"}) is None
    assert "pip install tensorrt" in rt.usage_error(CUDA, {"ort_cuda_ep": "tensorrt"})


@pytest.mark.parametrize("facts", [cpu_facts(), gpu_facts()], ids=["cpu-build", "gpu-build"])
def test_every_build_runs_on_a_cpu(facts):
    assert availability_reason(facts, "x86") is None and availability_reason(facts, "arm") is None


def test_the_cpu_build_on_cuda_says_to_swap_it_for_the_gpu_build():
    msg = one_line(availability_reason(cpu_facts(), "cuda"))
    assert "onnxruntime 1.32.0 is a build without CUDA" in msg and "CUDAExecutionProvider" in msg
    assert "pip uninstall -y onnxruntime && pip install 'resnet18-bench[gpu]'" in msg


def test_the_gpu_build_whose_provider_cannot_start_names_the_missing_library():
    msg = one_line(availability_reason(
        gpu_facts(cuda_error="libcublasLt.so.13: cannot open shared object file: No such file or directory"), "cuda"))
    assert "onnxruntime-gpu 1.31.1 (built for CUDA 13.0)" in msg and "cannot start here" in msg
    assert "libcublasLt.so.13" in msg and "CUDA 13.x and cuDNN 9" in msg
    assert "uninstall" not in msg  # the package is the right one: what is missing are its libraries


def test_a_missing_driver_is_named_as_such():
    # What this CPU host says once torch's CUDA libraries are loaded: only the driver is missing.
    msg = one_line(availability_reason(
        gpu_facts(cuda_error="libcuda.so.1: cannot open shared object file: No such file or directory"), "cuda"))
    assert msg.endswith("libcuda.so.1: cannot open shared object file: No such file or directory; the NVIDIA driver "
                        "is missing or too old for CUDA 13: nvidia-smi must work")


def test_the_gpu_build_with_a_working_provider_is_available():
    assert availability_reason(gpu_facts(), "cuda") is None


def test_a_gpu_build_that_lists_no_cuda_provider_is_damaged():
    msg = one_line(availability_reason(gpu_facts(providers=("CPUExecutionProvider",)), "cuda"))
    assert "damaged" in msg and "pip uninstall -y onnxruntime-gpu && pip install 'resnet18-bench[gpu]'" in msg


@pytest.mark.parametrize("device_kind,package,extra", [("x86", "onnxruntime", "cpu"), ("cuda", "onnxruntime-gpu", "gpu")])
def test_not_installed_names_the_package_for_the_device(device_kind, package, extra):
    msg = one_line(availability_reason(OrtFacts(import_error="ModuleNotFoundError: No module named 'onnxruntime'"),
                                       device_kind))
    assert msg == f"onnxruntime is not installed: pip install {package} (the 'resnet18-bench[{extra}]' extra)"


def test_an_installed_package_that_does_not_import_is_reinstalled():
    msg = one_line(availability_reason(OrtFacts(installed=(GPU_BUILD,), import_error="the module has no __version__"),
                                       "cuda"))
    assert "onnxruntime is not installed in a usable state" in msg and "onnxruntime-gpu 1.31.1" in msg
    assert "pip uninstall -y onnxruntime-gpu && pip install onnxruntime-gpu" in msg


def test_a_conflict_is_the_reason_before_anything_else():
    msg = availability_reason(gpu_facts(installed=(CPU_BUILD, GPU_BUILD)), "x86")
    assert msg and msg == package_conflict_reason((CPU_BUILD, GPU_BUILD), "x86")


# ---------------------------------------------------------------- gathering the facts
def test_facts_of_this_environment_on_cuda_never_start_a_provider_the_build_lacks(monkeypatch):
    def probe():
        raise AssertionError("the CUDA provider was probed although this build has no provider library")

    monkeypatch.setattr(ortmod, "cuda_session_error", probe)
    monkeypatch.setattr(ortmod, "_cuda_provider_library", lambda ort: None)
    facts = ortmod.ort_facts("cuda")
    assert facts.import_error is None and facts.version and "CPUExecutionProvider" in facts.providers


def test_a_gpu_build_is_probed_once_and_its_failure_becomes_the_skip_reason(monkeypatch):
    import onnxruntime
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on any --device cuda run

    def probe():
        calls.append(1)
        return "CUDA failure 100: no CUDA-capable device is detected"

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(GPU_PROVIDERS))
    monkeypatch.setattr(ortmod, "_cuda_provider_library", lambda ort: Path("libonnxruntime_providers_cuda.so"))
    monkeypatch.setattr(ortmod, "cuda_session_error", probe)
    reason = one_line(OnnxRuntime().unavailable_reason(CUDA))
    assert "cannot start here: CUDA failure 100: no CUDA-capable device is detected" in reason
    assert OnnxRuntime().unavailable_reason(X86) is None and len(calls) == 1  # a CPU device never probes


def test_without_a_gpu_a_gpu_build_is_not_probed(monkeypatch):
    import onnxruntime
    import torch

    def probe():
        raise AssertionError("probed without a GPU")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(GPU_PROVIDERS))
    monkeypatch.setattr(ortmod, "_cuda_provider_library", lambda ort: Path("libonnxruntime_providers_cuda.so"))
    monkeypatch.setattr(ortmod, "cuda_session_error", probe)
    assert ortmod.ort_facts("cuda").cuda_error is None


def test_a_half_deleted_module_is_not_installed_in_a_usable_state(monkeypatch):
    # What `pip uninstall onnxruntime` leaves of onnxruntime-gpu when both were installed.
    monkeypatch.setitem(sys.modules, "onnxruntime", SimpleNamespace(__file__="x/onnxruntime/__init__.py"))
    monkeypatch.setattr(ortmod, "installed_ort_distributions", lambda: (GPU_BUILD,))
    msg = one_line(OnnxRuntime().unavailable_reason(CUDA))
    assert "not installed in a usable state" in msg and "files are incomplete" in msg


# What ONNX Runtime 1.31.1 (onnxruntime-gpu) printed on a host without the CUDA libraries, as captured.
NO_CUBLAS = (
    "\x1b[1;31m2026-12-03 08:22:27.488622154 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] "
    "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& "
    "onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
    "/venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: "
    "libcublasLt.so.13: cannot open shared object file: No such file or directory\n\x1b[m\n"
    "\x1b[0;93m2026-12-03 08:22:27.488683225 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 "
    "CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. "
    "Please install all dependencies as mentioned in the GPU requirements page (https://onnxruntime.ai/...), make "
    "sure they're in the PATH, and that your GPU is supported.\x1b[m\n")


@pytest.mark.parametrize("printed,cause", [
    (NO_CUBLAS, "libcublasLt.so.13: cannot open shared object file: No such file or directory"),
    ("[E:onnxruntime:, cuda_call.cc:123 CudaCall] CUDA failure 100: no CUDA-capable device is detected ; "
     "GPU=0 ; hostname=h ; file=x ; line=1 ; expr=cudaSetDevice(info_.device_id);\n",
     "CUDA failure 100: no CUDA-capable device is detected"),
    ("[W:onnxruntime:Default] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. Please install "
     "all dependencies\n", "Require cuDNN 9.* and CUDA 13.*."),
    ("", "the session fell back to CPUExecutionProvider and said nothing"),
])
def test_the_cause_is_read_from_what_onnxruntime_printed(printed, cause):
    assert cuda_error_line(printed) == cause


def test_output_is_captured_at_the_file_descriptor_level_and_restored(capfd):
    with ortmod._captured_output() as printed:
        os.write(2, b"from C++\n")
        os.write(1, b"to stdout\n")
        print("from Python")
    assert "from C++" in printed[0] and "to stdout" in printed[0] and "from Python" in printed[0]
    os.write(2, b"after\n")
    assert "after" in capfd.readouterr().err


def test_the_probe_on_a_build_without_cuda_says_the_session_fell_back():
    # This host's build has no CUDA provider: the real probe must answer, not crash.
    ortmod.cuda_session_error.cache_clear()
    try:
        err = one_line(ortmod.cuda_session_error())
    finally:
        ortmod.cuda_session_error.cache_clear()
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert err  # a reason, whatever the build printed


# ---------------------------------------------------------------- skips and refusals in the CUDA plan
class _Config:
    def __init__(self, args):
        from _pytest.config.argparsing import Parser

        from bench.options import add_options

        parser = Parser(_ispytest=True)
        add_options(parser)
        self.ns, self.rootpath = parser.parse(args), REPO

    def getoption(self, name):
        return getattr(self.ns, name.lstrip("-").replace("-", "_"))


def _plan(device: Device, *args: str) -> dict[tuple[str, str], str | None]:
    import torch

    from bench.options import read_options
    from bench.session import BenchSession

    threads = torch.get_num_threads()
    try:
        session = BenchSession(read_options(_Config(["--device", device.kind, *args])), device, REPO, (32, 32))
        return {(p.case.variant, p.case.runtime): p.skip_reason for p in session.plan()}
    finally:
        torch.set_num_threads(threads)


def test_cuda_plan_with_the_cpu_build(monkeypatch):
    monkeypatch.setattr(ortmod, "ort_facts", lambda kind: cpu_facts())
    plan = _plan(CUDA, "--variant", "fp32,fp16,int8-dynamic,int8-static,prune-struct-0.5+int8")
    for variant in ("fp32", "fp16"):  # float variants run on CUDA in both torch runtimes
        assert plan[(variant, "eager")] is None and plan[(variant, "torchscript")] is None
    # int8 that could target CUDA is refused by each torch runtime (torch.ao has no CUDA kernels)...
    assert plan[("int8-dynamic", "eager")] == plan[("int8-dynamic", "torchscript")] == TORCH_AO_NO_CUDA_INT8
    # ...and static int8, built for a CPU backend, is no CUDA target at all.
    for variant in ("int8-static", "prune-struct-0.5+int8"):
        for rt in ("eager", "torchscript", "onnxruntime"):
            assert plan[(variant, rt)] == f"{variant} targets x86 (x86 backend), not cuda"
    # ONNX Runtime: the real cause (the CPU build), on every item it could otherwise run.
    reasons = {plan[(v, "onnxruntime")] for v in ("fp32", "fp16", "int8-dynamic")}
    assert len(reasons) == 1 and "pip uninstall -y onnxruntime && pip install 'resnet18-bench[gpu]'" in reasons.pop()


def test_cuda_plan_with_a_working_gpu_build(monkeypatch):
    monkeypatch.setattr(ortmod, "ort_facts", lambda kind: gpu_facts())
    plan = _plan(CUDA, "--variant", "fp32,fp16,int8-dynamic")
    assert plan[("fp32", "onnxruntime")] is None and plan[("fp16", "onnxruntime")] is None
    refusal = plan[("int8-dynamic", "onnxruntime")]
    assert refusal == get_runtime("onnxruntime").cuda_int8_refusal and "int8" in refusal


def test_fp16_is_refused_on_cpus_and_int8_static_arm_off_its_target():
    plan = _plan(X86, "--variant", "fp16")
    assert {plan[("fp16", rt)] for rt in ("eager", "torchscript", "onnxruntime")} == {
        get_recipe("fp16").off_target_reason("x86")}
    assert "CUDA" in get_recipe("fp16").off_target_reason("x86")
    assert get_recipe("fp16").off_target_reason("cuda") is None
    assert get_recipe("int8-static-arm").off_target_reason("cuda")  # a CPU backend, not a CUDA target


# ---------------------------------------------------------------- CUDA timing synchronizes
class _AsyncGpu:
    """A fake CUDA device: a call only enqueues work (as a kernel launch returns at once); the clock
    moves when torch.cuda.synchronize() waits for it. A clock read before the sync measures 0."""

    def __init__(self):
        self.t, self.pending, self.events = 1000.0, 0.0, []

    def perf_counter(self):  # stands in for measure.time
        self.events.append("clock")
        return self.t

    def synchronize(self):
        self.events.append("sync")
        self.t += self.pending
        self.pending = 0.0

    def workload(self, ms):
        def run(_x=None):
            self.events.append("launch")
            self.pending += ms / 1e3
        return run

    def assert_every_launch_synced_before_the_clock(self):
        waiting = False
        for e in self.events:
            if e == "launch":
                waiting = True
            elif e == "sync":
                waiting = False
            elif e == "clock":
                assert not waiting, f"the clock was read with work in flight: {self.events}"


class _Benchmark:
    """pytest-benchmark's pedantic(): times target() with the same clock, setup() untimed."""

    disabled = False

    def __init__(self, clock):
        self.clock, self.stats = clock, SimpleNamespace(stats=SimpleNamespace(data=[]))

    def pedantic(self, target, setup=None, rounds=1, iterations=1, warmup_rounds=0):
        for _ in range(rounds):
            args, kwargs = setup()
            t0 = self.clock.perf_counter()
            target(*args, **kwargs)
            self.stats.stats.data.append(self.clock.perf_counter() - t0)


@pytest.fixture
def gpu(monkeypatch):
    import torch

    fake = _AsyncGpu()
    monkeypatch.setattr(measure, "time", fake)
    monkeypatch.setattr(torch.cuda, "synchronize", fake.synchronize)
    return fake


SPEC = LatencySpec(min_samples=8, min_time_s=1.0, block=4, switch_calls=2, switch_time_s=0.0, warmup_time_s=0.0,
                   warmup_max_time_s=0.0, floor_samples=4)


def test_the_cuda_device_sync_is_torch_cuda_synchronize(gpu):
    CUDA.sync()
    assert gpu.events == ["sync"]


@pytest.mark.parametrize("disabled", [False, True], ids=["pedantic", "benchmark-disabled"])
def test_every_timed_latency_call_is_synchronized_before_the_clock_is_read(gpu, disabled):
    bench = _Benchmark(gpu)
    bench.disabled = disabled
    rec = measure_latency(bench, gpu.workload(2.0), [0, 1], CUDA.sync, SPEC,
                          reference=gpu.workload(4.0), ref_inputs=[0, 1])
    gpu.assert_every_launch_synced_before_the_clock()
    # Only a synchronized read sees the work: exact times, for candidate and reference alike.
    assert rec["samples_ms"] == [pytest.approx(2.0)] * len(rec["samples_ms"]) and len(rec["samples_ms"]) == 8
    assert rec["reference_samples_ms"] and set(map(round, rec["reference_samples_ms"])) == {4}
    assert rec["ratio_to_reference"] == pytest.approx(0.5)


def test_warm_up_and_throughput_synchronize_too(gpu):
    settled = warm_up([gpu.workload(3.0)], CUDA.sync, SPEC)
    assert settled == [pytest.approx(3.0)]
    rec = measure_throughput(gpu.workload(250.0), "batch", 256, CUDA.sync, min_time_s=1.0, min_batches=2)
    gpu.assert_every_launch_synced_before_the_clock()
    assert rec["batches"] == 4 and rec["img_s"] == pytest.approx(256 * 4 / 1.0)


def test_without_a_sync_the_fake_device_would_measure_nothing(gpu):
    # The fake is strict: leaving the sync out is caught (so the tests above prove something).
    assert measure._timed(gpu.workload(2.0), lambda: None) == 0.0
    with pytest.raises(AssertionError, match="in flight"):
        gpu.assert_every_launch_synced_before_the_clock()
    assert measure._timed(gpu.workload(2.0), CUDA.sync) == pytest.approx(4.0)  # its own and the earlier call


# ---------------------------------------------------------------- the GPU line and the scripts
def test_cuda_description_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert one_line(cuda_description()).startswith("no CUDA GPU visible to torch (torch ")


def test_cuda_description_names_gpu_memory_driver_and_stack(monkeypatch):
    import torch

    from bench import devices

    props = SimpleNamespace(name="NVIDIA H200", major=9, minor=0, total_memory=150 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: props)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 92400)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(devices, "_nvidia_driver", lambda: "580.159.03")
    line = one_line(cuda_description())
    assert line.startswith("NVIDIA H200 (sm_90, 150.0 GiB, 1 visible), driver 580.159.03, torch ")
    assert line.endswith("CUDA 13.0, cuDNN 92400")


@pytest.mark.parametrize("script", ["scripts/gpu-check.sh", "scripts/setup.sh"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(REPO / script)], check=True)


def test_setup_removes_the_same_packages_the_plugin_detects():
    text = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    listed = re.search(r"ORT_PACKAGES=\(([^)]*)\)", text).group(1).split()
    assert listed == list(ORT_DISTRIBUTIONS)


@pytest.mark.parametrize("extras", ["dev,cpu,gpu", "gpu,cpu", "dev", ""])
def test_setup_refuses_anything_but_exactly_one_onnxruntime_extra(extras):
    # Refused before anything is created or installed.
    r = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PROJECT_EXTRAS": extras or ","})
    assert r.returncode == 2 and "exactly one ONNX Runtime extra" in r.stderr, r.stderr


def test_gpu_check_help_and_unknown_arguments():
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--dry-run" in r.stdout and "OUT" in r.stdout
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), "--fast"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "unknown argument --fast" in r.stderr
