"""Build a variant into an artifact directory with a manifest; rebuild only when an input changed.

Layout: ``<artifact_root>/<dataset id>/<checkpoint sha256[:12]>/<variant>/<build key[:12]>/``
  manifest.json          what it is, how it was made, how big it really is; carries an HMAC made
                         with this user's key (compress/trust.py): a manifest that does not verify
                         is treated as absent and rebuilt, never read
  weights.safetensors    float and fp16 variants (no code can hide in safetensors)
  weights.int8.pt        int8 variants: quantized tensors have no safetensors form; weights-only torch file
  pruning.json           Torch-Pruning history, replayed on a fresh ResNet18 before loading weights

The build key names every input of the weights (recipe chain, checkpoint, data, card, calibration
size, fine-tune length, torch): runs with different inputs never share a directory. Every load
reads each file once, checks its sha256 against the authenticated manifest, and deserializes those
same bytes, so a file swapped after the build (or between the check and the load) is never used.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import io
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

from . import prune, quantize, trust
from .cards import ModelCard
from .data import Dataset, Split, default_cache_dir
from .errors import UserError
from .evaluate import predict, top1
from .fsutil import READ_ONLY_CACHE, atomic_write_bytes, atomic_write_json, dumps_json, sha256_file, writable
from .models import build_model, count_macs, count_parameters, require_safe_torch
from .registry import Kind, Recipe, WeightsFormat, lineage

# The manifest layout; a manifest of another format is rebuilt, never read.
BUILD_FORMAT = 3
MANIFEST = "manifest.json"
MANIFEST_PURPOSE = "artifact-manifest"  # what the manifest's HMAC is bound to (compress/trust.py)
MAC_FIELD = "mac"


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
    finetune_samples: int | None = None  # fine-tune on a fixed stratified subset of train (default: all)
    finetune_minutes: float | None = None  # stop each fine-tune after this long (recorded; not reproducible)
    train_device: str = "cpu"
    log: Callable[[str], None] = print

    def calibration_split(self) -> Split:
        """The train images every int8 variant calibrates on, PyTorch's and each runtime's own
        quantizer alike (a fixed stratified subset: one home, so they never drift apart)."""
        return self.dataset.calibration_split(min(self.calib_samples, len(self.dataset.train)))

    def calibration_info(self, split: Split) -> dict:
        return {"split": "train", "n": len(split), "order": "stratified, seed 1",
                "sha256": split.digest()}

    def variant_dir(self, name: str) -> Path:
        """Where ``name`` built from this context's inputs lives: keyed by its build key."""
        return (self.artifact_root / self.dataset.id / self.checkpoint_sha256[:12] / name
                / _build_key(lineage(name), self)[:12])


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
        "finetune_samples": ctx.finetune_samples if uses_finetune else None,
        "finetune_minutes": ctx.finetune_minutes if uses_finetune else None,
        "torch": ".".join(torch.__version__.split(".")[:2]),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_manifest(vdir: Path) -> tuple[dict | None, str | None]:
    """(the authenticated manifest without its MAC, None) or (None, why not)."""
    path = vdir / MANIFEST
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None, "unreadable"
    if not isinstance(m, dict) or m.get("build_format") != BUILD_FORMAT:
        return None, "other format"
    mac = m.pop(MAC_FIELD, None)
    if not trust.verify_json(m, mac, MANIFEST_PURPOSE):
        return None, "unauthenticated"
    return m, None


def read_manifest(vdir: Path) -> dict | None:
    """The manifest in ``vdir`` if it is of this format and authenticated by this user's key, else None."""
    return _read_manifest(vdir)[0]


def _write_manifest(vdir: Path, manifest: dict) -> None:
    atomic_write_json(vdir / MANIFEST, {**manifest, MAC_FIELD: trust.sign_json(manifest, MANIFEST_PURPOSE)})


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
    m, why = _read_manifest(vdir)
    if why == "unauthenticated":
        raise UserError(f"{vdir}: manifest is not signed with your cache key ({trust.key_file()}): it was written by "
                        f"someone else or with another key; delete the directory and rebuild")
    if m is None:
        raise UserError(f"{vdir} holds no valid manifest: rebuild with `python -m compress build`")
    if not verify_files(vdir, m):
        raise UserError(f"{vdir}: files do not match their manifest sha256; delete the directory and rebuild")
    return Artifact(m["name"], vdir, m)


# ---------------------------------------------------------------- loading (replay, never unpickle a module)
def read_verified(art: Artifact, name: str) -> bytes:
    """The bytes of one file of ``art``, read once and checked against the sha256 in its (authenticated)
    manifest: what is checked is exactly what is then deserialized."""
    digest = (art.manifest.get("files") or {}).get(name)
    path = art.dir / name
    if not isinstance(digest, str) or "/" in name or "\\" in name:
        raise UserError(f"{art.dir}: {name!r} is not a file its manifest lists; delete the directory and rebuild")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror or type(err).__name__}); "
                        f"delete {art.dir} and rebuild") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise UserError(f"{art.dir}: files do not match their manifest sha256 ({name} changed since it was "
                        f"built); delete the directory and rebuild")
    return data


def load_model_from_artifact(art: Artifact, card: ModelCard) -> torch.nn.Module:
    m = art.manifest
    model = build_model(card).eval()
    if m.get("pruning_file"):
        history = json.loads(read_verified(art, m["pruning_file"]))
        prune.replay_channel_prune(model, history, card.input_size)
    try:
        fmt = WeightsFormat(m["weights_format"])
    except ValueError:
        raise UserError(f"{art.dir}: unknown weights_format {m['weights_format']!r}; rebuild with this version") from None
    data = read_verified(art, m["weights_file"])
    if fmt in (WeightsFormat.SAFETENSORS_FLOAT32, WeightsFormat.SAFETENSORS_FLOAT16):
        from safetensors.torch import load as load_safetensors

        try:
            sd = load_safetensors(data)
        except Exception as e:  # a damaged header surfaces as SafetensorError, ValueError ...
            raise UserError(f"{art.weights_path} cannot be loaded ({type(e).__name__}); "
                            f"delete {art.dir} and rebuild") from None
        if fmt is WeightsFormat.SAFETENSORS_FLOAT16:
            model = model.half()
        model.load_state_dict(sd)
        return model.eval()
    require_safe_torch()
    try:
        sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # refused (would run code), truncated, or not a torch file: never a traceback
        raise UserError(f"{art.weights_path} cannot be loaded ({type(e).__name__}); "
                        f"delete {art.dir} and rebuild") from None
    if fmt is WeightsFormat.TORCH_INT8_STATIC:
        return quantize.rebuild_static(model, sd, card, backend=m["backend"])
    if m.get("backend"):
        quantize.set_engine(m["backend"])
    return quantize.rebuild_dynamic(model, sd)


# ---------------------------------------------------------------- building
def _save_weights(model: torch.nn.Module, recipe: Recipe, tmp: Path) -> tuple[str, str, bytes]:
    """Serialize in memory, then write: the manifest records the sha256 of these bytes, never a
    re-read of a file someone else could have changed in the meantime."""
    fmt = recipe.weights_format
    path = tmp / fmt.file_name
    if fmt in (WeightsFormat.TORCH_INT8_STATIC, WeightsFormat.TORCH_INT8_DYNAMIC):
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        raw = buf.getvalue()
    else:
        from safetensors.torch import save

        raw = save({k: v.contiguous() for k, v in model.state_dict().items()})
    atomic_write_bytes(path, raw)
    return path.name, fmt.value, raw


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

    trust.check_cache_dir(ctx.artifact_root)
    if not force and not writable(vdir.parent):
        # A read-only cache (a shared, pre-built one) is used as it is: no lock can be taken there,
        # and none is needed, since nothing will be written.
        manifest, _ = _read_manifest(vdir)
        if manifest and manifest.get("key") == key and verify_files(vdir, manifest) \
                and acc_key in manifest["accuracy"]:
            return Artifact(name, vdir, manifest)
        raise UserError(READ_ONLY_CACHE.format(path=ctx.artifact_root, what=f"build of {name}"))
    vdir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(vdir) + ".lock"):
        manifest, why = _read_manifest(vdir)
        if why == "unauthenticated":
            ctx.log(f"warning: {vdir / MANIFEST} is not signed with your cache key ({trust.key_file()}); "
                    f"rebuilding {name} instead of trusting it")
        if not force and manifest and manifest.get("key") == key and verify_files(vdir, manifest):
            art = Artifact(name, vdir, manifest)
            if acc_key not in manifest["accuracy"]:
                manifest["accuracy"][acc_key] = _accuracy(art.load_model(ctx.card), ctx, recipe.backend)
                _write_manifest(vdir, manifest)
            return art

        if recipe.parent is None:
            parent_model, parent_facts = ctx.base_model, {}
        else:
            parent_art = build_variant(recipe.parent, ctx, force=False, _models=_models)
            parent_model = _models.get(recipe.parent) or parent_art.load_model(ctx.card)
            # The history's bytes as the parent's manifest vouches for them (a copy of the file
            # could be a swapped one).
            parent_facts = {"pruning_bytes": parent_art.manifest.get("pruning_file") and
                            read_verified(parent_art, parent_art.manifest["pruning_file"])}
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
            weights_file, fmt, raw = _save_weights(model, recipe, tmp)
            files = {weights_file: hashlib.sha256(raw).hexdigest()}
            pruning = None
            if facts.get("pruning_history") is not None:
                pruning = dumps_json(facts["pruning_history"]).encode()
            elif parent_facts.get("pruning_bytes"):
                pruning = parent_facts["pruning_bytes"]
            pruning_file = None
            if pruning is not None:
                pruning_file = "pruning.json"
                atomic_write_bytes(tmp / pruning_file, pruning)
                files[pruning_file] = hashlib.sha256(pruning).hexdigest()
            manifest = _manifest(name, recipe, chain, ctx, key, model, parent_model, facts, raw, files,
                                 weights_file, fmt, pruning_file, build_seconds)
            manifest["accuracy"] = {acc_key: _accuracy(model, ctx, recipe.backend)}
            _write_manifest(tmp, manifest)
            _swap_into_place(tmp, vdir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Artifact(name, vdir, manifest)


def peak_rss_bytes() -> int:
    """The process's resident-memory high-water mark so far (children excluded)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak * (1 if sys.platform == "darwin" else 1024))


def _swap_into_place(tmp: Path, vdir: Path) -> None:
    old = vdir.with_name(f".{vdir.name}.old-{os.getpid()}")
    if vdir.exists():
        os.replace(vdir, old)
    os.replace(tmp, vdir)
    shutil.rmtree(old, ignore_errors=True)


def _manifest(name, recipe, chain, ctx, key, model, parent_model, facts, raw, files, weights_file, fmt,
              pruning_file, build_seconds) -> dict:
    params, nonzero = count_parameters(model)
    # int8 and fp16 change the arithmetic, not the work: count MACs on the float parent.
    macs = count_macs(model if recipe.kind is Kind.FLOAT else parent_model, ctx.card.input_size)
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
        # The process's resident high-water mark when the build ended (includes what came before it).
        "peak_rss_bytes": peak_rss_bytes(),
        "built_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
