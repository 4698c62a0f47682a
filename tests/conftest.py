"""Shared fixtures for the compress/ unit tests.

Everything runs at 32x32 (ResNet18 is cheap there) on the embedded digits data. The "trained"
fp32 model is a random-init ResNet18 whose fc is fitted in closed form (ridge regression on the
pooled features): real accuracy (~96% on digits) in a few seconds, so accuracy comparisons between
variants mean something without a minute of SGD. All variants are built once per session.
The int8 variants need the x86 quantized engine: these tests assume an x86 host.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from compress import build as build_mod
from compress.build import Artifact, BuildContext, build_variant
from compress.cards import ModelCard, card_from_dict
from compress.data import Dataset, Split, load_digits, stratified_order
from compress.fsutil import sha256_file
from compress.models import build_model

# Hypothesis in every test: no per-example deadline (a loaded 2-core CI machine is slow by
# minutes, not by a bug) and a fixed example sequence, so a run is repeatable like every unit test.
settings.register_profile("deterministic", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("deterministic")

INPUT = (32, 32)
DEFAULT_ENGINE = torch.backends.quantized.engine  # int8 builds switch it; tests put it back
ALL_VARIANTS = ("fp32", "prune-l1-20", "prune-global-30", "prune-struct-0.5", "int8-dynamic", "int8-static",
                "int8-static-arm", "fp16", "prune-struct-0.5+int8", "prune-stages-0.2-0.3-0.3-0.9",
                "prune-stages-0.2-0.3-0.3-0.9+int8")


def make_card(classes, input_size=INPUT, mean=(0.25,) * 3, std=(0.35,) * 3) -> ModelCard:
    return card_from_dict({"architecture": "torchvision.models.resnet18",
                           "architecture_kwargs": {"num_classes": len(classes)},
                           "input_size": list(input_size), "mean": list(mean), "std": list(std),
                           "classes": list(classes)}, "test-card")


def write_checkpoint(path: Path, state_dict: dict, card: ModelCard) -> Path:
    """A .safetensors checkpoint with its card beside it (same name, .json), as users ship them."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(card.to_json()))
    return path


def random_resnet18(card: ModelCard, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(card).eval()


@torch.no_grad()
def fit_fc(model: torch.nn.Module, split: Split, card: ModelCard, ridge: float = 1e-2) -> torch.nn.Module:
    """Fit the fc layer by ridge regression on one-hot targets (deterministic, closed form).

    Features are scaled by one global factor, not per feature: per-feature scaling would give dead
    (near-constant) features huge fc weights, which no int8 scheme could represent."""
    fc, model.fc = model.fc, torch.nn.Identity()
    feats = torch.cat([model(card.normalize(split.images[i:i + 256])) for i in range(0, len(split), 256)]).double()
    model.fc = fc
    scale = float(feats.std())
    z = torch.cat([feats / scale, torch.ones(len(feats), 1, dtype=feats.dtype)], 1)
    y = torch.nn.functional.one_hot(split.labels, card.num_classes).double()
    w = torch.linalg.solve(z.T @ z + ridge * len(z) * torch.eye(z.shape[1], dtype=z.dtype), z.T @ y)
    fc.weight.copy_((w[:-1] / scale).T.float())
    fc.bias.copy_(w[-1].float())
    return model


def subset(split: Split, n: int, seed: int = 0) -> Split:
    return split.take(stratified_order(split.labels, seed=seed)[:n])


@contextlib.contextmanager
def torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture
def one_torch_thread():
    """Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``. Benchmarks run beside
    these tests: with 2 OpenMP threads on 2 busy cores a 32x32 forward is ~50x slower than with 1."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Nothing a test does may read or write the user's cache (decoded datasets, artifacts, models).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNET18_BENCH_CACHE", str(tmp_path_factory.mktemp("bench-cache")))
        mp.setenv("RESNET18_BENCH_KEY_FILE", str(tmp_path_factory.mktemp("bench-key") / "cache.key"))
        yield


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits(INPUT)


@pytest.fixture(scope="session")
def card(digits) -> ModelCard:
    return make_card(digits.classes)


@pytest.fixture(scope="session")
def tiny_digits(digits) -> Dataset:
    """A stratified slice of digits (256 train / 200 test): keeps BN recalibration and evaluation short."""
    return Dataset("digits", f"{digits.id}-tiny", digits.classes, subset(digits.train, 256),
                   subset(digits.test, 200), "test slice of " + digits.source)


@pytest.fixture(scope="session")
def trained_model(digits, card) -> torch.nn.Module:
    with torch_threads(1):
        return fit_fc(random_resnet18(card), subset(digits.train, 600, seed=2), card)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, trained_model, card) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "digits-resnet18.safetensors",
                            trained_model.state_dict(), card)


@dataclass
class Built:
    ctx: BuildContext
    arts: dict[str, Artifact]
    saved: dict[str, torch.nn.Module]  # the exact module each build wrote to disk
    float_models: dict[str, torch.nn.Module]  # build_variant's in-memory memo of float models
    log: list[str] = field(default_factory=list)


def make_context(card, model, checkpoint, dataset, root, **kw) -> BuildContext:
    kw.setdefault("calib_samples", 16)
    kw.setdefault("finetune_epochs", 0.0)  # no fine-tune: pruning, BN recalibration and history are what is tested
    return BuildContext(card=card, base_model=model, checkpoint_sha256=sha256_file(checkpoint),
                        checkpoint_label=str(checkpoint), dataset=dataset, artifact_root=Path(root), **kw)


@pytest.fixture(scope="session")
def built(tmp_path_factory, card, trained_model, checkpoint, tiny_digits) -> Built:
    """Every built-in variant, built once into a session artifact root. Tests must not modify it:
    copy what they want to change (see copy_variants in test_build.py)."""
    log: list[str] = []
    ctx = make_context(card, trained_model, checkpoint, tiny_digits, tmp_path_factory.mktemp("artifacts"),
                       log=log.append)
    saved, float_models, arts = {}, {}, {}
    real_save = build_mod._save_weights

    def recording_save(model, recipe, tmp):
        saved[recipe.name] = model
        return real_save(model, recipe, tmp)

    with pytest.MonkeyPatch.context() as mp, torch_threads(1):
        mp.setattr(build_mod, "_save_weights", recording_save)
        for name in ALL_VARIANTS:
            arts[name] = build_variant(name, ctx, _models=float_models)
    torch.backends.quantized.engine = DEFAULT_ENGINE  # int8-static-arm left qnnpack selected
    return Built(ctx, arts, saved, float_models, log)


@pytest.fixture(scope="session")
def reloaded(built, card):
    """reloaded(name): the variant as load_artifact(dir).load_model(card) gives it, loaded once per session."""
    from compress.build import load_artifact

    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            # int8-dynamic packs its fc for whichever engine is selected (see test_variants.py):
            # pin the one it was built with. Static int8 selects its own backend while loading;
            # put the default back afterwards for the tests that follow.
            torch.backends.quantized.engine = "x86"
            try:
                cache[name] = load_artifact(built.arts[name].dir).load_model(card)
            finally:
                torch.backends.quantized.engine = DEFAULT_ENGINE
        return cache[name]

    return get
