"""Build a variant into an artifact directory with a manifest; rebuild only when an input changed.

Layout: ``<artifact_root>/<dataset id>/<checkpoint sha256[:12]>/<variant>/``
  manifest.json          what it is, how it was made, how big it really is
  weights.safetensors    float and fp16 variants (no code can hide in safetensors)
  weights.int8.pt        int8 variants: quantized tensors have no safetensors form; weights-only torch file
  pruning.json           Torch-Pruning history, replayed on a fresh ResNet18 before loading weights
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import prune, quantize
from .cards import ModelCard
from .data import Dataset, Split, default_cache_dir
from .errors import UserError
from .evaluate import predict, top1
from .fsutil import atomic_write_bytes, atomic_write_json, dumps_json, sha256_file
from .models import build_model, count_macs, count_parameters, read_state_dict, require_safe_torch
from .registry import Kind, Recipe, WeightsFormat, lineage

# The manifest layout; a manifest of another format is rebuilt, never read.
BUILD_FORMAT = 2
MANIFEST = "manifest.json"


@dataclass
class BuildContext:
    card: ModelCard
    base_model: torch.nn.Module  # the fp32 checkpoint, loaded and validated
    checkpoint_sha256: str
    checkpoint_label: str
    dataset: Dataset
    artifact_root: Path = field(default_factory=lambda: default_cache_dir() / "artifacts")
    eval_samples: int | None = None
    calib_samples: int = 512
    finetune_epochs: float | None = None  # overrides each recipe's own fine-tune length
    train_device: str = "cpu"
    log: Callable[[str], None] = print

    def calibration_split(self) -> Split:
        """The train images every int8 variant calibrates on, PyTorch's and each runtime's own
        quantizer alike (a fixed stratified subset: one home, so they never drift apart)."""
        return self.dataset.calibration_split(min(self.calib_samples, len(self.dataset.train)))

    def calibration_info(self, split: Split) -> dict:
        return {"split": "train", "n": len(split), "order": "stratified, seed 1",
                "sha256": hashlib.sha256(split.images.numpy().tobytes()).hexdigest()}

    def variant_dir(self, name: str) -> Path:
        return self.artifact_root / self.dataset.id / self.checkpoint_sha256[:12] / name


@dataclass
class Artifact:
    name: str
    dir: Path
    manifest: dict

    @property
    def weights_path(self) -> Path:
        return self.dir / self.manifest["weights_file"]

    def load_model(self, card: ModelCard) -> torch.nn.Module:
        return load_model_from_artifact(self, card)


# ---------------------------------------------------------------- keys and manifests
def _build_key(chain: list[Recipe], ctx: BuildContext) -> str:
    uses_calib = any(r.calibrates for r in chain)
    uses_finetune = any(r.finetune is not None for r in chain)
    payload = {
        "format": BUILD_FORMAT,
        "chain": [r.key_payload() for r in chain],
        "checkpoint": ctx.checkpoint_sha256,
        "dataset": ctx.dataset.id,
        # The card is an input too: mean/std change calibration, fine-tuning and every accuracy.
        "card": {k: v for k, v in ctx.card.to_json().items() if k != "metrics"},
        "calib_samples": ctx.calib_samples if uses_calib else None,
        "finetune_epochs": ctx.finetune_epochs if uses_finetune else None,
        "torch": ".".join(torch.__version__.split(".")[:2]),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_manifest(vdir: Path) -> dict | None:
    path = vdir / MANIFEST
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return m if isinstance(m, dict) and m.get("build_format") == BUILD_FORMAT else None


def verify_files(vdir: Path, manifest: dict) -> bool:
    """Every file the manifest names exists with the recorded sha256 (nothing swapped in)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, digest in files.items():
        p = vdir / name
        if "/" in name or not p.is_file() or sha256_file(p) != digest:
            return False
    return True


def load_artifact(vdir: str | Path) -> Artifact:
    vdir = Path(vdir)
    m = read_manifest(vdir)
    if m is None:
        raise UserError(f"{vdir} holds no valid manifest: rebuild with `python -m compress build`")
    if not verify_files(vdir, m):
        raise UserError(f"{vdir}: files do not match their manifest sha256; delete the directory and rebuild")
    return Artifact(m["name"], vdir, m)


# ---------------------------------------------------------------- loading (replay, never unpickle a module)
def load_model_from_artifact(art: Artifact, card: ModelCard) -> torch.nn.Module:
    m = art.manifest
    model = build_model(card).eval()
    if m.get("pruning_file"):
        history = json.loads((art.dir / m["pruning_file"]).read_text())
        prune.replay_channel_prune(model, history, card.input_size)
    try:
        fmt = WeightsFormat(m["weights_format"])
    except ValueError:
        raise UserError(f"{art.dir}: unknown weights_format {m['weights_format']!r}; rebuild with this version") from None
    if fmt in (WeightsFormat.SAFETENSORS_FLOAT32, WeightsFormat.SAFETENSORS_FLOAT16):
        sd = read_state_dict(art.weights_path)
        if fmt is WeightsFormat.SAFETENSORS_FLOAT16:
            model = model.half()
        model.load_state_dict(sd)
        return model.eval()
    require_safe_torch()
    try:
        sd = torch.load(str(art.weights_path), map_location="cpu", weights_only=True)
    except Exception as e:  # refused (would run code), truncated, or not a torch file: never a traceback
        raise UserError(f"{art.weights_path} cannot be loaded ({type(e).__name__}); "
                        f"delete {art.dir} and rebuild") from None
    if fmt is WeightsFormat.TORCH_INT8_STATIC:
        return quantize.rebuild_static(model, sd, card, backend=m["backend"])
    if m.get("backend"):
        quantize.set_engine(m["backend"])
    return quantize.rebuild_dynamic(model, sd)


# ---------------------------------------------------------------- building
def _save_weights(model: torch.nn.Module, recipe: Recipe, tmp: Path) -> tuple[str, str]:
    fmt = recipe.weights_format
    path = tmp / fmt.file_name
    if fmt in (WeightsFormat.TORCH_INT8_STATIC, WeightsFormat.TORCH_INT8_DYNAMIC):
        torch.save(model.state_dict(), str(path))
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.name, fmt.value


def library_versions() -> dict:
    """Versions of the libraries a build depends on; the harness adds each runtime's own."""
    import torchvision

    v = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}
    try:
        import torch_pruning

        v["torch_pruning"] = torch_pruning.__version__
    except ImportError:
        pass
    return v


def _accuracy(model: torch.nn.Module, ctx: BuildContext, backend: str | None) -> dict:
    split = ctx.dataset.eval_split(ctx.eval_samples)
    if backend:
        quantize.set_engine(backend)
    preds = predict(model, split, ctx.card)
    return {"top1": round(top1(preds, split.labels), 6), "correct": int((preds == split.labels).sum()),
            "n": len(split), "split": "test"}


def build_variant(name: str, ctx: BuildContext, force: bool = False, _models: dict | None = None) -> Artifact:
    """Build ``name`` (and, first, its parents). ``_models`` memoizes float models within one call."""
    _models = {} if _models is None else _models
    chain = lineage(name)
    recipe = chain[-1]
    vdir = ctx.variant_dir(name)
    key = _build_key(chain, ctx)
    acc_key = str(ctx.eval_samples or "all")

    from filelock import FileLock

    vdir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(vdir) + ".lock"):
        manifest = read_manifest(vdir)
        if not force and manifest and manifest.get("key") == key and verify_files(vdir, manifest):
            art = Artifact(name, vdir, manifest)
            if acc_key not in manifest["accuracy"]:
                manifest["accuracy"][acc_key] = _accuracy(art.load_model(ctx.card), ctx, recipe.backend)
                atomic_write_json(vdir / MANIFEST, manifest)
            return art

        if recipe.parent is None:
            parent_model, parent_facts = ctx.base_model, {}
        else:
            parent_art = build_variant(recipe.parent, ctx, force=False, _models=_models)
            parent_model = _models.get(recipe.parent) or parent_art.load_model(ctx.card)
            parent_facts = {"pruning_file": parent_art.manifest.get("pruning_file") and
                            (parent_art.dir / parent_art.manifest["pruning_file"])}
        ctx.log(f"building {name}: {recipe.summary}")
        t0 = time.perf_counter()
        model, facts = recipe.apply(copy.deepcopy(parent_model).eval(), ctx, recipe)
        build_seconds = time.perf_counter() - t0
        if not recipe.kind.quantized:
            _models[name] = model

        tmp = vdir.with_name(f".{vdir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            weights_file, fmt = _save_weights(model, recipe, tmp)
            pruning_file = None
            if facts.get("pruning_history") is not None:
                atomic_write_bytes(tmp / "pruning.json", dumps_json(facts["pruning_history"]).encode())
                pruning_file = "pruning.json"
            elif parent_facts.get("pruning_file"):
                shutil.copyfile(parent_facts["pruning_file"], tmp / "pruning.json")
                pruning_file = "pruning.json"
            manifest = _manifest(name, recipe, chain, ctx, key, model, parent_model, facts, tmp,
                                 weights_file, fmt, pruning_file, build_seconds)
            manifest["accuracy"] = {acc_key: _accuracy(model, ctx, recipe.backend)}
            atomic_write_json(tmp / MANIFEST, manifest)
            _swap_into_place(tmp, vdir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Artifact(name, vdir, manifest)


def _swap_into_place(tmp: Path, vdir: Path) -> None:
    old = vdir.with_name(f".{vdir.name}.old-{os.getpid()}")
    if vdir.exists():
        os.replace(vdir, old)
    os.replace(tmp, vdir)
    shutil.rmtree(old, ignore_errors=True)


def _manifest(name, recipe, chain, ctx, key, model, parent_model, facts, tmp, weights_file, fmt,
              pruning_file, build_seconds) -> dict:
    wpath = tmp / weights_file
    raw = wpath.read_bytes()
    params, nonzero = count_parameters(model)
    # int8 and fp16 change the arithmetic, not the work: count MACs on the float parent.
    macs = count_macs(model if recipe.kind is Kind.FLOAT else parent_model, ctx.card.input_size)
    files = {weights_file: hashlib.sha256(raw).hexdigest()}
    if pruning_file:
        files[pruning_file] = sha256_file(tmp / pruning_file)
    return {
        "build_format": BUILD_FORMAT,
        "name": name,
        "key": key,
        "recipe": recipe.describe(),
        "parent": recipe.parent,
        "lineage": [r.name for r in chain],
        "parent_checkpoint_sha256": ctx.checkpoint_sha256,
        "checkpoint": ctx.checkpoint_label,
        "dataset_id": ctx.dataset.id,
        "card": ctx.card.to_json(),
        "calibration": facts.get("calibration"),
        "backend": recipe.backend,
        "finetune": facts.get("finetune"),
        "pruning_file": pruning_file,
        "weights_file": weights_file,
        "weights_format": fmt,
        "files": files,
        "versions": library_versions(),
        "parameters": params,
        "nonzero_parameters": nonzero,
        "macs": macs,
        "input_size": list(ctx.card.input_size),
        "size_bytes": len(raw),
        "size_gzip_bytes": len(gzip.compress(raw, compresslevel=6, mtime=0)),
        "build_seconds": round(build_seconds, 2),
        "built_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
