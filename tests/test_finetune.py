"""The distillation fine-tune that channel-pruned variants get, and the embedded model's training:
they run, they are recorded, they are bit-reproducible (the committed baselines depend on it), and a
wall-clock budget shortens the schedule instead of cutting it off mid-way."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from conftest import make_context, random_resnet18, subset, torch_threads

from compress.build import build_variant
from compress.context import EMBEDDED_TRAIN
from compress.data import load_digits
from compress.train import TIME_PROBE_STEPS, TrainConfig, train


def test_distillation_finetune_runs_and_is_recorded(tmp_path, card, trained_model, checkpoint, tiny_digits):
    with torch_threads(1):
        raw = build_variant("prune-struct-0.5", make_context(card, trained_model, checkpoint, tiny_digits,
                                                             tmp_path / "raw", finetune_epochs=0.0))
        tuned = build_variant("prune-struct-0.5", make_context(card, trained_model, checkpoint, tiny_digits,
                                                               tmp_path / "tuned", finetune_epochs=2.0))
        a, b = raw.load_model(card).state_dict(), tuned.load_model(card).state_dict()
    ft = tuned.manifest["finetune"]
    assert raw.manifest["finetune"] is None
    assert ft["steps"] == 4 and ft["distill_weight"] == 1.0 and ft["images"] == len(tiny_digits.train)
    assert np.isfinite(ft["final_loss"])
    assert a.keys() == b.keys() and not torch.equal(a["conv1.weight"], b["conv1.weight"])  # it trained


def test_finetune_builds_are_bit_reproducible(tmp_path, card, trained_model, checkpoint, tiny_digits):
    with torch_threads(1):
        a, b = (build_variant("prune-struct-0.5", make_context(card, trained_model, checkpoint, tiny_digits,
                                                               tmp_path / d, finetune_epochs=1.0))
                for d in ("a", "b"))
    assert a.manifest["files"] == b.manifest["files"]  # same sha256 for weights and history


def test_embedded_training_is_bit_reproducible():
    # The embedded default's weights key the committed digits baselines: a fresh machine must train
    # exactly the same model. One epoch of the real recipe, twice, from the same seed.
    ds = load_digits((32, 32))
    from compress.cards import card_from_dict

    c = card_from_dict({"architecture": "torchvision.models.resnet18", "architecture_kwargs": {"num_classes": 10},
                        "input_size": [32, 32], "mean": [0.25] * 3, "std": [0.35] * 3,
                        "classes": list(ds.classes)}, "embedded-test")
    cfg = replace(EMBEDDED_TRAIN, epochs=1)
    states = []
    for _ in range(2):
        torch.manual_seed(cfg.seed)
        model = random_resnet18(c, seed=cfg.seed)
        train(model, subset(ds.train, 256), c, cfg, log=lambda s: None)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_wall_clock_budget_shortens_the_schedule(card, tiny_digits):
    # Zero seconds: after the probe steps nothing fits, so training stops there, and says so.
    summary = train(random_resnet18(card), tiny_digits.train, card, TrainConfig(epochs=5.0, batch_size=32,
                    max_seconds=0.0), log=lambda s: None)
    assert summary["steps"] == TIME_PROBE_STEPS and summary["planned_steps"] > TIME_PROBE_STEPS
    assert summary["max_seconds"] == 0.0


def test_finetune_samples_and_minutes_enter_the_build_key(tmp_path, card, trained_model, checkpoint, tiny_digits):
    from compress.build import _build_key
    from compress.registry import lineage

    base = make_context(card, trained_model, checkpoint, tiny_digits, tmp_path)
    keys = {_build_key(lineage("prune-struct-0.5"), c) for c in (
        base, replace(base, finetune_samples=100), replace(base, finetune_minutes=5.0))}
    assert len(keys) == 3
    assert _build_key(lineage("fp32"), base) == _build_key(lineage("fp32"), replace(base, finetune_samples=100))


def test_finetune_split_is_a_fixed_stratified_subset(tiny_digits):
    a, b = tiny_digits.finetune_split(50), tiny_digits.finetune_split(50)
    assert a is b and len(a) == 50
    assert torch.bincount(a.labels, minlength=10).min() >= 4  # every class present
