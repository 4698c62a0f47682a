"""AOTInductor: the PyTorch 2 deployment path. ``torch.export`` then
``torch._inductor.aoti_compile_and_package`` with freezing (weights folded into the compiled
kernels), loaded with ``aoti_load_package`` as a C++ or Python server would: no Python model code at
run time. Replaces TorchScript, which torch 2.14 deprecates.

int8 variants are re-quantized from the float parent with PT2E (bench/runtimes/pt2e.py) on the same
calibration images (resized to the package's input size: the quantized graph is specialized to
one spatial size), then compiled: Inductor lowers the quantized graph to oneDNN int8 kernels.

Shapes: the package for the accuracy pass has a dynamic batch dimension at the card's input size;
every timed shape gets a package compiled for exactly that shape (a deployment serves one shape,
and a dynamic batch cost 26.2 ms instead of 20.4 ms for batch 1 at 224x224 in fp32).

A package is a shared library: it is loaded only from bytes this run made or authenticated
(cached_file's signed record), copied into a private directory first.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import torch

from compress.registry import WeightsFormat

from .base import Handle, LoadRequest, Runtime, cached_file, calibration_batches, dist_version, verified_bytes
from .pt2e import FLOW_VERSION as PT2E_FLOW_VERSION
from .registry import register_runtime

INSTALL_TORCHAO = "pip install 'resnet18-bench[pt2]'"


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor will call ($CXX, else the first of g++, c++, clang++ on PATH)."""
    import os

    cxx = os.environ.get("CXX")
    for name in ([cxx] if cxx else []) + ["g++", "c++", "clang++"]:
        found = shutil.which(name)
        if found:
            return found
    return None


def shape_tag(shape: tuple[int, int, int] | None, input_size: tuple[int, int]) -> str:
    """Pure: the package's shape in its file name: "224x224-b1", or "32x32-bdyn" (dynamic batch)."""
    if shape is None:
        return f"{input_size[0]}x{input_size[1]}-bdyn"
    h, w, b = shape
    return f"{h}x{w}-b{b}"


@register_runtime
class AOTInductorRuntime(Runtime):
    name = "aotinductor"
    run_order = 15
    requantizes_int8 = True
    static_shapes = True
    cuda_int8_refusal = "PT2E int8 here targets Inductor's x86 CPU kernels: no CUDA int8 path"

    def versions(self):
        return {"torchao": dist_version("torchao")}

    def unavailable_reason(self, device):
        if cxx_compiler() is None:
            return "AOTInductor compiles C++ and no compiler is on PATH: install g++ (apt-get install g++) or set CXX"
        return None

    def unsupported_reason(self, recipe, device):
        if recipe.kind.quantized:
            if device.kind == "arm":
                return ("PT2E int8 here uses X86InductorQuantizer (x86 kernels); an ARM int8 path "
                        "(ArmInductorQuantizer) is not wired")
            if device.kind == "x86" and dist_version("torchao") is None:
                return f"PT2E int8 needs torchao, which is not installed: {INSTALL_TORCHAO}"
        return super().unsupported_reason(recipe, device)

    def load(self, req: LoadRequest) -> Handle:
        kind = req.recipe.kind
        dev = torch.device(req.device.torch_device)
        dtype = torch.float16 if kind.half else torch.float32
        dynamic = req.recipe.weights_format is WeightsFormat.TORCH_INT8_DYNAMIC
        tag = shape_tag(req.shape, req.card.input_size)
        key = {"torch": torch.__version__, "torchao": dist_version("torchao") if kind.quantized else None,
               "kind": kind.value, "dynamic": dynamic, "shape": tag, "device": req.device.kind, "freezing": True,
               "calibration": req.artifact.manifest.get("calibration") if kind.quantized else None,
               "pt2e_flow": PT2E_FLOW_VERSION if kind.quantized else None}

        def make(tmp: Path):
            if kind.quantized:
                from .pt2e import quantize_x86

                # The quantized graph is specialized to one spatial size: calibrated at that size.
                size = req.shape[:2] if req.shape else req.card.input_size
                module = quantize_x86(req.float_model, size, calibration_batches(req, size=size),
                                      dynamic_linear_only=dynamic)
            else:
                module = copy.deepcopy(req.model).to(dev, dtype=dtype).eval()
            package = tmp.with_name(tmp.name + ".pt2")  # the packager insists on the suffix
            compile_package(module, req.shape, req.card.input_size, package, dev, dtype)
            package.replace(tmp)

        path = cached_file(req.artifact, f"aoti-{req.device.kind}-{tag}.pt2", key, make)
        runner = load_package(path)
        info = {"compiler": "AOTInductor (torch.export, freezing)", "shape": tag, "threads": torch.get_num_threads(),
                "quantization": None if not kind.quantized else (
                    "PT2E X86InductorQuantizer, dynamic, Linear only" if dynamic else
                    f"PT2E X86InductorQuantizer, static, per-channel, {len(req.calibration)} calibration images")}

        def prepare(x: torch.Tensor):
            return x.to(dev, dtype=dtype).contiguous()

        def run(x):
            with torch.inference_mode():
                return runner(x)

        def to_numpy(y):
            y = y[0] if isinstance(y, (list, tuple)) else y
            return y.float().cpu().numpy()

        return Handle(self.name, prepare, run, to_numpy, path, info)


def compile_package(module, shape, input_size, path: Path, dev, dtype) -> None:
    from .pt2e import batch_dim

    if shape is None:  # accuracy pass: any batch at the card's input size
        example = (torch.zeros(2, 3, *input_size, device=dev, dtype=dtype),)
        dynamic_shapes = ({0: batch_dim()},)
    else:
        h, w, b = shape
        example = (torch.zeros(b, 3, h, w, device=dev, dtype=dtype),)
        dynamic_shapes = None
    import torch._inductor.config as inductor_config

    with torch.no_grad(), inductor_config.patch(freezing=True):
        program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))


def load_package(path: Path):
    """The compiled model of a cached package, from its verified bytes (never from the cache path,
    which another user may swap between the check and the load)."""
    private = Path(tempfile.mkdtemp(prefix="resnet18-bench-aoti-"))
    try:
        copy_path = private / "model.pt2"
        copy_path.write_bytes(verified_bytes(path))
        return torch._inductor.aoti_load_package(str(copy_path))
    finally:
        shutil.rmtree(private, ignore_errors=True)



