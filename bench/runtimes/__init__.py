"""Runtime adapters, one small class each. The registry order is the order items run in."""
from __future__ import annotations

from .base import Handle, LoadRequest, Runtime
from .eager import EagerRuntime
from .onnxruntime import OnnxRuntime
from .torchscript import TorchScriptRuntime

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (EagerRuntime(), TorchScriptRuntime(), OnnxRuntime())}

__all__ = ["RUNTIMES", "Handle", "LoadRequest", "Runtime"]
