"""Variant registry: a name maps to a recipe (timm's register_model / list_models, for compression).

A recipe is data: what it makes (``Kind``), how its weights are stored (``WeightsFormat``), whether
it calibrates on train images, how it fine-tunes, which quantized engine it pins, and one function
that turns the parent's model into this variant's. The build (compress/build.py) and the harness
branch only on these declared fields, never on a recipe's or a function's name, and every field
that changes the result is part of the build key.

This module imports no recipe: every recipe module, the built-in compress/recipes.py included, is
named by an entry point in the group ``resnet18_bench.recipes`` and registers itself on import, so
another package adds variants without editing this project. Lookups load the group on first use;
``import compress`` stays free of torch (the gate runs on results files without it).
"""
from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from .errors import UserError

ENTRY_POINT_GROUP = "resnet18_bench.recipes"
BUILTIN_MODULE = "compress.recipes"
DEVICE_KINDS = ("x86", "arm", "cuda")


class Kind(str, enum.Enum):
    """What a variant's arithmetic is; decides how outputs are compared with eager and which
    runtimes can run it. A str enum: manifests and results store the plain value ("int8")."""

    FLOAT = "float"
    INT8 = "int8"
    FP16 = "fp16"

    def __str__(self) -> str:
        return self.value

    @property
    def quantized(self) -> bool:
        return self is Kind.INT8

    @property
    def half(self) -> bool:
        return self is Kind.FP16


class WeightsFormat(str, enum.Enum):
    """How the build stores a variant's weights; decides how they are loaded back."""

    SAFETENSORS_FLOAT32 = "safetensors-float32"
    SAFETENSORS_FLOAT16 = "safetensors-float16"
    # Quantized tensors have no safetensors form: a weights-only torch file, rebuilt on load
    # by re-running the same quantization flow on a fresh model (compress/quantize.py).
    TORCH_INT8_STATIC = "torch-int8-fx"
    TORCH_INT8_DYNAMIC = "torch-int8-dynamic"

    def __str__(self) -> str:
        return self.value

    @property
    def file_name(self) -> str:
        return "weights.int8.pt" if self.value.startswith("torch-int8") else "weights.safetensors"


# The kind a format stores: a recipe that declared a mismatch would save what it cannot load.
_FORMAT_KIND = {WeightsFormat.SAFETENSORS_FLOAT32: Kind.FLOAT, WeightsFormat.SAFETENSORS_FLOAT16: Kind.FP16,
                WeightsFormat.TORCH_INT8_STATIC: Kind.INT8, WeightsFormat.TORCH_INT8_DYNAMIC: Kind.INT8}


@dataclass(frozen=True)
class Finetune:
    """A fine-tune with distillation from the parent model. Every field is in the build key."""

    epochs: float
    lr: float
    min_steps: int = 0  # at least this many optimizer steps, whatever ``epochs`` gives
    distill_weight: float = 1.0  # 1.0: distillation only; 0.0: hard labels only
    batch_size: int = 128
    warmup_fraction: float = 0.1
    augment: bool = False  # no augmentation: the teacher's logits are then computed once

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    kind: Kind
    summary: str
    origin: str  # where the idea comes from (the tutorial section, or "beyond the tutorial")
    parent: str | None
    apply: Callable = field(compare=False, repr=False)  # (parent model, ctx, recipe) -> (model, facts)
    params: dict = field(default_factory=dict)  # the apply function's own settings
    weights_format: WeightsFormat | None = None  # default: the kind's float format (int8 must declare)
    calibrates: bool = False  # True: apply() calibrates on ctx.calibration_split()
    finetune: Finetune | None = None
    backend: str | None = None  # quantized engine the weights are packed for (x86, qnnpack)
    devices: tuple[str, ...] = DEVICE_KINDS  # where the variant is a deployment target
    off_target: str | None = None  # why it is skipped elsewhere, when "targets <devices>" says too little

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))
        fmt = self.weights_format
        if fmt is None:
            if self.kind is Kind.INT8:
                raise ValueError(f"recipe {self.name}: an int8 recipe must declare its weights_format")
            fmt = WeightsFormat.SAFETENSORS_FLOAT16 if self.kind is Kind.FP16 else WeightsFormat.SAFETENSORS_FLOAT32
        fmt = WeightsFormat(fmt)
        if _FORMAT_KIND[fmt] is not self.kind:
            raise ValueError(f"recipe {self.name}: weights_format {fmt} stores {_FORMAT_KIND[fmt]}, not {self.kind}")
        object.__setattr__(self, "weights_format", fmt)
        unknown = set(self.devices) - set(DEVICE_KINDS)
        if unknown:
            raise ValueError(f"recipe {self.name}: unknown device {sorted(unknown)[0]!r}")

    def key_payload(self) -> dict:
        """Everything about this recipe that changes the artifact it builds."""
        return {"name": self.name, "kind": self.kind.value, "params": self.params,
                "weights_format": self.weights_format.value, "calibrates": self.calibrates,
                "finetune": self.finetune.to_json() if self.finetune else None, "backend": self.backend}

    def describe(self) -> dict:
        """The manifest's "recipe" block."""
        return {**self.key_payload(), "summary": self.summary, "origin": self.origin, "devices": list(self.devices)}

    def off_target_reason(self, device_kind: str) -> str | None:
        """Why this variant is not built for ``device_kind``; None where it is a target."""
        if device_kind in self.devices:
            return None
        if self.off_target:
            return self.off_target
        backend = f" ({self.backend} backend)" if self.backend else ""
        return f"{self.name} targets {'/'.join(self.devices)}{backend}, not {device_kind}"


_REGISTRY: dict[str, Recipe] = {}
# Families such as prune-struct-<ratio>: a pattern and a factory that makes the concrete recipe.
_FAMILIES: list[tuple[re.Pattern, Callable[[re.Match], Recipe]]] = []
_plugins_loaded = False


def register(recipe: Recipe) -> Recipe:
    if recipe.name in _REGISTRY:
        raise ValueError(f"variant {recipe.name} registered twice")
    _REGISTRY[recipe.name] = recipe
    return recipe


def register_recipe(**fields) -> Callable[[Callable], Callable]:
    """Decorator: ``@register_recipe(name=..., kind=..., ...)`` over the apply function."""
    def wrap(apply: Callable) -> Callable:
        register(Recipe(apply=apply, **fields))
        return apply
    return wrap


def register_family(pattern: str, factory: Callable[[re.Match], Recipe]) -> None:
    _FAMILIES.append((re.compile(pattern), factory))


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


@contextmanager
def isolated() -> Iterator[None]:
    """Registrations made inside the block are gone after it (tests register toy recipes)."""
    saved, families = dict(_REGISTRY), list(_FAMILIES)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)
        _FAMILIES[:] = families


def _load_plugins() -> None:
    """Import the modules other packages registered under ``resnet18_bench.recipes`` (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINT_GROUP)
    for ep in found:
        try:
            ep.load()
        except Exception as e:  # a broken plugin names itself instead of a traceback
            raise UserError(f"recipe plugin {ep.name} ({ep.value}) failed to load: {type(e).__name__}: {e}") from None
    if not any(ep.value == BUILTIN_MODULE for ep in found):
        raise UserError(f"the built-in variants are not registered: no entry point names {BUILTIN_MODULE} in group "
                        f"{ENTRY_POINT_GROUP}; install the project (`pip install -e .`) so its metadata is current")


def get_recipe(name: str) -> Recipe:
    _load_plugins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    for pattern, factory in _FAMILIES:
        m = pattern.fullmatch(name)
        if m:
            recipe = factory(m)
            if recipe.parent:
                get_recipe(recipe.parent)  # parents register first: list order stays parents-before-children
            return register(recipe)
    raise UserError(f"unknown variant {name!r}: `python -m compress list` shows the registered ones "
                    f"({', '.join(sorted(_REGISTRY))})")


def list_variants(patterns: str | list[str] = "*") -> list[str]:
    """Registered names matching any glob pattern, parents before children.

    A pattern without glob characters that names a family member (``prune-struct-0.7``) registers it."""
    _load_plugins()
    pats = [p.strip() for p in ([patterns] if isinstance(patterns, str) else patterns) if p.strip()]
    for p in pats:
        if not any(ch in p for ch in "*?["):
            get_recipe(p)
    names = [n for n in _REGISTRY if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if not names:
        raise UserError(f"no variant matches {', '.join(pats)}: `python -m compress list` shows the registered ones")
    return names


def lineage(name: str) -> list[Recipe]:
    """The recipe chain from the root (fp32) down to ``name``."""
    chain = [get_recipe(name)]
    while chain[-1].parent:
        chain.append(get_recipe(chain[-1].parent))
    return chain[::-1]
