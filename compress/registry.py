"""Variant registry: a name maps to a recipe (timm's register_model / list_models, for compression).

A recipe is data (kind, parameters, parent) plus one function that turns the parent's model into
this variant's. Tests and the bench plugin parametrize directly over ``list_variants()``.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import UserError


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str  # "float" | "int8" | "fp16": how the artifact is stored and which runtimes apply
    summary: str
    origin: str  # where the idea comes from (the tutorial section, or "beyond the tutorial")
    parent: str | None
    params: dict = field(default_factory=dict)
    devices: tuple[str, ...] = ("x86", "arm", "cuda")  # where the variant is a deployment target
    apply: Callable | None = field(default=None, compare=False, repr=False)


_REGISTRY: dict[str, Recipe] = {}
# Families such as prune-struct-<ratio>: a pattern and a factory that registers the concrete name.
_FAMILIES: list[tuple[re.Pattern, Callable[[re.Match], Recipe]]] = []


def register(recipe: Recipe) -> Recipe:
    if recipe.name in _REGISTRY:
        raise ValueError(f"variant {recipe.name} registered twice")
    _REGISTRY[recipe.name] = recipe
    return recipe


def register_family(pattern: str, factory: Callable[[re.Match], Recipe]) -> None:
    _FAMILIES.append((re.compile(pattern), factory))


def get_recipe(name: str) -> Recipe:
    _ensure_loaded()
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
    _ensure_loaded()
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


def _ensure_loaded() -> None:
    from . import recipes  # noqa: F401  (registers the built-in variants on import)
