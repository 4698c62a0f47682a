"""Model card: the JSON beside a checkpoint that says what the weights expect.

Preprocessing (input size, mean/std) is read from here and nowhere else, so a user's own
checkpoint with other normalization works without code changes.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import UserError
from .transforms import EvalTransform, transform_from_json

SUPPORTED_ARCHITECTURES = ("torchvision.models.resnet18",)


@dataclass(frozen=True)
class ModelCard:
    architecture: str
    num_classes: int
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...]
    metrics: dict = field(default_factory=dict, compare=False)
    source: str = field(default="", compare=False)
    transform: EvalTransform | None = None  # None: images resized straight to input_size

    def normalize(self, images_u8: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 NCHW RGB -> float NCHW at ``size`` (default: the card's input size)."""
        size = tuple(size or self.input_size)
        x = images_u8.float().div_(255.0)
        if tuple(x.shape[-2:]) != size:
            # Bilinear with antialias matches torchvision's Resize on tensors.
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("source")
        # Only a card that declares a transform carries the key: cards without one keep their
        # JSON, and with it every build key and dataset id recorded for them.
        if self.transform is None:
            d.pop("transform")
        else:
            d["transform"] = self.transform.to_json()
        d["card_version"] = 1
        d["architecture_kwargs"] = {"num_classes": d.pop("num_classes")}
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"], d["classes"] = list(self.mean), list(self.std), list(self.classes)
        return d


def _fail(source: str, what: str) -> UserError:
    return UserError(f"model card {source}: {what}; see docs/model-card.md for the expected fields")


def _finite_number(x) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:  # a JSON integer too large for a float
        return False


def card_from_dict(d: dict, source: str = "<dict>") -> ModelCard:
    if not isinstance(d, dict):
        raise _fail(source, "must be a JSON object")
    arch = d.get("architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise _fail(source, f"architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    classes = d.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise _fail(source, "'classes' must be a non-empty list of class names")
    kwargs = d.get("architecture_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise _fail(source, "'architecture_kwargs' must be an object such as {\"num_classes\": 10}")
    num_classes = kwargs.get("num_classes", len(classes))
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes != len(classes):
        raise _fail(source, f"architecture_kwargs.num_classes ({num_classes!r}) does not match {len(classes)} class names")
    size = d.get("input_size")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and 8 <= s <= 4096 for s in size)):
        raise _fail(source, "'input_size' must be [height, width] with integers from 8 to 4096")
    stats = []
    for key in ("mean", "std"):
        v = d.get(key)
        if (not isinstance(v, list) or len(v) != 3
                or not all(_finite_number(x) for x in v)):
            raise _fail(source, f"'{key}' must be a list of 3 finite numbers (RGB)")
        stats.append(tuple(float(x) for x in v))
    if any(s <= 0 for s in stats[1]):
        raise _fail(source, "'std' values must be positive")
    metrics = d.get("metrics") if isinstance(d.get("metrics"), dict) else {}
    transform = transform_from_json(d["transform"], (size[0], size[1]), source) if "transform" in d else None
    return ModelCard(arch, num_classes, (size[0], size[1]), stats[0], stats[1], tuple(classes), metrics, source,
                     transform)


def load_card(path: str | Path) -> ModelCard:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model card {path} not found: put the card JSON beside the checkpoint "
                        f"(same name, .json) or pass --card PATH")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(str(path), f"is not valid JSON ({e})") from None
    return card_from_dict(d, str(path))


def card_path_for(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".json")
