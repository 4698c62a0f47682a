"""How a model card says its images are prepared for evaluation.

The same steps as torchvision's ``ImageClassification(crop_size, resize_size, interpolation)``
(the eval transform of torchvision's ImageNet weights): resize, then center crop, on the decoded
image; scaling to [0, 1] and mean/std follow in ``ModelCard.normalize``. A card without a
``transform`` keeps the plain behaviour: images resized straight to ``input_size``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UserError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class EvalTransform:
    # An int resizes the shorter side to it (aspect ratio kept), [h, w] resizes exactly.
    resize: int | tuple[int, int]
    crop: tuple[int, int]  # center crop, [h, w]: the model's input size
    interpolation: str = "bilinear"

    def to_json(self) -> dict:
        return {"resize": self.resize if isinstance(self.resize, int) else list(self.resize),
                "crop": list(self.crop), "interpolation": self.interpolation}

    def apply(self, image) -> np.ndarray:
        """A PIL RGB image -> uint8 (3, crop_h, crop_w). Resize and crop run on the PIL image, as
        torchvision's ImageClassification does for the PIL images an ImageFolder loader gives."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
        image = TF.resize(image, size, interpolation=InterpolationMode(self.interpolation), antialias=True)
        image = TF.center_crop(image, list(self.crop))
        return TF.pil_to_tensor(image).numpy()


def transform_from_json(d, input_size: tuple[int, int], source: str) -> EvalTransform:
    """Parse and check a card's ``transform``; every problem is one line naming the card."""
    def fail(what: str) -> UserError:
        return UserError(f"model card {source}: transform {what}; see docs/model-card.md")

    if not isinstance(d, dict) or set(d) - {"resize", "crop", "interpolation"}:
        raise fail("must be an object with resize, crop and optional interpolation")
    crop = d.get("crop", list(input_size))
    if isinstance(crop, int) and not isinstance(crop, bool):
        crop = [crop, crop]
    if not (isinstance(crop, list) and len(crop) == 2 and all(_pixels(c) for c in crop)):
        raise fail(f"crop must be a size in pixels or [h, w], got {crop!r}")
    if tuple(crop) != tuple(input_size):
        raise fail(f"crop {crop} must equal input_size {list(input_size)} (the size the model sees)")
    resize = d.get("resize")
    if _pixels(resize):
        if resize < max(crop):
            raise fail(f"crop {crop} is larger than its resize {resize}: resize the shorter side to at least "
                       f"{max(crop)}")
    elif isinstance(resize, list) and len(resize) == 2 and all(_pixels(r) for r in resize):
        if resize[0] < crop[0] or resize[1] < crop[1]:
            raise fail(f"crop {crop} is larger than its resize {resize}")
        resize = tuple(resize)
    else:
        raise fail(f"resize must be the shorter side in pixels or [h, w], got {resize!r}")
    interp = d.get("interpolation", "bilinear")
    if interp not in INTERPOLATIONS:
        raise fail(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interp!r}")
    return EvalTransform(resize, (crop[0], crop[1]), interp)


def _pixels(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 8192
