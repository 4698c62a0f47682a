#!/usr/bin/env python3
"""Generate an ImageNet-layout image folder and a 224x224 model for scale tests (never committed).

    python scripts/make-imagefolder.py OUT [--train 100000] [--val 10000] [--classes 1000]

writes OUT/data/{train,val}/<class>/*.jpg (JPEGs of varied sizes and aspect ratios, each class
its own colour pattern plus noise) and OUT/model/resnet18-<classes>.safetensors with its card
(input 224x224, eval transform resize 256 / center crop 224, ImageNet mean/std). The model is a
seeded random initialization: the folder exists to test memory and cost at scale, not accuracy.
Deterministic for the same arguments.
"""
from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SIDES = (64, 96, 128, 160, 200, 256, 320)  # short and long sides drawn from these


def _write_class(args: tuple[Path, str, int, int, int]) -> int:
    from PIL import Image

    out, split, class_index, count, seed = args
    rng = np.random.default_rng([seed, class_index, len(split)])
    d = out / split / f"n{class_index:08d}"
    d.mkdir(parents=True, exist_ok=True)
    hue = np.array([(class_index * 37) % 256, (class_index * 91) % 256, (class_index * 151) % 256], np.int16)
    for i in range(count):
        w, h = (int(v) for v in rng.choice(SIDES, 2))
        yy, xx = np.mgrid[0:h, 0:w]
        stripes = ((xx * (1 + class_index % 7) + yy * (1 + class_index % 5)) // 16 % 2 * 60).astype(np.int16)
        img = hue[None, None, :] + stripes[..., None] + rng.integers(-30, 30, (h, w, 3), dtype=np.int16)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(d / f"{split}_{i:05d}.jpg", quality=85)
    return count


def _write_model(out: Path, classes: list[str]) -> Path:
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(classes)).eval()
    d = out / "model"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"resnet18-{len(classes)}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    card = {"architecture": "torchvision.models.resnet18", "architecture_kwargs": {"num_classes": len(classes)},
            "input_size": [224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "classes": classes, "transform": {"resize": 256, "crop": 224, "interpolation": "bilinear"},
            "metrics": {"note": "seeded random initialization for scale tests; accuracy is chance"}}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=100_000, help="train images in all (default 100000)")
    ap.add_argument("--val", type=int, default=10_000, help="val images in all (default 10000)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = args.out / "data"
    jobs = []
    for split, total in (("train", args.train), ("val", args.val)):
        per, extra = divmod(total, args.classes)
        jobs += [(data, split, c, per + (c < extra), args.seed) for c in range(args.classes)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        written = sum(pool.map(_write_class, jobs, chunksize=16))
    model = _write_model(args.out, [f"n{c:08d}" for c in range(args.classes)])
    print(f"wrote {written} images under {data} and the model {model} (+ card)")


if __name__ == "__main__":
    main()
