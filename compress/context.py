"""Resolve user options (dataset, data root, checkpoint, card) into a ready BuildContext.

With ``--dataset digits`` and no checkpoint, the embedded default model is used: trained by
``compress.train`` on first use (about a minute on 2 cores) and cached, so a fresh machine with
no network and no data files runs end to end.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import trust
from .build import BuildContext
from .cards import ModelCard, card_from_dict, card_path_for, load_card
from .data import (
    DEFAULT_CACHE_MAX_GB,
    Dataset,
    checked_cache_dir,
    default_cache_dir,
    load_dataset,
    load_digits,
    refuse_cache_inside,
    validation_view,
)
from .errors import UserError
from .fsutil import READ_ONLY_CACHE, atomic_write_bytes, atomic_write_json, sha256_file, writable
from .models import build_model, load_model
from .train import TrainConfig, train
from .trust import check_cache_dir

EMBEDDED_VERSION = 2
EMBEDDED_PURPOSE = "embedded-model"  # what the MAC in the embedded model's card is for
EMBEDDED_INPUT = (32, 32)
EMBEDDED_TRAIN = TrainConfig(epochs=12, batch_size=64, lr=0.05, seed=0, augment=False)


def embedded_checkpoint(cache_dir: Path | None = None, log=print) -> Path:
    """The digits ResNet18: trained once, then read from the cache (safetensors + card)."""
    from filelock import FileLock
    from safetensors.torch import save

    root = checked_cache_dir(cache_dir) / "models"
    ckpt = root / f"resnet18-digits-v{EMBEDDED_VERSION}.safetensors"
    if not writable(root):  # a read-only cache: the model must already be there, and ours
        if _embedded_is_ours(ckpt):
            return ckpt
        raise UserError(READ_ONLY_CACHE.format(path=root, what="embedded model"))
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(ckpt) + ".lock"):
        if _embedded_is_ours(ckpt):
            return ckpt
        ds = load_digits(EMBEDDED_INPUT)
        x = ds.train.images.float() / 255.0
        mean = [round(float(x.mean()), 4)] * 3  # grayscale replicated to RGB: one statistic per channel
        std = [round(float(x.std()), 4)] * 3
        card = card_from_dict({
            "architecture": "torchvision.models.resnet18", "architecture_kwargs": {"num_classes": 10},
            "input_size": list(EMBEDDED_INPUT), "mean": mean, "std": std, "classes": list(ds.classes)}, "embedded")
        log(f"training the embedded digits model ({len(ds.train)} images, {EMBEDDED_TRAIN.epochs} epochs); "
            f"cached in {root}")
        # Seeded initialization: the weights' sha256 keys the committed baselines, so a fresh
        # machine of the same kind must train exactly the same model.
        torch.manual_seed(EMBEDDED_TRAIN.seed)
        model = build_model(card)
        summary = train(model, ds.train, card, EMBEDDED_TRAIN, log=log)
        from .evaluate import predict, top1

        acc = top1(predict(model, ds.test, card), ds.test.labels)
        log(f"embedded model: top-1 {acc:.2%} on the digits test split, trained in {summary['seconds']:.0f}s")
        card_json = card.to_json() | {
            "file": ckpt.name, "format": "safetensors state_dict (float32)",
            "trained_on": f"{ds.id} train split ({len(ds.train)} images)",
            "training": summary, "metrics": {"top1_digits_test": round(acc, 4), "measured_with": "compress.train"}}
        atomic_write_bytes(ckpt, save({k: v.contiguous() for k, v in model.state_dict().items()}))
        sha = sha256_file(ckpt)
        atomic_write_json(card_path_for(ckpt), card_json | {
            "sha256": sha, "mac": trust.sign_json({"file": ckpt.name, "sha256": sha}, EMBEDDED_PURPOSE)})
    return ckpt


def _embedded_is_ours(ckpt: Path) -> bool:
    """The cached embedded model is used only when its card's MAC (made with the user's key,
    compress/trust.py) vouches for the file's sha256: a swapped model would change every number
    and, through the checkpoint hash, which baselines apply. Otherwise it is trained again."""
    if not ckpt.is_file() or not card_path_for(ckpt).is_file():
        return False
    try:
        card = json.loads(card_path_for(ckpt).read_text())
        ok = trust.verify_json({"file": ckpt.name, "sha256": card.get("sha256")}, card.get("mac"),
                               EMBEDDED_PURPOSE) and sha256_file(ckpt) == card["sha256"]
    except (OSError, ValueError, AttributeError, KeyError):
        ok = False
    if not ok:
        trust.warn(f"{ckpt} is not signed with your cache key or does not match its card: training it again")
    return ok


def check_classes(card: ModelCard, ds: Dataset) -> None:
    if card.num_classes != len(ds.classes):
        raise UserError(f"the model card has {card.num_classes} classes but dataset {ds.name} has {len(ds.classes)} "
                        f"({', '.join(ds.classes[:5])}{', ...' if len(ds.classes) > 5 else ''}): "
                        f"use a checkpoint trained on this data")
    if tuple(card.classes) != tuple(ds.classes):
        diff = next(i for i, (a, b) in enumerate(zip(card.classes, ds.classes)) if a != b)
        raise UserError(f"class {diff} is {card.classes[diff]!r} in the model card but {ds.classes[diff]!r} in the "
                        f"dataset: class order must match the checkpoint's output order")


def open_context(dataset: str = "digits", data_root: str | Path | None = None, checkpoint: str | Path | None = None,
                 card: str | Path | None = None, cache_dir: Path | None = None, artifact_dir: Path | None = None,
                 eval_samples: int | None = None, calib_samples: int = 512, finetune_epochs: float | None = None,
                 download: bool = False, train_device: str = "cpu", log=print, *, finetune_samples: int | None = None,
                 finetune_minutes: float | None = None, eval_split: str | None = None,
                 cache_max_gb: float = DEFAULT_CACHE_MAX_GB, validation_samples: int | None = None) -> BuildContext:
    # Inputs are checked before anything is created: a wrong path leaves no cache behind.
    if checkpoint is None and dataset != "digits":
        raise UserError(f"--dataset {dataset} needs --checkpoint PATH (the embedded model is for digits only)")
    if checkpoint is not None:
        resolve_card(Path(checkpoint), card)  # the checkpoint and its card exist and parse
    if data_root is not None:
        refuse_cache_inside(cache_dir or default_cache_dir(), data_root)
    cache_root = checked_cache_dir(cache_dir)  # a shared or foreign cache is refused before any work
    if artifact_dir is not None:
        check_cache_dir(artifact_dir)
    if checkpoint is None:
        checkpoint, label = embedded_checkpoint(cache_root, log), "embedded digits model"
    else:
        label = str(checkpoint)
    checkpoint = Path(checkpoint)
    model_card = resolve_card(checkpoint, card)
    model = load_model(checkpoint, model_card)
    ds = load_dataset(dataset, model_card.input_size, data_root, cache_root, download, model_card.transform,
                      eval_split=eval_split, cache_max_gb=cache_max_gb)
    check_classes(model_card, ds)
    if validation_samples is not None:
        ds = validation_view(ds, validation_samples)
    # Validate early: a bad value fails before any build starts.
    if eval_samples is not None:
        ds.eval_split(eval_samples)
    if finetune_samples is not None and not 1 <= finetune_samples <= len(ds.train):
        raise UserError(f"--finetune-samples {finetune_samples} is out of range: the train split has "
                        f"{len(ds.train)} images; pass a number from 1 to {len(ds.train)}")
    return BuildContext(
        card=model_card, base_model=model, checkpoint_sha256=sha256_file(checkpoint), checkpoint_label=label,
        dataset=ds, artifact_root=artifact_dir or cache_root / "artifacts",
        eval_samples=eval_samples, calib_samples=calib_samples, finetune_epochs=finetune_epochs,
        finetune_samples=finetune_samples, finetune_minutes=finetune_minutes, train_device=train_device, log=log)


def resolve_card(checkpoint: Path, card: str | Path | None = None) -> ModelCard:
    """The card given with --card, else the one beside the checkpoint; one line if neither is there."""
    if card is not None:
        return load_card(card)
    if card_path_for(checkpoint).is_file():
        return load_card(card_path_for(checkpoint))
    if not checkpoint.exists():
        raise UserError(f"checkpoint {checkpoint} not found: pass --checkpoint PATH to a .pt/.pth or .safetensors file")
    raise UserError(f"no model card for {checkpoint}: put {card_path_for(checkpoint).name} beside it "
                    f"(architecture, input_size, mean, std, classes) or pass --card PATH")


def native_input_size(checkpoint: str | Path | None, card: str | Path | None = None) -> tuple[int, int]:
    """The input size the model was trained at, known before any data is read or model built."""
    if checkpoint is None and card is None:
        return EMBEDDED_INPUT
    return resolve_card(Path(checkpoint) if checkpoint is not None else Path(), card).input_size
