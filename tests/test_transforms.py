"""The card's eval transform gives the tensors torchvision's ImageClassification gives."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from compress.cards import card_from_dict
from compress.errors import UserError
from compress.images import FolderImages, decode_image
from compress.transforms import EvalTransform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Landscape, portrait, square, smaller than the crop (upscaled), odd sizes.
SIZES = [(500, 375), (375, 500), (256, 256), (180, 120), (333, 517), (1024, 683)]


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A deterministic image with structure at several scales (not a flat colour)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)), ((xx + yy) % 64) * 4], -1)
    noise = rng.integers(0, 40, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def card(transform: dict | None, input_size=(224, 224)):
    d = {"architecture": "torchvision.models.resnet18", "architecture_kwargs": {"num_classes": 2},
         "input_size": list(input_size), "mean": list(MEAN), "std": list(STD), "classes": ["a", "b"]}
    if transform is not None:
        d["transform"] = transform
    return card_from_dict(d, "test-card")


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("size", SIZES)
def test_resize_crop_normalize_equals_torchvision_image_classification(size, interpolation, tmp_path):
    c = card({"resize": 256, "crop": 224, "interpolation": interpolation})
    path = tmp_path / "img.png"  # lossless: the file decodes to exactly the image
    photo(size, seed=sum(size)).save(path)
    mine = c.normalize(torch.from_numpy(decode_image(path, c.input_size, c.transform))[None])[0]
    reference = ImageClassification(crop_size=224, resize_size=256, mean=MEAN, std=STD,
                                    interpolation=InterpolationMode(interpolation))
    with Image.open(path) as im:
        theirs = reference(im.convert("RGB"))
    assert mine.shape == theirs.shape == (3, 224, 224)
    assert torch.equal(mine, theirs)


def test_exact_resize_then_crop(tmp_path):
    c = card({"resize": [240, 260], "crop": [224, 224]})
    path = tmp_path / "img.png"
    photo((400, 300), seed=3).save(path)
    out = decode_image(path, c.input_size, c.transform)
    assert out.shape == (3, 224, 224) and out.dtype == np.uint8


def test_folder_images_apply_the_transform_lazily(tmp_path):
    paths = []
    for i, size in enumerate(SIZES):
        paths.append(tmp_path / f"{i}.png")
        photo(size, seed=i).save(paths[-1])
    t = EvalTransform(256, (224, 224))
    images = FolderImages.from_paths(paths, (224, 224), t)
    assert images.shape == (len(SIZES), 3, 224, 224)
    batch = images[1:3]
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 224, 224)
    assert torch.equal(batch[0], torch.from_numpy(decode_image(paths[1], (224, 224), t)))
    assert torch.equal(images.take(np.array([4, 0]))[:][1], images[0])


def test_a_card_without_transform_keeps_its_json_and_resizes_straight(tmp_path):
    c = card(None, (32, 32))
    assert c.transform is None and "transform" not in c.to_json()
    path = tmp_path / "img.png"
    photo((50, 40), seed=1).save(path)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(decode_image(path, (32, 32), None), expected)


@pytest.mark.parametrize("transform, message", [
    ({"resize": 200, "crop": 224}, "crop [224, 224] is larger than its resize 200"),
    ({"resize": [230, 200], "crop": 224}, "crop [224, 224] is larger than its resize [230, 200]"),
    ({"resize": 256, "crop": 192}, "crop [192, 192] must equal input_size [224, 224]"),
    ({"resize": 256, "crop": 224, "interpolation": "lanczos"}, "interpolation must be one of"),
    ({"resize": "big", "crop": 224}, "resize must be the shorter side"),
    ({"resize": 256, "crop": 224, "scale": 2}, "must be an object with resize, crop"),
    ([256, 224], "must be an object with resize, crop"),
])
def test_bad_transforms_are_one_line_errors_naming_the_card(transform, message):
    with pytest.raises(UserError) as e:
        card(transform)
    assert str(e.value).startswith("model card test-card: transform") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_card_round_trips_its_transform():
    c = card({"resize": 256, "crop": 224})
    again = card_from_dict(c.to_json(), "again")
    assert again.transform == c.transform == EvalTransform(256, (224, 224), "bilinear")


def test_transform_only_for_image_folders():
    from compress.data import load_dataset

    with pytest.raises(UserError, match="applies to image folders"):
        load_dataset("digits", (224, 224), transform=EvalTransform(256, (224, 224)))


def test_val_is_the_eval_split_when_there_is_no_test(tmp_path):
    from compress.data import load_imagefolder

    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "d" / split / c).mkdir(parents=True)
            photo((40, 30), seed=len(split) + ord(c)).save(tmp_path / "d" / split / c / "0.png")
    ds = load_imagefolder(tmp_path / "d", (32, 32), cache_dir=tmp_path / "cache")
    assert len(ds.test) == 2 and ds.eval_split().images.paths()[0].parent.parent.name == "val"
    with pytest.raises(UserError, match="has no 'test/' folder"):
        load_imagefolder(tmp_path / "d", (32, 32), cache_dir=tmp_path / "cache", eval_split="test")
    (Path(tmp_path / "d" / "val")).rename(tmp_path / "d" / "holdout")
    with pytest.raises(UserError, match="has neither 'test/' nor 'val/'"):
        load_imagefolder(tmp_path / "d", (32, 32), cache_dir=tmp_path / "cache")
