"""TorchScript: traced and frozen, saved to disk and loaded back, as a LibTorch (C++) program would."""
from __future__ import annotations

import io
import warnings

import torch

from .base import TORCH_AO_NO_CUDA_INT8, Handle, LoadRequest, Runtime, cached_file, verified_bytes
from .eager import torch_handle
from .registry import register_runtime


@register_runtime
class TorchScriptRuntime(Runtime):
    name = "torchscript"
    run_order = 10
    int8_module_per_shape = True
    cuda_int8_refusal = TORCH_AO_NO_CUDA_INT8
    note = ("deprecated by PyTorch: torch 2.14 warns on every torch.jit.trace/freeze/save/load and points to "
            "torch.export; kept because deployed LibTorch programs still load it (successor here: aotinductor)")

    def load(self, req: LoadRequest) -> Handle:
        dev = req.device.torch_device
        dtype = torch.float16 if req.recipe.kind.half else torch.float32
        backend = req.recipe.backend

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
        # TorchScript runs code while loading (a module's __setstate__): load only the bytes whose
        # sha256 matches the record authenticated with this user's key, read once (no swap between
        # the check and the load).
        module = torch.jit.load(io.BytesIO(verified_bytes(path)), map_location=dev)
        info = {"frozen": True, "threads": torch.get_num_threads(), "quantized_engine": backend}
        return torch_handle(self.name, module, req, path, info)
