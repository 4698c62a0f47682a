"""Gate thresholds, read from one place: ``[tool.resnet18-bench.gate]`` in pyproject.toml.

    [tool.resnet18-bench.gate]
    min_effect = 0.10
    alpha = 0.01

    [tool.resnet18-bench.gate.devices."cuda"]          # cuDNN/TF32 are not bit-exact
    accuracy_tolerance_pp = 0.5

    [tool.resnet18-bench.gate.variants."prune-struct-0.5+int8"]
    accuracy_budget_pp = 2.0

    [tool.resnet18-bench.gate.shapes."32x32"]           # sub-millisecond series move more
    ratio_tolerance = 1.0

Overrides apply device first, then variant (the more specific one wins), then input shape for the
latency checks of that shape. Every key in an override table must be a known gate key; a typo is
an error, never a silently ignored setting.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from compress.errors import UserError

from .results import describe, shape_id

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib

TABLE = "tool.resnet18-bench.gate"


def _no_overrides() -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class GateConfig:
    # Absolute latency (same machine only) must be more than 10% slower to count. Mann-Whitney
    # catches shifts of a few percent with 100 samples, but the same machine drifts by several
    # percent between runs (frequency scaling, noisy neighbours), which no within-run test sees;
    # the effect floor is what keeps that drift from failing merges.
    min_effect: float = 0.10
    # Significance level for Mann-Whitney (latency) and McNemar (accuracy). 1%: a run gates
    # dozens of series (variants x runtimes x shapes); at 5% a few would pass the test by chance
    # on every run, leaving the effect floor as the only guard.
    alpha: float = 0.01
    # In-run ratio to the interleaved fp32-eager reference may grow by at most 25% over the
    # baseline ratio. Ratios of two interleaved medians on a shared 2-core VM vary by ~10-15%
    # between runs; 25% is about two of those spreads and still catches a runtime losing its
    # fast path (a fused or vectorized kernel), which costs far more. It is the only latency
    # check that works across machines.
    ratio_tolerance: float = 0.25
    # The same tolerance where the candidate's or the reference's samples are noisy (cv above
    # cv_warn). Five unchanged-tree CIFAR-10 runs (docs/PERFORMANCE.md): ratios of series with
    # cv <= 0.10 moved by at most 1.10x, those of noisy series by up to 1.25x. A wider limit there
    # keeps the gate quiet on an unchanged tree and still fails a lost fast path (4.3x).
    noisy_ratio_tolerance: float = 0.5
    # pyperf's threshold: above 10% coefficient of variation a series is flagged "noisy".
    cv_warn: float = 0.10
    # The deployable file may grow by 1% (metadata, exporter version) before it fails.
    size_tolerance: float = 0.01
    # Stored-accuracy check on the same machine fingerprint. 0.0 because CPU eager,
    # TorchScript, ONNX Runtime and the int8 backends are deterministic for a fixed thread count
    # and library versions: any change means the model changed. Not bit-exact, so give them a
    # device or variant override: CUDA (cuDNN autotuning picks different algorithms per run,
    # TF32), fp16/bf16 variants.
    accuracy_tolerance_pp: float = 0.0
    # Same check against a baseline from another machine of the same device class. Kernels
    # differ by ISA (AVX2 vs AVX-512 summation order; x86 int8 without VNNI saturates in
    # vpmaddubsw), flipping a few borderline images: 1 pp is ~4 images of a 360-image eval set.
    accuracy_tolerance_cross_machine_pp: float = 1.0
    # Allowed top-1 drop versus fp32-eager measured in the same run, on the same images.
    accuracy_budget_pp: float = 1.0
    # Below this many samples per side a latency series is not judged: medians and ranks of a
    # handful of samples are dominated by warm-up and scheduler noise.
    min_samples: int = 20
    # Confirming a slowdown below ratio_tolerance within one run (bench/history.py, RatioHistory).
    # A ratio more than confirm_suspect_sd between-run standard deviations above the same series
    # in the history store (at least confirm_min_runs earlier quiet runs) is measured again with
    # confirm_rounds times the samples and time. It is "slower" when the prediction test on the
    # new ratio gives p < confirm_alpha and it is at least 1 + confirm_min_change times the
    # history's ratio. 0.1%: a run judges ~30 ratios, so a run raises a false "slower" ~3% of the
    # time; 2 sd: ~2% of an unchanged run's ratios get measured again (a few seconds each).
    confirm_alpha: float = 0.001
    confirm_suspect_sd: float = 2.0
    confirm_min_change: float = 0.05
    confirm_rounds: int = 3
    confirm_min_runs: int = 5
    # name -> {key: value}; applied by for_device / for_variant / for_item.
    devices: Mapping[str, Mapping[str, Any]] = field(default_factory=_no_overrides, hash=False)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=_no_overrides, hash=False)
    shapes: Mapping[str, Mapping[str, Any]] = field(default_factory=_no_overrides, hash=False)
    source: str = field(default="built-in defaults", compare=False)

    def for_device(self, name: str) -> GateConfig:
        return replace(self, **self.devices[name]) if name in self.devices else self

    def for_variant(self, name: str) -> GateConfig:
        return replace(self, **self.variants[name]) if name in self.variants else self

    def for_shape(self, input_size: tuple[int, int] | list[int]) -> GateConfig:
        """Thresholds for the latency series of one input shape ("32x32" table)."""
        name = shape_id(input_size)
        return replace(self, **self.shapes[name]) if name in self.shapes else self

    def for_item(self, item: Mapping[str, Any]) -> GateConfig:
        """The thresholds for one results item: device overrides, then variant overrides."""
        return self.for_device(item["device"]).for_variant(item["variant"])


# name -> (type, lowest allowed, highest allowed, lowest is exclusive)
_BOUNDS: dict[str, tuple[type, float, float, bool]] = {
    "min_effect": (float, 0.0, math.inf, False),
    "alpha": (float, 0.0, 1.0, True),
    "ratio_tolerance": (float, 0.0, math.inf, False),
    "noisy_ratio_tolerance": (float, 0.0, math.inf, False),
    "cv_warn": (float, 0.0, math.inf, True),
    "size_tolerance": (float, 0.0, math.inf, False),
    "accuracy_tolerance_pp": (float, 0.0, 100.0, False),
    "accuracy_tolerance_cross_machine_pp": (float, 0.0, 100.0, False),
    "accuracy_budget_pp": (float, 0.0, 100.0, False),
    "min_samples": (int, 2, 1_000_000, False),
    "confirm_alpha": (float, 0.0, 1.0, True),
    "confirm_suspect_sd": (float, 0.0, math.inf, False),
    "confirm_min_change": (float, 0.0, math.inf, False),
    "confirm_rounds": (int, 1, 100, False),
    "confirm_min_runs": (int, 3, 1_000_000, False),
}
_OVERRIDE_KINDS = ("devices", "variants", "shapes")
assert set(_BOUNDS) == {f.name for f in fields(GateConfig)} - {*_OVERRIDE_KINDS, "source"}


def _bad_key(key: str, known: list[str], where: str, source: str) -> UserError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return UserError(f"{source}: unknown key {where}.{key}; {hint}known keys: {', '.join(known)}")


def _parse_value(key: str, value: Any, where: str, source: str) -> float | int:
    kind, lo, hi, lo_open = _BOUNDS[key]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    else:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        expected = "a finite number"
    if not ok:
        raise UserError(f"{source}: {where}.{key} must be {expected}, got {describe(value)}")
    if value < lo or (lo_open and value == lo) or value > hi:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        high = "" if math.isinf(hi) else f" and <= {hi:g}"
        raise UserError(f"{source}: {where}.{key} must be {low}{high}, got {describe(value)}")
    return kind(value)


def _parse_overrides(table: Any, where: str, source: str) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(table, dict):
        raise UserError(f"{source}: {where} must be a table of tables, got {describe(table)}")
    parsed = {}
    for name, override in table.items():
        sub = f'{where}."{name}"'
        if not isinstance(override, dict):
            raise UserError(f"{source}: {sub} must be a table of gate keys, got {describe(override)}")
        parsed[name] = MappingProxyType(_parse_keys(override, sub, source))
    return MappingProxyType(parsed)


def _parse_keys(table: dict, where: str, source: str) -> dict[str, Any]:
    known = sorted(_BOUNDS)
    out = {}
    for key, value in table.items():
        if key not in _BOUNDS:
            raise _bad_key(key, known, where, source)
        out[key] = _parse_value(key, value, where, source)
    return out


def parse_gate_table(table: Any, source: str) -> GateConfig:
    """Parse the contents of [tool.resnet18-bench.gate] (a dict as tomllib returns it)."""
    if not isinstance(table, dict):
        raise UserError(f"{source}: {TABLE} must be a table, got {describe(table)}")
    table = dict(table)
    overrides = {kind: _parse_overrides(table.pop(kind), f"{TABLE}.{kind}", source)
                 for kind in _OVERRIDE_KINDS if kind in table}
    for name in overrides.get("shapes", {}):
        if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", name):
            # A shape the gate never sees would be a silently ignored setting.
            raise UserError(f'{source}: {TABLE}.shapes."{name}" is not an input shape; '
                            'write it as HEIGHTxWIDTH, e.g. "32x32"')
    for key in table:
        if key not in _BOUNDS:
            raise _bad_key(key, sorted([*_BOUNDS, *_OVERRIDE_KINDS]), TABLE, source)
    return GateConfig(**_parse_keys(table, TABLE, source), **overrides, source=source)


def parse_pyproject(data: Any, source: str) -> GateConfig:
    """Pick the gate table out of a parsed pyproject.toml; absent means all defaults."""
    node = data
    for depth, part in enumerate(["tool", "resnet18-bench", "gate"]):
        if not isinstance(node, dict):
            where = ".".join(["tool", "resnet18-bench", "gate"][:depth]) or "top level"
            raise UserError(f"{source}: {where} must be a table, got {describe(node)}")
        if part not in node:
            return GateConfig(source=source)
        node = node[part]
    return parse_gate_table(node, source)


def load_gate_config(pyproject_path: str | os.PathLike, required: bool = True) -> GateConfig:
    """Thresholds from ``pyproject_path``, the project being measured (pytest's rootdir, or
    ``--gate-config``), never from where this package is installed.

    A missing file is an error when the caller named it (``required``); otherwise it means the
    built-in defaults, and the results say so ("built-in defaults" as the source).
    """
    path = Path(pyproject_path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not required:
            return GateConfig()
        raise UserError(f"{source}: no such file; pass the path of the project's "
                        "pyproject.toml") from None
    except OSError as err:
        raise UserError(f"{source}: cannot read ({err.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{source}: not valid TOML ({err}); fix the file") from None
    return parse_pyproject(data, source)
