"""Read, check and write the results JSON described in docs/results-schema.md.

The gate and the report trust what ``validate_results`` lets through, so every problem with a
file surfaces here as one UserError naming the file and the field, not as a KeyError deep in
the gate. The checks are a small table of field -> type (``Field``) plus the few rules a table
cannot say (ids unique, correct <= n, the correctness mask matches the count).

Unknown keys are allowed: adding a field is backwards compatible, so it does not bump
``SCHEMA_VERSION``; renaming, removing or changing the meaning of one does.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from compress.errors import UserError

from .stats import unpack_bits

SCHEMA_VERSION = 1
KIND = "resnet-bench-results"
STATUSES = ("ok", "skipped", "error")
VERDICTS = ("ok", "regression", "slower", "not significant", "new", "missing", "noisy", "skipped")
# Most severe first: how summaries count verdicts and how report tables sort findings.
VERDICT_ORDER = ("regression", "slower", "noisy", "missing", "new", "not significant", "skipped", "ok")
assert set(VERDICT_ORDER) == set(VERDICTS)
# The in-run reference: every run measures it, every ratio and accuracy budget is relative to it.
REFERENCE_VARIANT, REFERENCE_RUNTIME = "fp32", "eager"
REFERENCE = (REFERENCE_VARIANT, REFERENCE_RUNTIME)
# pyperf's threshold: a series with a coefficient of variation above it is "noisy". The gate
# config may override it (cv_warn); the gate block records the value in force for the report.
DEFAULT_CV_WARN = 0.10
# How far an in-run ratio to the interleaved reference moves between unchanged-tree runs here
# (docs/PERFORMANCE.md): at most 1.10x for quiet series (cv <= cv_warn), up to 1.25x for noisy
# ones. Two ratios closer than that are a tie, whatever one run's bootstrap interval says
# (the report's "which runtime wins", python -m bench compare).
QUIET_RATIO_SPREAD = 0.10
NOISY_RATIO_SPREAD = 0.25

_RERUN = "re-run the benchmark to regenerate it"


# --- the field table machinery (baselines.py reuses it) -------------------------------------

@dataclass(frozen=True)
class Field:
    """What one JSON value must look like.

    kind: "str" | "int" | "num" | "bool" | "list" | "dict" (known keys in ``fields``) |
    "map" (any string keys, every value matches ``item``) | "any".
    """

    kind: str
    required: bool = True
    nullable: bool = False
    fields: dict[str, Field] | None = None
    item: Field | None = None
    choices: tuple[Any, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    min_len: int | None = None
    max_len: int | None = None


def string(**kw) -> Field:
    return Field("str", **kw)


def integer(**kw) -> Field:
    return Field("int", **kw)


def number(**kw) -> Field:
    return Field("num", **kw)


def boolean(**kw) -> Field:
    return Field("bool", **kw)


def list_of(item: Field, **kw) -> Field:
    return Field("list", item=item, **kw)


def obj(fields: dict[str, Field], **kw) -> Field:
    return Field("dict", fields=fields, **kw)


def map_of(value: Field, **kw) -> Field:
    return Field("map", item=value, **kw)


def optional(f: Field) -> Field:
    """May be absent or null (the two mean the same thing in these files)."""
    return replace(f, required=False, nullable=True)


_KIND_WORDS = {
    "str": "a string", "int": "an integer", "num": "a finite number", "bool": "true or false",
    "list": "a list", "dict": "an object", "map": "an object",
}


def describe(value: Any) -> str:
    """A short, JSON-flavoured description of a bad value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _type_ok(kind: str, value: Any) -> bool:
    # bool is an int subclass in Python, but `true` where a number belongs is a bug upstream.
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "num":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, (list, tuple))  # tuples: results built in Python, not yet JSON
    if kind in ("dict", "map"):
        return isinstance(value, dict)
    return True


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def check_value(value: Any, spec: Field, path: str, source: str, fix: str) -> None:
    """Raise UserError("<source>: <path> ...; <fix>") unless ``value`` matches ``spec``."""

    def fail(problem: str) -> None:
        raise UserError(f"{source}: {path} {problem}; {fix}")

    if value is None:
        if spec.nullable:
            return
        fail(f"must be {_KIND_WORDS.get(spec.kind, 'set')}, got null")
    if not _type_ok(spec.kind, value):
        fail(f"must be {_KIND_WORDS[spec.kind]}, got {describe(value)}")
    if spec.choices is not None and value not in spec.choices:
        fail(f"must be one of {', '.join(map(repr, spec.choices))}, got {describe(value)}")
    if spec.min_value is not None and value < spec.min_value:
        fail(f"must be >= {spec.min_value:g}, got {describe(value)}")
    if spec.max_value is not None and value > spec.max_value:
        fail(f"must be <= {spec.max_value:g}, got {describe(value)}")
    if spec.kind == "str" and spec.min_len and not value:
        fail("must not be empty")
    if spec.min_len is not None and len(value) < spec.min_len:
        fail(f"must have at least {_entries(spec.min_len)}, got {len(value)}")
    if spec.max_len is not None and len(value) > spec.max_len:
        fail(f"must have at most {_entries(spec.max_len)}, got {len(value)}")
    if spec.kind == "list" and spec.item is not None:
        for i, element in enumerate(value):
            check_value(element, spec.item, f"{path}[{i}]", source, fix)
    elif spec.kind == "map" and spec.item is not None:
        for key, element in value.items():
            # Keys are data here (item ids, fingerprints); keep odd ones on one quoted line.
            shown = key if key.isprintable() and "'" not in key else repr(key)
            check_value(element, spec.item, f"{path}.{shown}", source, fix)
    elif spec.kind == "dict" and spec.fields is not None:
        check_fields(value, spec.fields, path, source, fix)


def check_fields(value: dict, fields: dict[str, Field], path: str, source: str, fix: str) -> None:
    prefix = f"{path}." if path else ""
    for name, spec in fields.items():
        if name not in value:
            if spec.required:
                raise UserError(f"{source}: missing field {prefix}{name}; {fix}")
            continue
        check_value(value[name], spec, prefix + name, source, fix)


def check_schema_version(obj: Any, source: str, what: str, fix: str,
                         supported: int = SCHEMA_VERSION,
                         upgrade: str = "upgrade resnet18-bench or re-run the benchmark") -> None:
    """The version check comes before everything else: a newer file may look broken otherwise."""
    if not isinstance(obj, dict):
        raise UserError(f"{source}: top level must be a JSON object, got {describe(obj)}; {fix}")
    if "schema_version" not in obj:
        raise UserError(f"{source}: missing field schema_version; not a {what} file? {fix}")
    version = obj["schema_version"]
    if not _type_ok("int", version):
        raise UserError(
            f"{source}: schema_version must be an integer, got {describe(version)}; {fix}")
    if version > supported:
        raise UserError(
            f"{source}: schema_version {version} is newer than this tool understands "
            f"({supported}); {upgrade}")
    if version < 1:
        raise UserError(
            f"{source}: schema_version {version} is not a known version "
            f"(this tool reads {supported}); {fix}")


# --- the results schema ---------------------------------------------------------------------

_NONNEG = {"min_value": 0}
_SIZE_HW = list_of(integer(min_value=1), min_len=2, max_len=2)
_MS = number(**_NONNEG)

_LATENCY = obj({
    "input_size": _SIZE_HW,
    "batch_size": integer(min_value=1),
    "samples_ms": list_of(_MS, min_len=1),
    "p50_ms": _MS, "p90_ms": _MS, "p99_ms": _MS, "min_ms": _MS, "mean_ms": _MS,
    "stdev_ms": _MS,
    "cv": number(**_NONNEG),
    "reference_id": optional(string()),
    "reference_samples_ms": optional(list_of(_MS, min_len=1)),
    "reference_p50_ms": optional(_MS),
    "reference_block": optional(integer(min_value=1)),
    "ratio_to_reference": optional(number(**_NONNEG)),
    # Earlier measurements of this shape that the gate found regressed and measured again
    # (--latency-retries): kept so the report can say the figure above is a confirmation.
    "discarded_attempts": optional(list_of(obj({
        "p50_ms": _MS, "cv": number(**_NONNEG),
        "reference_p50_ms": optional(_MS), "ratio_to_reference": optional(number(**_NONNEG)),
        "why": string(),
    }))),
    # This series' ratios in earlier runs of the history store, when it had enough quiet ones,
    # and whether this shape was measured again because its ratio stood out (RatioHistory).
    "confirmation": optional(obj({
        "history_ratios": list_of(number(min_value=0), min_len=2),
        "history_first_utc": string(), "history_last_utc": string(),
        "remeasured": boolean(), "rounds_factor": integer(min_value=1),
        "first_ratio": optional(number(**_NONNEG)),
    })),
})

_THROUGHPUT = obj({
    "input_size": _SIZE_HW,
    "batch_size": integer(min_value=1),
    "img_s": number(**_NONNEG),
    "batches": optional(integer(min_value=0)),
})

_FRACTION = number(min_value=0, max_value=1)

_ACCURACY = obj({
    "top1": _FRACTION,
    "correct": integer(**_NONNEG),
    "n": integer(**_NONNEG),
    "ci95": optional(list_of(_FRACTION, min_len=2, max_len=2)),
    "agreement_with_fp32": optional(_FRACTION),
    "per_class": optional(map_of(_FRACTION)),
    "correct_b64": optional(string()),
})

_ITEM = obj({
    "id": string(min_len=1),
    "variant": string(min_len=1),
    "runtime": string(min_len=1),
    "device": string(min_len=1),
    "status": string(choices=STATUSES),
    "reason": optional(string()),
    "runtime_info": optional(obj({})),
    "size_bytes": optional(integer(**_NONNEG)),
    "equivalence": optional(obj({
        "reference": optional(string()),
        "max_rel_error": optional(number(**_NONNEG)),
        "top1_agreement": optional(_FRACTION),
        "passed": optional(boolean()),
    })),
    "accuracy": optional(_ACCURACY),
    "latency": optional(list_of(_LATENCY)),
    "throughput": optional(list_of(_THROUGHPUT)),
})

_FINDING = obj({
    "id": string(),
    "check": string(),
    "shape": optional(string()),
    "verdict": string(choices=VERDICTS),
    "message": string(),
    "value": optional(number()),
    "baseline": optional(number()),
    "limit": optional(number()),
    "p_value": optional(number(min_value=0, max_value=1)),
})

RESULTS_FIELDS: dict[str, Field] = {
    "schema_version": integer(),
    "kind": string(choices=(KIND,)),
    "created_utc": string(),
    "machine_info": obj({
        "node": string(), "arch": string(min_len=1),
        "cpu_model": optional(string()), "cpu_count": optional(integer(min_value=1)),
        "threads": optional(integer(min_value=1)),
        "gpu_name": optional(string()), "gpu_driver": optional(string()),
        "cuda_version": optional(string()), "os": optional(string()),
        "python": optional(string()), "emulated": optional(string()),
        # bench/devices.py: cpu_identity and gpu_identity (absent in files from before them)
        "cpu": optional(obj({"features": list_of(string())}, )),
        "gpu": optional(obj({"name": string()})),
    }),
    "fingerprint": string(min_len=1),
    "versions": map_of(optional(string())),
    "commit_info": obj({"id": optional(string()), "dirty": optional(boolean())}),
    "device": string(min_len=1),
    "dataset": obj({
        "id": string(min_len=1), "name": string(),
        "eval_samples": integer(**_NONNEG), "input_size": _SIZE_HW,
    }),
    "checkpoint": obj({"sha256": string(min_len=1), "source": optional(string())}),
    "options": obj({
        "threads": optional(integer(min_value=1)),
        "batch_sizes": optional(list_of(integer(min_value=1))),
        "input_sizes": optional(list_of(_SIZE_HW)),
        "runtimes": optional(list_of(string())),
    }),
    "items": list_of(_ITEM),
    "skipped": optional(list_of(obj({"id": string(), "reason": optional(string())}))),
    "gate": optional(obj({
        "baseline_file": optional(string()),
        "fingerprint_match": optional(boolean()),
        "baseline_fingerprint": optional(string()),
        "fingerprint_rule": optional(string(choices=("exact", "legacy", "other"))),
        "accuracy_budget_pp": optional(number(min_value=0)),
        "cv_warn": optional(number(min_value=0)),
        "confirm_alpha": optional(number(min_value=0, max_value=1)),
        "config_source": optional(string()),
        "findings": list_of(_FINDING),
    })),
}


def shape_id(size) -> str:
    """[224, 224] -> "224x224": how an input shape is named in test ids, reports and gate tables."""
    return f"{size[0]}x{size[1]}"


def shape_key(entry: dict) -> str:
    """"224x224/b1": how latency and throughput series are named in findings and baselines."""
    return f"{shape_id(entry['input_size'])}/b{entry['batch_size']}"


def fmt_ms(x: float) -> str:
    """Milliseconds at a precision that suits the magnitude: 0.412, 5.61, 123.4."""
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def item_label(item: dict) -> str:
    """"int8-static/onnxruntime/x86": the human name of a results item."""
    return f"{item['variant']}/{item['runtime']}/{item['device']}"


def validate_results(obj: Any, source: str) -> dict:
    """Return ``obj`` unchanged if it is a valid results document, else raise UserError."""
    check_schema_version(obj, source, "resnet18-bench results", _RERUN)
    if "kind" in obj and obj["kind"] != KIND:
        raise UserError(
            f"{source}: kind is {describe(obj['kind'])}, expected {KIND!r}; "
            "pass a results file such as reports/<dataset>-<device>.json")
    check_fields(obj, RESULTS_FIELDS, "", source, _RERUN)
    try:
        # Python 3.10's fromisoformat does not take the "Z" suffix that the harness writes.
        datetime.fromisoformat(re.sub(r"Z$", "+00:00", obj["created_utc"]))
    except ValueError:
        raise UserError(f"{source}: created_utc must be an ISO 8601 time, got "
                        f"{describe(obj['created_utc'])}; {_RERUN}") from None

    seen: set[str] = set()
    for i, item in enumerate(obj["items"]):
        where = f"items[{i}]"
        if item["id"] in seen:
            raise UserError(f"{source}: {where}.id {item['id']!r} appears twice; {_RERUN}")
        seen.add(item["id"])
        _check_item_rules(item, where, source)
    return obj


def _check_item_rules(item: dict, where: str, source: str) -> None:
    status = item["status"]
    if status != "ok":
        if not item.get("reason"):
            raise UserError(f"{source}: {where}.reason must say why the item is {status}; "
                            f"{_RERUN}")
        return
    # size_bytes, accuracy and latency may be null or empty: a run filtered with -k or stopped
    # by -x measures part of an item. The gate judges what is there and says what is not.
    acc = item.get("accuracy")
    if acc is not None and acc["correct"] > acc["n"]:
        raise UserError(f"{source}: {where}.accuracy.correct ({acc['correct']}) exceeds "
                        f"accuracy.n ({acc['n']}); {_RERUN}")
    if acc is not None and acc.get("correct_b64") is not None:
        try:
            mask = unpack_bits(acc["correct_b64"], acc["n"])
        except ValueError as err:
            raise UserError(f"{source}: {where}.accuracy.correct_b64 {err}; {_RERUN}") from None
        if int(mask.sum()) != acc["correct"]:
            raise UserError(
                f"{source}: {where}.accuracy.correct_b64 marks {int(mask.sum())} images "
                f"correct but accuracy.correct is {acc['correct']}; {_RERUN}")
    keys = [shape_key(lat) for lat in item.get("latency") or []]
    for key in set(keys):
        if keys.count(key) > 1:
            raise UserError(f"{source}: {where}.latency has shape {key} twice; {_RERUN}")


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate one results file; any problem is a UserError naming the file."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{source}: no such results file; run `pytest bench/` first "
                        "or pass the path of an existing results file") from None
    except IsADirectoryError:
        raise UserError(f"{source}: is a directory, expected a results JSON file") from None
    except OSError as err:
        raise UserError(f"{source}: cannot read ({err.strerror})") from None
    if not raw.strip():
        raise UserError(f"{source}: file is empty (a run killed before it finished?); "
                        f"{_RERUN}")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{source}: not UTF-8 text; {_RERUN}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{source}: not valid JSON ({err.msg} at line {err.lineno} column "
                        f"{err.colno}); the file is truncated or corrupt, {_RERUN}") from None
    except RecursionError:
        raise UserError(f"{source}: JSON nested too deeply; {_RERUN}") from None
    return validate_results(obj, source)


def emulation(results: dict) -> str | None:
    """What emulated the run (machine_info.emulated, set by scripts/arm-emulated.sh), or None:
    such latencies are never compared with, or recorded as, baselines."""
    return (results.get("machine_info") or {}).get("emulated")


def shard_of(variant: str, runtime: str, count: int) -> int:
    """Which of ``count`` shards (1-based) measures (variant, runtime): a pure function of the
    names, so every machine, the gate and the merge agree without seeing the whole matrix. The
    in-run reference is measured by every shard (each needs it for its ratios and budgets)."""
    import hashlib

    if (variant, runtime) == REFERENCE:
        return 0
    digest = hashlib.sha256(f"{variant}|{runtime}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def in_shard(item_id_or_pair, shard: list[int] | tuple[int, int] | None) -> bool:
    """Whether an item belongs to ``shard`` = (k, n); every item belongs to an unsharded run."""
    if not shard:
        return True
    variant, runtime = item_id_or_pair
    owner = shard_of(variant, runtime, shard[1])
    return owner == 0 or owner == shard[0]


def cv_warn(results: dict) -> float:
    """The noisy-series threshold the run's gate used (``DEFAULT_CV_WARN`` for older files)."""
    value = (results.get("gate") or {}).get("cv_warn")
    return DEFAULT_CV_WARN if value is None else float(value)


def is_reference(item: dict) -> bool:
    return item["variant"] == REFERENCE_VARIANT and item["runtime"] == REFERENCE_RUNTIME
