"""TorchScript: traced and frozen, saved to disk and loaded back, as a LibTorch (C++) program would."""
from __future__ import annotations

import warnings

import torch

from .base import Handle, LoadRequest, Runtime, cached_file, verified
from .eager import torch_handle


class TorchScriptRuntime(Runtime):
    name = "torchscript"
    int8_module_per_shape = True

    def unsupported_reason(self, recipe, device):
        if device.kind == "cuda" and recipe.kind == "int8":
            return "torch.ao int8 modules have no CUDA kernels: int8 runs on CPU backends only"
        return None

    def load(self, req: LoadRequest) -> Handle:
        dev = req.device.torch_device
        dtype = torch.float16 if req.recipe.kind == "fp16" else torch.float32
        backend = req.artifact.manifest.get("backend")

        def make(tmp):
            if backend:
                torch.backends.quantized.engine = backend
            example = torch.zeros(1, 3, *req.card.input_size, device=dev, dtype=dtype)
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python control flow: ResNet18 has none
                traced = torch.jit.trace(req.model.to(dev).eval(), example)
                frozen = torch.jit.freeze(traced)
            torch.jit.save(frozen, str(tmp))

        path = cached_file(req.artifact, f"torchscript-{req.device.kind}.pt",
                           {"torch": torch.__version__, "device": req.device.kind}, make)
        module = torch.jit.load(str(verified(path)), map_location=dev)
        info = {"frozen": True, "threads": torch.get_num_threads(), "quantized_engine": backend}
        return torch_handle(self.name, module, req, path, info)
