"""int8 and fp16 conversions. One place decides which quantization API gives real int8 kernels.

Choice (torch 2.14): FX graph mode from ``torch.ao.quantization`` for eager PyTorch and TorchScript.
It is deprecated in favour of PT2E (torchao), but PT2E's converted model runs reference
quantize/dequantize + fp32 ops in eager mode and only gets int8 kernels through torch.compile;
FX's converted modules call fbgemm/onednn (x86) or qnnpack (ARM) int8 kernels directly, and
trace into TorchScript. ONNX Runtime quantizes its own graph (bench/runtimes) from the same
calibration images.
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch

from .cards import ModelCard
from .data import Split

BACKENDS = ("x86", "qnnpack")


@contextlib.contextmanager
def _quiet_ao():
    # torch.ao prints a multi-line deprecation notice on every call; the choice is documented above.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.ao")
        yield


def set_engine(backend: str) -> None:
    if backend not in torch.backends.quantized.supported_engines:
        from .errors import UserError

        raise UserError(f"quantized engine {backend!r} is not in this torch build "
                        f"(supported: {', '.join(torch.backends.quantized.supported_engines)})")
    torch.backends.quantized.engine = backend


def host_backend() -> str:
    """x86 where its kernels exist (fbgemm/onednn), else qnnpack (ARM)."""
    return "x86" if "x86" in torch.backends.quantized.supported_engines else "qnnpack"


def quantize_dynamic_linear(model: torch.nn.Module) -> torch.nn.Module:
    """The tutorial's §4.1: int8 weights for nn.Linear only (ResNet18's fc), activations float."""
    with _quiet_ao():
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear}, dtype=torch.qint8)


def _prepare_static(model: torch.nn.Module, backend: str, input_size: tuple[int, int]):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    set_engine(backend)
    qmap = get_default_qconfig_mapping(backend)  # per-channel weights on x86; conv-bn-relu fused by FX
    example = (torch.zeros(1, 3, *input_size),)
    return prepare_fx(copy.deepcopy(model).eval(), qmap, example)


def quantize_static(model: torch.nn.Module, calib: Split, card: ModelCard, backend: str = "x86",
                    batch_size: int = 64) -> torch.nn.Module:
    """Post-training static int8: fuse conv-bn-relu, observe activations on ``calib``, convert."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet_ao(), torch.no_grad():
        prepared = _prepare_static(model, backend, card.input_size)
        for i in range(0, len(calib), batch_size):
            prepared(card.normalize(calib.images[i:i + batch_size]))
        return convert_fx(prepared)


def rebuild_static(model: torch.nn.Module, state_dict: dict, card: ModelCard, backend: str = "x86") -> torch.nn.Module:
    """Replay the conversion on the float architecture, then load the stored int8 weights and scales."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet_ao(), torch.no_grad():
        prepared = _prepare_static(model, backend, card.input_size)
        prepared(torch.zeros(1, 3, *card.input_size))  # observers need one pass; values are overwritten below
        q = convert_fx(prepared)
        q.load_state_dict(state_dict)
    return q.eval()


def rebuild_dynamic(model: torch.nn.Module, state_dict: dict) -> torch.nn.Module:
    q = quantize_dynamic_linear(model)
    q.load_state_dict(state_dict)
    return q.eval()


def to_fp16(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).half().eval()


def is_quantized(model: torch.nn.Module) -> bool:
    return any(type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
               for m in model.modules())
