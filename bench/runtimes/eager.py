"""PyTorch eager: the module as built. The reference every other runtime is checked against."""
from __future__ import annotations

import torch

from compress import quantize

from .base import TORCH_AO_NO_CUDA_INT8, Handle, LoadRequest, Runtime, module_version
from .registry import register_runtime


def torch_handle(name: str, module, req: LoadRequest, path, info: dict) -> Handle:
    dev = req.device.torch_device
    dtype = torch.float16 if req.recipe.kind.half else torch.float32
    channels_last = req.device.kind == "cuda"
    backend = req.recipe.backend

    def prepare(x: torch.Tensor):
        x = x.to(dev, dtype=dtype)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def run(x):
        if backend:
            torch.backends.quantized.engine = backend
        with torch.inference_mode():
            return module(x)

    return Handle(name, prepare, run, lambda y: y.float().cpu().numpy(), path, info)


@register_runtime
class EagerRuntime(Runtime):
    name = "eager"
    run_order = 0
    int8_module_per_shape = True
    cuda_int8_refusal = TORCH_AO_NO_CUDA_INT8

    def versions(self):
        return {"torch": torch.__version__, "torchvision": module_version("torchvision")}

    def load(self, req: LoadRequest) -> Handle:
        model = req.model.to(req.device.torch_device)
        if req.device.kind == "cuda":
            model = model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # warm-up then includes cuDNN autotuning
        info = {"threads": torch.get_num_threads(), "quantized_engine": req.recipe.backend,
                "quantized": quantize.is_quantized(model)}
        return torch_handle(self.name, model, req, req.artifact.weights_path, info)
