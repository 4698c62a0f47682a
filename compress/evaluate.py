"""Top-1 predictions of a model on a uint8 split (the eager reference for every runtime)."""
from __future__ import annotations

import torch

from .cards import ModelCard
from .data import Split


@torch.no_grad()
def logits(model: torch.nn.Module, split: Split, card: ModelCard, batch_size: int = 256,
           device: str = "cpu") -> torch.Tensor:
    """float32 logits on the CPU, computed in batches (on ``device``, in the model's dtype)."""
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
