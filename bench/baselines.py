"""Stored baselines: what the gate compares a run against.

One pretty, key-sorted JSON file per (dataset id, device class), so that re-recording shows up
as a reviewable git diff::

    baselines/<dataset_id>/<device>.json
    {"schema_version": 1, "kind": "resnet-bench-baseline", "dataset_id": ..., "device": ...,
     "entries": {"<fingerprint>": {"checkpoint_sha256": ..., "recorded_utc": ..., "commit": ...,
                                   "items": {"<item id>": {...}}}}}

Entries are keyed by machine fingerprint (bench/devices.py: device class, CPU identity and
kernel-relevant ISA features or GPU and CUDA stack, cores, threads). Unlike pytest-benchmark's
machine id, the architecture is part of it: absolute latencies from an x86 and an aarch64 runner
are never compared. An entry from another fingerprint is still useful for the machine-independent
checks (ratio to the in-run reference, accuracy, size). ``FINGERPRINT_RULES`` says which entry a
run is compared with and what each kind of match allows; the gate block records the rule applied.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from compress.errors import UserError
from compress.fsutil import atomic_write_bytes, dumps_json, sweep_stale_temps

from .devices import LEGACY_FINGERPRINT_FORMAT, fingerprint_format, legacy_fingerprint
from .results import (
    check_fields,
    check_schema_version,
    describe,
    emulation,
    fmt_ms,
    integer,
    list_of,
    map_of,
    number,
    obj,
    optional,
    shape_key,
    string,
)

BASELINE_SCHEMA_VERSION = 1
BASELINE_KIND = "resnet-bench-baseline"
# Enough for Mann-Whitney to resolve a 10% shift at cv 15%; more only bloats the diffs.
MAX_STORED_SAMPLES = 200
# 0.1 us: far below timer noise, and it keeps the stored numbers short.
MS_DECIMALS = 4
# An update takes well under a second; a lock held this long belongs to a hung run.
LOCK_TIMEOUT_S = 300.0

_FIX = "fix or delete the file and re-record the baseline"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

_MS = number(min_value=0)
_BASE_ITEM = obj({
    "variant": string(),
    "runtime": string(),
    "recorded_utc": string(),
    "commit": optional(string()),
    "accuracy": optional(obj({
        "top1": number(min_value=0, max_value=1),
        "correct": integer(min_value=0),
        "n": integer(min_value=0),
    })),
    "size_bytes": optional(integer(min_value=0)),
    "latency": map_of(obj({
        "p50_ms": _MS,
        "samples_ms": list_of(_MS, min_len=1),
        "cv": number(min_value=0),
        "ratio_to_reference": optional(number(min_value=0)),
        "reference_id": optional(string()),
    })),
    "throughput": optional(map_of(obj({"img_s": number(min_value=0)}))),
})
BASELINE_FIELDS = {
    "schema_version": integer(),
    "kind": string(choices=(BASELINE_KIND,)),
    "dataset_id": string(min_len=1),
    "device": string(min_len=1),
    "entries": map_of(obj({
        "checkpoint_sha256": string(min_len=1),
        "recorded_utc": string(),
        "commit": optional(string()),
        "items": map_of(_BASE_ITEM),
    })),
}


def _no_constants(name: str):
    raise ValueError(f"a non-finite number ({name})")


def validate_baseline(obj: Any, source: str, dataset_id: str | None = None,
                      device: str | None = None) -> dict:
    """Return ``obj`` if it is a valid baseline document (for that dataset and device)."""
    check_schema_version(obj, source, "resnet18-bench baseline", _FIX,
                         supported=BASELINE_SCHEMA_VERSION,
                         upgrade="upgrade resnet18-bench or re-record the baseline")
    check_fields(obj, BASELINE_FIELDS, "", source, _FIX)
    # A file copied to the wrong place would silently gate the wrong runs.
    for name, expected in (("dataset_id", dataset_id), ("device", device)):
        if expected is not None and obj[name] != expected:
            raise UserError(f"{source}: {name} is {describe(obj[name])} but the file is stored "
                            f"for {expected!r}; move it or re-record the baseline")
    return obj


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise UserError(f"{what} {describe(value)} cannot be used as a file name; use letters, "
                        "digits, '.', '_', '+' and '-' only")
    return value


def _r(x: float | None, decimals: int = MS_DECIMALS) -> float | None:
    return None if x is None else round(float(x), decimals)


def _cap_samples(samples_ms: list[float]) -> list[float]:
    """Sorted, rounded and at most MAX_STORED_SAMPLES long.

    Thinning takes evenly spaced order statistics, which keeps the distribution's shape (what
    Mann-Whitney ranks against); sorting makes re-recorded files diff line by line.
    """
    ordered = sorted(_r(x) for x in samples_ms)
    n = len(ordered)
    if n <= MAX_STORED_SAMPLES:
        return ordered
    step = (n - 1) / (MAX_STORED_SAMPLES - 1)
    return [ordered[round(i * step)] for i in range(MAX_STORED_SAMPLES)]


def baseline_item(item: dict, results: dict) -> dict:
    """What the gate needs to remember about one measured results item."""
    acc = item.get("accuracy")
    return {
        "variant": item["variant"],
        "runtime": item["runtime"],
        "recorded_utc": results["created_utc"],
        "commit": results["commit_info"].get("id"),
        "accuracy": None if acc is None else {"top1": _r(acc["top1"], 6), "correct": acc["correct"],
                                              "n": acc["n"]},
        "size_bytes": item.get("size_bytes"),
        "latency": {
            shape_key(lat): {
                "p50_ms": _r(lat["p50_ms"]),
                "samples_ms": _cap_samples(lat["samples_ms"]),
                "cv": _r(lat["cv"], 6),
                "ratio_to_reference": _r(lat.get("ratio_to_reference"), 6),
                "reference_id": lat.get("reference_id"),
            }
            for lat in item.get("latency") or []
        },
        "throughput": {shape_key(t): {"img_s": _r(t["img_s"], 3)}
                       for t in item.get("throughput") or []},
    }


def _fmt_mb(n_bytes: int | None) -> str:
    return "not measured" if n_bytes is None else f"{n_bytes / 1e6:.2f} MB"


def _fmt_top1(acc: dict | None) -> str:
    return "not measured" if acc is None else f"{acc['top1']:.2%}"


FINGERPRINT_RULES = {
    "exact": "recorded under this machine's fingerprint: every check, absolute latency included",
    "legacy": ("recorded under the first fingerprint format (device, CPU model string, threads), whose "
               "string this machine shares; that string does not tell CPU generations apart (two "
               "'AMD EPYC' VMs ran one item at 17.2 and 8.9 ms), so: accuracy, size and in-run "
               "latency ratios, no absolute latency"),
    "other": "recorded on another machine: accuracy, size and in-run latency ratios, no absolute latency",
}


def _describe_changes(item_id: str, old: dict | None, new: dict) -> list[str]:
    """Human-readable lines, only for values that change at the precision shown."""
    if old is None:
        shapes = ", ".join(f"{k} {fmt_ms(v['p50_ms'])} ms"
                           for k, v in sorted(new["latency"].items()))
        summary = (f"top1 {_fmt_top1(new['accuracy'])}, size {_fmt_mb(new['size_bytes'])}, "
                   f"p50 {shapes or 'none'}")
        return [f"new: {item_id} ({summary})"]
    lines = []
    if new["accuracy"] is not None and _fmt_top1(old.get("accuracy")) != _fmt_top1(new["accuracy"]):
        lines.append(f"{item_id} accuracy top1 {_fmt_top1(old.get('accuracy'))} -> {_fmt_top1(new['accuracy'])}")
    if new["size_bytes"] is not None and old.get("size_bytes") != new["size_bytes"]:
        lines.append(f"{item_id} size {old.get('size_bytes')} -> {new['size_bytes']} bytes")
    for shape, lat in sorted(new["latency"].items()):
        before = old["latency"].get(shape)
        after = fmt_ms(lat["p50_ms"])
        if before is None:
            lines.append(f"{item_id} latency {shape} p50 new {after} ms")
        elif fmt_ms(before["p50_ms"]) != after:
            lines.append(f"{item_id} latency {shape} p50 {fmt_ms(before['p50_ms'])} -> {after} ms")
    for shape, tp in sorted(new["throughput"].items()):
        before = (old.get("throughput") or {}).get(shape)
        if before is None or f"{before['img_s']:.1f}" != f"{tp['img_s']:.1f}":
            was = "new" if before is None else f"{before['img_s']:.1f} ->"
            lines.append(f"{item_id} throughput {shape} {was} {tp['img_s']:.1f} img/s")
    return lines


class BaselineStore:
    """Baseline files under ``root`` (normally the repository's baselines/ directory)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path_for(self, dataset_id: str, device: str) -> Path:
        directory = self.root / _check_name(dataset_id, "dataset id")
        return directory / f"{_check_name(device, 'device')}.json"

    def path_for_results(self, results: dict) -> Path:
        return self.path_for(results["dataset"]["id"], results["device"])

    def load(self, dataset_id: str, device: str) -> dict | None:
        """The baseline document, or None when nothing has been recorded yet."""
        path = self.path_for(dataset_id, device)
        source = str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise UserError(f"{source}: cannot read baseline ({err.strerror})") from None
        if not raw.strip():
            raise UserError(f"{source}: baseline file is empty; {_FIX}")
        try:
            doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
        except UnicodeDecodeError:
            raise UserError(f"{source}: baseline is not UTF-8 text; {_FIX}") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{source}: baseline is not valid JSON ({err.msg} at line "
                            f"{err.lineno} column {err.colno}); {_FIX}") from None
        except RecursionError:
            raise UserError(f"{source}: baseline JSON nested too deeply; {_FIX}") from None
        except ValueError as err:  # NaN or Infinity: JSON has no such numbers, a baseline must not either
            raise UserError(f"{source}: baseline holds {err}; {_FIX}") from None
        return validate_baseline(doc, source, dataset_id, device)

    def lookup_with_notes(self, results: dict) -> tuple[dict | None, dict | None, list[str]]:
        """(entry for this machine's fingerprint, the newest entry from another fingerprint, notes).

        Entries carry two extra keys: "fingerprint" and "rule" (a ``FINGERPRINT_RULES`` key).
        Either entry is None when absent or recorded with another checkpoint; only the first may
        be used for absolute latency. The second is, in this order of preference, an entry keyed
        by the first, coarser fingerprint format that equals this machine's string in that format
        ("legacy"), else the most recent entry of another machine ("other"). The notes say why a
        stored entry was not usable."""
        path = self.path_for_results(results)
        doc = self.load(results["dataset"]["id"], results["device"])
        if doc is None:
            return None, None, self._sibling_notes(results["dataset"]["id"], results["device"])
        fingerprint = results["fingerprint"]
        legacy = (legacy_fingerprint(results["device"], results.get("machine_info") or {})
                  if fingerprint_format(fingerprint) > LEGACY_FINGERPRINT_FORMAT else None)
        sha = results["checkpoint"]["sha256"]
        notes = []
        same = None
        others = []
        legacies = []
        for fp, entry in sorted(doc["entries"].items()):
            if entry["checkpoint_sha256"] != sha:
                # Different weights: every number in the entry is about another model.
                whose = "this machine" if fp == fingerprint else f"fingerprint {fp}"
                notes.append(
                    f"{path}: baseline for {whose} was recorded with checkpoint "
                    f"{entry['checkpoint_sha256'][:12]}, this run used {sha[:12]}; not "
                    "comparable, treated as missing (re-record the baseline)")
                continue
            if fp == fingerprint:
                same = {**entry, "fingerprint": fp, "rule": "exact"}
            elif fp == legacy:
                legacies.append({**entry, "fingerprint": fp, "rule": "legacy"})
            else:
                others.append({**entry, "fingerprint": fp, "rule": "other"})
        # Most recent other machine: the likeliest to share library versions with this run.
        other = max(legacies or others, key=lambda e: e["recorded_utc"], default=None)
        return same, other, notes

    def _sibling_notes(self, dataset_id: str, device: str) -> list[str]:
        """Say so when baselines exist for the same source and input size but other content:
        the commonest cause of "no baseline" is data that differ from what was recorded."""
        prefix = dataset_id.rsplit("-", 1)[0] + "-"
        if not self.root.is_dir():
            return []
        siblings = sorted(p.name for p in self.root.iterdir()
                          if p.name.startswith(prefix) and p.name != dataset_id
                          and (p / f"{device}.json").is_file())
        if not siblings:
            return []
        return [f"baselines exist for {', '.join(siblings)} but this run's data have id "
                f"{dataset_id}: the image files differ from the ones those were recorded on"]

    def update(self, results: dict, items: Iterable[str] | None = None) -> list[str]:
        """Record this run's measurements for its fingerprint; return what changed.

        ``items``: ids to record (default: every item with status "ok"). Items and latency
        shapes not measured in this run are kept, so a run filtered with ``-k`` does not erase
        the rest. ``results`` must already be validated (load_results / validate_results).
        The file is read, merged and written (atomically, only when its content changes) while
        holding ``<file>.lock``: two updates at once, in two processes, each keep the other's
        entries. Only updates lock; reading baselines for the gate needs no write access.
        """
        path = self.path_for_results(results)
        emulated = emulation(results)
        if emulated:
            raise UserError(f"this run was emulated ({emulated}): its latencies are not a baseline for any "
                            "machine; record baselines on the real device")
        chosen = self._chosen(results, items)
        if not chosen:
            return []
        from filelock import FileLock, Timeout

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
                return self._update_locked(path, results, chosen)
        except Timeout:
            raise UserError(f"{path}: another baseline update has held {path.name}.lock for over "
                            f"{LOCK_TIMEOUT_S:.0f} s; wait for it or check for a hung run") from None
        except OSError as err:
            raise UserError(f"{path}: cannot write baseline ({err.strerror or err}); the previous "
                            "baseline is unchanged") from None

    @staticmethod
    def _chosen(results: dict, items: Iterable[str] | None) -> list[dict]:
        by_id = {item["id"]: item for item in results["items"]}
        if items is None:
            chosen = [item for item in results["items"] if item["status"] == "ok"]
        else:
            chosen = []
            for item_id in items:
                if item_id not in by_id:
                    raise UserError(f"cannot record {item_id!r}: not in this run's results "
                                    f"(ids: {', '.join(sorted(by_id)) or 'none'})")
                if by_id[item_id]["status"] != "ok":
                    item = by_id[item_id]
                    raise UserError(f"cannot record {item_id!r}: its status is "
                                    f"{item['status']} ({item.get('reason')}); fix it and re-run")
                chosen.append(by_id[item_id])
        return chosen

    def _update_locked(self, path: Path, results: dict, chosen: list[dict]) -> list[str]:
        # Inside the lock: the file as the last update left it, and no writer of it is running,
        # so a temporary of this file is one a killed update left (SIGKILL runs no cleanup).
        sweep_stale_temps(path.parent, locked=path.name)
        doc = self.load(results["dataset"]["id"], results["device"])
        old_text = None if doc is None else dumps_json(doc)
        if doc is None:
            doc = {"schema_version": BASELINE_SCHEMA_VERSION, "kind": BASELINE_KIND,
                   "dataset_id": results["dataset"]["id"], "device": results["device"],
                   "entries": {}}

        fingerprint = results["fingerprint"]
        sha = results["checkpoint"]["sha256"]
        changes = []
        entry = doc["entries"].get(fingerprint)
        if entry is None:
            changes.append(f"new fingerprint: {fingerprint} in {path}")
            entry = {"items": {}}
        elif entry["checkpoint_sha256"] != sha:
            changes.append(
                f"checkpoint changed {entry['checkpoint_sha256'][:12]} -> {sha[:12]} for "
                f"{fingerprint}: dropping its {len(entry['items'])} old items")
            entry = {"items": {}}
        entry.update(checkpoint_sha256=sha, recorded_utc=results["created_utc"],
                     commit=results["commit_info"].get("id"))

        for item in chosen:
            new = baseline_item(item, results)
            old = entry["items"].get(item["id"])
            changes += _describe_changes(item["id"], old, new)
            if old is not None:
                # A partial run (-k, -x) keeps what it did not measure.
                for key in ("accuracy", "size_bytes"):
                    if new[key] is None:
                        new[key] = old.get(key)
                new["latency"] = {**old["latency"], **new["latency"]}
                new["throughput"] = {**(old.get("throughput") or {}), **new["throughput"]}
            entry["items"][item["id"]] = new
        doc["entries"][fingerprint] = entry

        new_text = dumps_json(doc)
        if new_text != old_text:
            try:
                atomic_write_bytes(path, new_text.encode("utf-8"))
            except OSError as err:
                raise UserError(f"{path}: cannot write baseline ({err}); the previous "
                                "baseline is unchanged") from None
        return changes
