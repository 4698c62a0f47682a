"""Runtime adapters, one self-describing class each (bench/runtimes/base.py says what a runtime
declares). Importing this package registers the built-in ones."""
from __future__ import annotations

from . import aotinductor, eager, onnxruntime, openvino, torchscript  # noqa: F401  (each registers its runtime on import)
from .base import Handle, LoadRequest, Runtime, RuntimeOption
from .registry import get_runtime, register_runtime, runtimes

__all__ = ["Handle", "LoadRequest", "Runtime", "RuntimeOption", "get_runtime", "register_runtime", "runtimes"]
