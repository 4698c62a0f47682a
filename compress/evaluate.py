"""Top-1 predictions of a model on a uint8 split (the eager reference for every runtime)."""
from __future__ import annotations

import torch

from .cards import ModelCard
from .data import Split

# Input pixels per evaluation batch: 32 images at 224x224. A batch's activations scale with its
# pixels (about 10 MB per 224x224 image through ResNet18), so a fixed image count that suits 32x32
# inputs would hold gigabytes at 224x224. Small inputs keep their full batch (the cap).
EVAL_BATCH_PIXELS = 32 * 224 * 224


def batch_size_for(input_size: tuple[int, int], cap: int) -> int:
    """Images per batch for inputs of ``input_size``: ``cap``, fewer when the pixels would exceed
    EVAL_BATCH_PIXELS. Native 32x32 and 64x64 runs keep ``cap`` (their results are unchanged)."""
    return max(1, min(cap, EVAL_BATCH_PIXELS // (input_size[0] * input_size[1])))


@torch.no_grad()
def logits(model: torch.nn.Module, split: Split, card: ModelCard, batch_size: int = 256,
           device: str = "cpu") -> torch.Tensor:
    """float32 logits on the CPU, computed in batches (on ``device``, in the model's dtype) of at
    most ``batch_size`` images (fewer for large inputs: ``batch_size_for``)."""
    batch_size = batch_size_for(card.input_size, batch_size)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    out = []
    for i in range(0, len(split), batch_size):
        x = card.normalize(split.images[i:i + batch_size]).to(device, dtype)
        out.append(model(x).float().cpu())
    return torch.cat(out)


def predict(model: torch.nn.Module, split: Split, card: ModelCard, batch_size: int = 256) -> torch.Tensor:
    return logits(model, split, card, batch_size).argmax(1)


def top1(preds: torch.Tensor, labels: torch.Tensor) -> float:
    return float((preds == labels).float().mean())
