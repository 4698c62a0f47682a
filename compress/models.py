"""Build ResNet18 from a model card and load checkpoints without running code from them."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
import torchvision

from .cards import ModelCard
from .errors import UserError

# torch.load(weights_only=True) had unpickler escapes before 2.10 (CVE-2025-32434, CVE-2026-24747).
MIN_TORCH = (2, 10)


def require_safe_torch(version: str | None = None) -> None:
    version = version or torch.__version__
    parts = version.split("+")[0].split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise UserError(f"cannot parse torch version {version!r}; install torch>=2.10") from None
    if (major, minor) < MIN_TORCH:
        raise UserError(f"torch {version} has known weights-only unpickler escapes (CVE-2025-32434, CVE-2026-24747): "
                        f"install torch>=2.10 before loading checkpoints")


def build_model(card: ModelCard) -> torch.nn.Module:
    return torchvision.models.resnet18(num_classes=card.num_classes)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from a .safetensors file or a weights-only torch file.

    Accepts a plain state dict, ``{"state_dict": ...}`` / ``{"model_state_dict": ...}`` and
    DataParallel's ``module.`` prefixes."""
    require_safe_torch()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found: pass --checkpoint PATH to a .pt/.pth or .safetensors file")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes): re-download or re-export it")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"checkpoint {path} is not a readable safetensors file ({e}); re-export it") from None
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UserError(f"checkpoint {path} was refused: it is not a plain state dict and loading it would run "
                            f"code ({_refusal_reason(e)}); export model.state_dict() or a .safetensors file") from None
        except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
            raise UserError(f"checkpoint {path} is truncated or not a PyTorch file ({type(e).__name__}); "
                            f"re-download or re-export it") from None
        except Exception as e:  # garbage bytes reach the unpickler as KeyError, IndexError, struct.error ...
            raise UserError(f"checkpoint {path} is truncated or not a PyTorch file ({type(e).__name__}); "
                            f"re-download or re-export it") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"checkpoint {path} does not hold a state dict of tensors; save model.state_dict()")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _refusal_reason(e: Exception) -> str:
    """The line of torch's message that names what was blocked (its first line only advises
    retrying with weights_only=False, which is exactly what must not be done)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    named = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln]
    return ((named or lines or [type(e).__name__])[0])[:160]


def load_model(path: str | Path, card: ModelCard) -> torch.nn.Module:
    sd = read_state_dict(path)
    model = build_model(card)
    expected = model.state_dict()
    fc = sd.get("fc.weight")
    if fc is not None and fc.ndim == 2 and fc.shape[0] != card.num_classes:
        raise UserError(f"checkpoint {path} has {fc.shape[0]} output classes but the model card / dataset has "
                        f"{card.num_classes}: use the matching checkpoint or card")
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        raise UserError(f"checkpoint {path} does not fit {card.architecture}: {'; '.join(parts)}")
    for k, v in expected.items():
        if sd[k].shape != v.shape:
            raise UserError(f"checkpoint {path}: {k} has shape {tuple(sd[k].shape)}, "
                            f"{card.architecture} expects {tuple(v.shape)}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return model.eval()


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) of weights and biases, int8 packed weights included."""
    total = nonzero = 0
    for _name, t in _weight_tensors(model):
        total += t.numel()
        nonzero += int(torch.count_nonzero(t))
    return total, nonzero


def _weight_tensors(model: torch.nn.Module):
    for name, v in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(v, tuple):  # quantized Linear: (_packed weight, bias)
            for t in v:
                if isinstance(t, torch.Tensor):
                    yield name, t.int_repr() if t.is_quantized else t
        elif isinstance(v, torch.Tensor) and leaf in ("weight", "bias") and v.dtype != torch.int64:
            yield name, v.int_repr() if v.is_quantized else v


def count_macs(model: torch.nn.Module, input_size: tuple[int, int]) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one image (float models)."""
    macs = 0

    def conv_hook(m, inp, out):
        nonlocal macs
        macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        nonlocal macs
        macs += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 3, *input_size, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return macs
