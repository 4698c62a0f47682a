"""ONNX Runtime: the float model exported to ONNX; int8 variants quantized by ONNX Runtime itself.

ONNX Runtime cannot load torch.ao int8 modules, so an int8 variant is rebuilt here the way an
ONNX deployment would make it: export the same float model the PyTorch variant started from,
then ORT static quantization (QDQ, per-channel, S8S8) calibrated on the same train images.

Which ONNX Runtime is installed, and whether it can run on CUDA, is decided by two pure functions
(``package_conflict_reason`` and ``availability_reason``) over facts gathered once (``ort_facts``):
ONNX Runtime supports exactly one of its packages per environment (``onnxruntime`` for CPUs,
``onnxruntime-gpu`` for CUDA); two of them in one site-packages overwrite each other's files.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.errors import UserError
from compress.registry import WeightsFormat

from .base import (
    Handle,
    LoadRequest,
    Runtime,
    RuntimeOption,
    cached_file,
    calibration_batches,
    module_version,
    verified_bytes,
)
from .onnx_export import OPSET, export_onnx
from .registry import register_runtime

TENSORRT = "TensorrtExecutionProvider"
CUDA_EPS = {"cuda": "CUDAExecutionProvider", "tensorrt": TENSORRT}  # --ort-cuda-ep -> the provider it starts
SPINNING = "session.intra_op.allow_spinning"  # set on every session, read back into runtime_info
OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
              "disabled": "ORT_DISABLE_ALL"}


def _shrink_options():
    """Run options that hand the CPU arena back after a batched call (accuracy passes,
    throughput). Without them each session keeps the arena its largest batch needed, about 1 GB
    for 256 images at 224x224, and a run with a dozen sessions stacks them. Batch-1 latency calls
    keep the arena: they are what is timed."""
    ro = _ort().RunOptions()
    ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return ro


def _ort():
    import onnxruntime

    return onnxruntime


@register_runtime
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    run_order = 20
    requantizes_int8 = True
    cuda_int8_refusal = "ORT's CUDA provider has no int8 Conv kernels: QDQ int8 would run dequantized in fp32"
    options = (
        RuntimeOption("--ort-opt-level", "all", "ONNX Runtime graph optimization level (recorded in the results)",
                      choices=tuple(OPT_LEVELS)),
        RuntimeOption("--ort-int8-format", "qdq", "ONNX Runtime static int8: qdq (QuantizeLinear/DequantizeLinear, "
                      "uint8 activations, int8 weights), qdq-s8s8 (int8 activations: slow kernels on x86) or "
                      "qoperator (QLinearConv, U8S8); recorded in the results", choices=("qdq", "qdq-s8s8", "qoperator")),
        RuntimeOption("--ort-cuda-ep", "cuda", "ONNX Runtime provider on --device cuda: cuda (CUDAExecutionProvider) "
                      "or tensorrt (TensorrtExecutionProvider, fp16 kernels for fp16 variants; engines are built in "
                      "memory every run, never cached); recorded in the results", choices=tuple(CUDA_EPS)),
    )

    def versions(self):
        return {"onnxruntime": module_version("onnxruntime"), "onnx": module_version("onnx")}

    def unavailable_reason(self, device):
        return availability_reason(ort_facts(device.kind), device.kind)

    def usage_error(self, device, options):
        conflict = package_conflict(device.kind)  # two ONNX Runtime packages: say what to uninstall
        if conflict or device.kind != "cuda" or options.get("ort_cuda_ep", "cuda") != "tensorrt":
            return conflict
        facts = ort_facts(device.kind)
        return None if facts.import_error else tensorrt_reason(facts.providers)

    def load(self, req: LoadRequest) -> Handle:
        ort = _ort()
        kind = req.recipe.kind
        dynamic = req.recipe.weights_format is WeightsFormat.TORCH_INT8_DYNAMIC
        int8_format = self.option(req, "ort_int8_format")
        key = {"ort": ort.__version__, "torch": torch.__version__, "opset": OPSET, "kind": kind.value,
               "dynamic": dynamic, "calibration": req.artifact.manifest.get("calibration"),
               "int8_format": int8_format if kind.quantized and not dynamic else None}

        def export(tmp, model, dtype):
            export_onnx(model, req.card.input_size, tmp, dtype)

        def make(tmp):
            if kind.quantized:
                float_path = tmp.with_name(tmp.name + ".fp32.onnx")
                export(float_path, req.float_model, torch.float32)
                try:
                    if dynamic:
                        quantize_dynamic_onnx(float_path, tmp)
                    else:
                        quantize_static_onnx(float_path, tmp, req, int8_format)
                finally:
                    float_path.unlink(missing_ok=True)
            else:
                export(tmp, req.model, torch.float16 if kind.half else torch.float32)

        # One file per int8 format, so that runs with either format never rebuild each other's.
        suffix = f"-{int8_format}" if key["int8_format"] else ""
        path = cached_file(req.artifact, f"model-{req.device.kind}{suffix}.onnx", key, make)
        so = ort.SessionOptions()
        so.intra_op_num_threads = req.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = OPT_LEVELS[self.option(req, "ort_opt_level")]
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        so.log_severity_level = 3
        # Spinning on (ONNX Runtime's default): without it every parallel op wakes a sleeping
        # worker, and on a VM a wake-up costs what a 32x32 conv does. fp32 at 32x32 read 0.9-1.7 ms
        # (moving with the host's load) instead of 0.5-0.6 ms; 224x224 is the same either way. Its
        # cost, workers spinning ~60 ms after a call, is absorbed by measure._switch_to
        # (docs/PERFORMANCE.md).
        so.add_session_config_entry(SPINNING, "1")
        ep = self.option(req, "ort_cuda_ep")
        sess = ort.InferenceSession(verified_bytes(path), so, providers=provider_list(req.device.kind, ep, kind.half))
        wanted = CUDA_EPS[ep] if req.device.kind == "cuda" else "CPUExecutionProvider"
        if sess.get_providers()[0] != wanted:  # ONNX Runtime falls back silently: never time the fallback
            raise UserError(f"ONNX Runtime did not start {wanted} (the session runs on {sess.get_providers()[0]}); "
                            f"see the skip reasons of a run without --ort-cuda-ep, or nvidia-smi")
        in_dtype = np.float16 if kind.half else np.float32
        info = {"providers": sess.get_providers(), "graph_optimization_level": level,
                "intra_op_threads": req.threads, "inter_op_threads": 1, "execution_mode": "sequential",
                "allow_spinning": sess.get_session_options().get_session_config_entry(SPINNING) == "1",
                "opset": OPSET, "onnxruntime": ort.__version__, "arena_shrinkage": "after batched calls",
                "provider_options": sess.get_provider_options().get(sess.get_providers()[0]),
                "quantization": None if not kind.quantized else ("dynamic (MatMul/Gemm)" if dynamic else
                                                             STATIC_FORMATS[int8_format][0])}
        name = sess.get_inputs()[0].name
        shrink = _shrink_options()
        return Handle(
            self.name,
            prepare=lambda x: np.ascontiguousarray(x.cpu().numpy().astype(in_dtype, copy=False)),
            run=lambda x: sess.run(None, {name: x}, shrink if x.shape[0] > 1 else None)[0],
            to_numpy=lambda y: np.asarray(y, dtype=np.float32),
            path=path, info=info)


def provider_list(device_kind: str, ep: str = "cuda", half: bool = False) -> list:
    """Pure: the providers a session asks for, first choice first. TensorRT engines are built in
    memory each run (an engine cache is a binary plan another user could swap), fp16 kernels only
    for fp16 variants; CUDA and then the CPU take what TensorRT cannot run."""
    if device_kind != "cuda":
        return ["CPUExecutionProvider"]
    if ep == "tensorrt":
        trt = {"trt_fp16_enable": "True" if half else "False", "trt_engine_cache_enable": "False"}
        return [(TENSORRT, trt), CUDA_EPS["cuda"], "CPUExecutionProvider"]
    return [CUDA_EPS["cuda"], "CPUExecutionProvider"]


def tensorrt_reason(providers) -> str | None:
    """Pure: why --ort-cuda-ep tensorrt cannot work with these available providers; None if it can."""
    if TENSORRT in providers:
        return None
    return (f"--ort-cuda-ep tensorrt: this ONNX Runtime lists no {TENSORRT} (providers: "
            f"{', '.join(providers) or 'none'}); it ships in onnxruntime-gpu (pip install 'resnet18-bench[gpu]') "
            f"and loads TensorRT 10's libraries (pip install tensorrt); or drop --ort-cuda-ep")


# Static int8 as ONNX Runtime's own quantizer writes it. Measured on the CIFAR-10 reference, batch 1,
# 2 threads (docs/PERFORMANCE.md): what matters is the activation type, not the format. With uint8
# activations (U8S8) both QDQ and QOperator run ORT's fast int8 conv kernels (6.6 / 6.8 ms at
# 224x224, fp32 21.7 ms); with int8 activations (S8S8) ORT falls back to slow paths (16.4 ms at
# 224x224, and at 32x32 2.3 ms, slower than fp32's 0.9 ms). Same top-1 on 2,000 images.
STATIC_FORMATS = {
    "qdq": ("static QDQ, per-channel, U8S8, MinMax calibration", "QDQ", "QUInt8"),
    "qdq-s8s8": ("static QDQ, per-channel, S8S8, MinMax calibration", "QDQ", "QInt8"),
    "qoperator": ("static QOperator (QLinearConv), per-channel, U8S8, MinMax calibration", "QOperator", "QUInt8"),
}


def quantize_static_onnx(src, dst, req: LoadRequest, int8_format: str = "qdq") -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = calibration_batches(req)

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"input": x}

    pre = dst.with_name(dst.name + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        _, fmt, act = STATIC_FORMATS[int8_format]
        quantize_static(str(pre), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                        activation_type=getattr(QuantType, act), weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        pre.unlink(missing_ok=True)


def quantize_dynamic_onnx(src, dst) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Mirror the PyTorch recipe: only the Linear layer (Gemm/MatMul) gets int8 weights.
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["Gemm", "MatMul"], weight_type=QuantType.QInt8)


# ---------------------------------------------------------------- which ONNX Runtime is installed
# Every distribution that installs the `onnxruntime` module (any other one is found through its
# files too: see installed_ort_distributions). Two of them in one site-packages write the same
# files: the one installed last wins file by file, and uninstalling either deletes files both own.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn", "onnxruntime-rocm", "onnxruntime-migraphx", "onnxruntime-training",
                     "onnxruntime-cann", "onnxruntime-vitisai", "onnxruntime-coreml", "onnxruntime-silicon",
                     "onnxruntime-azure")
# The package each extra of this project installs (pyproject.toml): one per target.
EXTRA_PACKAGE = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True, order=True)
class OrtDist:
    name: str  # normalized distribution name, e.g. "onnxruntime-gpu"
    version: str
    location: str  # the site-packages folder that holds it


@dataclass(frozen=True)
class OrtFacts:
    """What this environment holds, gathered by ``ort_facts``; judged by ``availability_reason``."""
    installed: tuple[OrtDist, ...] = ()
    import_error: str | None = None  # why `import onnxruntime` failed (or gave a module without its API)
    version: str | None = None  # onnxruntime.__version__ of the imported module
    package: str | None = None  # the distribution the imported module says it is (build_and_package_info)
    cuda_build: str | None = None  # the CUDA version a GPU build was built for
    providers: tuple[str, ...] = ()  # get_available_providers()
    cuda_error: str | None = None  # why a CUDA session could not start; None if it did or was not tried


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extra_for(device_kind: str | None) -> str | None:
    return None if device_kind is None else ("gpu" if device_kind == "cuda" else "cpu")


def _install_hint(device_kind: str | None) -> str:
    extra = _extra_for(device_kind)
    if extra is None:
        return "pip install 'resnet18-bench[cpu]' (or 'resnet18-bench[gpu]' on a CUDA host)"
    return f"pip install 'resnet18-bench[{extra}]'"


def package_conflict_reason(installed: Iterable[OrtDist], device_kind: str | None = None) -> str | None:
    """Pure: one line naming what to uninstall when two ONNX Runtime distributions share one
    site-packages (they share one module); None when there is at most one per folder. A package in
    another folder is merely shadowed by the first on sys.path, which is a working setup."""
    by_folder: dict[str, dict[str, str]] = {}
    for d in installed:
        by_folder.setdefault(d.location, {})[d.name] = d.version
    for folder, found in sorted(by_folder.items()):
        if len(found) > 1:
            names = sorted(found)
            listing = " and ".join(f"{n} {found[n]}" for n in names)
            return (f"{listing} are installed together in {folder}: they share one 'onnxruntime' module and "
                    f"overwrite each other's files (ONNX Runtime supports exactly one package; removing one of "
                    f"them breaks the other), so remove all and install the one for this device: "
                    f"pip uninstall -y {' '.join(names)} && {_install_hint(device_kind)}")
    return None


def availability_reason(facts: OrtFacts, device_kind: str) -> str | None:
    """Pure: why ONNX Runtime cannot run on ``device_kind`` with these facts, naming the real cause
    and the fix in one line; None when it can."""
    conflict = package_conflict_reason(facts.installed, device_kind)
    if conflict:
        return conflict
    extra = _extra_for(device_kind)
    wanted = EXTRA_PACKAGE[extra]
    if facts.import_error is not None:
        if not facts.installed:
            return f"onnxruntime is not installed: pip install {wanted} (the 'resnet18-bench[{extra}]' extra)"
        names = sorted({d.name for d in facts.installed})
        listing = ", ".join(sorted({f"{d.name} {d.version}" for d in facts.installed}))
        return (f"onnxruntime is not installed in a usable state: {listing} is there but `import onnxruntime` "
                f"fails ({facts.import_error}); reinstall it: pip uninstall -y {' '.join(names)} && "
                f"pip install {wanted} (the 'resnet18-bench[{extra}]' extra)")
    if device_kind != "cuda":
        return None  # every build (the GPU one too) has the CPU provider
    names = {d.name for d in facts.installed}
    build = facts.package or (next(iter(names)) if len(names) == 1 else "onnxruntime")
    label = f"{build} {facts.version}" if facts.version else build
    if CUDA not in facts.providers:
        providers = ", ".join(facts.providers) or "none"
        if build == EXTRA_PACKAGE["gpu"]:
            return (f"{label} lists no {CUDA} (providers: {providers}): the GPU build is damaged; reinstall it: "
                    f"pip uninstall -y {build} && pip install 'resnet18-bench[gpu]'")
        return (f"{label} is a build without CUDA: no {CUDA} (providers: {providers}); "
                f"pip uninstall -y {build} && pip install 'resnet18-bench[gpu]' (onnxruntime-gpu)")
    if facts.cuda_error:
        major = facts.cuda_build.split(".")[0] if facts.cuda_build else None
        built = f" (built for CUDA {facts.cuda_build})" if facts.cuda_build else ""
        libs = f"CUDA {major}.x and cuDNN 9" if major else "CUDA and cuDNN"
        if re.search(r"libcuda\.so|driver", facts.cuda_error, re.I):
            fix = f"the NVIDIA driver is missing or too old for CUDA {major or '(its version)'}: nvidia-smi must work"
        else:
            fix = (f"it needs the {libs} libraries (pip install 'resnet18-bench[gpu]' installs them as pip packages, "
                   f"as a CUDA build of torch does) and a driver that supports them (nvidia-smi)")
        return f"{label}{built} has a {CUDA} but it cannot start here: {facts.cuda_error}; {fix}"
    return None


@functools.lru_cache(maxsize=1)
def installed_ort_distributions() -> tuple[OrtDist, ...]:
    """Every installed distribution that provides the `onnxruntime` module, on all of sys.path (read
    once per process: the plan asks for every item). A name outside ORT_DISTRIBUTIONS counts when its
    files hold onnxruntime/__init__.py (onnxruntime-extensions, onnxruntime-genai and the like do not)."""
    from importlib.metadata import distributions

    found = set()
    for dist in distributions():
        name = _norm(dist.metadata["Name"] or "")
        if name in ORT_DISTRIBUTIONS or (name.startswith("onnxruntime") and any(
                f.as_posix() == "onnxruntime/__init__.py" for f in dist.files or ())):
            found.add(OrtDist(name, dist.version, str(Path(dist.locate_file("")).resolve())))
    return tuple(sorted(found))


def package_conflict(device_kind: str | None = None) -> str | None:
    """The start-up check (bench/plugin.py, pytest_configure): a one-line usage error when two ONNX
    Runtime packages are installed in one environment, naming what to uninstall; None otherwise."""
    return package_conflict_reason(installed_ort_distributions(), device_kind)


def ort_facts(device_kind: str) -> OrtFacts:
    """Gather what ``availability_reason`` judges. On CUDA, a GPU build's provider is started once
    (a one-node session) when its library is present: listing a provider does not mean it loads."""
    installed = installed_ort_distributions()
    try:
        ort = _ort()
        version, providers = ort.__version__, tuple(ort.get_available_providers())
    except ImportError as e:
        return OrtFacts(installed, import_error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    except AttributeError:  # a module left half-deleted, e.g. by uninstalling one of two packages
        return OrtFacts(installed, import_error="the module has no __version__ or get_available_providers: "
                                                "its files are incomplete")
    package = cuda_build = None
    try:
        from onnxruntime.capi import build_and_package_info as info

        package, cuda_build = getattr(info, "package_name", None), getattr(info, "cuda_version", None)
    except ImportError:
        pass
    cuda_error = None
    # Only where torch sees a GPU (always so on --device cuda): elsewhere there is nothing to start.
    if device_kind == "cuda" and CUDA in providers and _cuda_provider_library(ort) is not None \
            and torch.cuda.is_available():
        cuda_error = cuda_session_error()
    return OrtFacts(installed, None, version, package and _norm(package), cuda_build, providers, cuda_error)


def _cuda_provider_library(ort) -> Path | None:
    capi = Path(ort.__file__).parent / "capi"
    for name in ("libonnxruntime_providers_cuda.so", "onnxruntime_providers_cuda.dll"):
        if (capi / name).is_file():
            return capi / name
    return None


@contextlib.contextmanager
def _captured_output():
    """Everything written to stdout/stderr, at the file-descriptor level too (ONNX Runtime logs from
    C++), while the block runs: yields a list that holds the text afterwards."""
    out: list[str] = []
    py = io.StringIO()
    with tempfile.TemporaryFile() as tmp:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        try:
            for fd in saved:
                os.dup2(tmp.fileno(), fd)
            with contextlib.redirect_stdout(py), contextlib.redirect_stderr(py), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield out
        finally:
            for fd, copy_fd in saved.items():
                os.dup2(copy_fd, fd)
                os.close(copy_fd)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace") + py.getvalue())


def cuda_error_line(text: str) -> str:
    """Pure: the cause, from what ONNX Runtime printed when its CUDA provider did not start."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for pattern in (r"Failed to load library \S+ with error: (.+)", r"(CUDA failure \d+: .+?)(?: ; GPU=.*)?$",
                    r"(CUDNN failure \d+: .+?)(?: ; GPU=.*)?$", r"(CUDA error[^\n]+)",
                    r"Failed to create CUDAExecutionProvider\. ?(.+?)(?: Please install.*)?$", r"EP Error (.+)"):
        m = re.search(pattern, text, re.M)
        if m:
            return m.group(1).strip()[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "the session fell back to CPUExecutionProvider and said nothing"


@functools.lru_cache(maxsize=1)
def cuda_session_error() -> str | None:
    """Start ONNX Runtime's CUDA provider on a one-node model, once per process: None if it ran on
    CUDA, else why not. ONNX Runtime does not raise here: it logs and falls back to the CPU."""
    import onnx
    from onnx import TensorProto, helper

    ort = _ort()
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "cuda-probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what every ONNX Runtime >= 1.18 reads
    onnx.checker.check_model(model)
    error = None
    with _captured_output() as printed:
        try:
            # torch is imported already (as in every run): its CUDA libraries are the ones the provider finds.
            sess = ort.InferenceSession(model.SerializeToString(), providers=[CUDA, "CPUExecutionProvider"])
            if sess.get_providers()[0] == CUDA:
                y = sess.run(None, {"x": np.array([-1, 0, 1, 2], np.float32)})[0]
                if not np.array_equal(y, [0, 0, 1, 2]):
                    error = f"a one-node CUDA session returned {y.tolist()} for Relu([-1, 0, 1, 2])"
            else:
                error = ""
        except Exception as e:  # any failure here is a reason to skip, never a crash of the run
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if error == "":
        error = cuda_error_line(printed[0])
    return error
