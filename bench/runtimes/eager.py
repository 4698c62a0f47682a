"""PyTorch eager: the module as built. The reference every other runtime is checked against."""
from __future__ import annotations

import torch

from compress import quantize

from .base import Handle, LoadRequest, Runtime


def torch_handle(name: str, module, req: LoadRequest, path, info: dict) -> Handle:
    dev = req.device.torch_device
    dtype = torch.float16 if req.recipe.kind == "fp16" else torch.float32
    channels_last = req.device.kind == "cuda"
    backend = req.artifact.manifest.get("backend")

    def prepare(x: torch.Tensor):
        x = x.to(dev, dtype=dtype)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def run(x):
        if backend:
            torch.backends.quantized.engine = backend
        with torch.inference_mode():
            return module(x)

    return Handle(name, prepare, run, lambda y: y.float().cpu().numpy(), path, info)


class EagerRuntime(Runtime):
    name = "eager"
    int8_module_per_shape = True

    def unsupported_reason(self, recipe, device):
        if device.kind == "cuda" and recipe.kind == "int8":
            return "torch.ao int8 modules have no CUDA kernels: int8 runs on CPU backends only"
        return None

    def load(self, req: LoadRequest) -> Handle:
        model = req.model.to(req.device.torch_device)
        if req.device.kind == "cuda":
            model = model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # warm-up then includes cuDNN autotuning
        info = {"threads": torch.get_num_threads(), "quantized_engine": req.artifact.manifest.get("backend"),
                "quantized": quantize.is_quantized(model)}
        return torch_handle(self.name, model, req, req.artifact.weights_path, info)
