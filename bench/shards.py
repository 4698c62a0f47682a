"""Join the results files of one sharded run (``pytest bench/ --shard K/N`` on N machines or CI
jobs) into the results document of the whole matrix, for the report, the merge and the gate.

Shards of one run share the dataset, checkpoint, device, machine fingerprint and N; each K
appears once. Every shard measured the fp32-eager reference: the combined document keeps the
one from shard 1 (each shard's other items were timed against its own, in the same process).
"""
from __future__ import annotations

from compress.errors import UserError

from .results import is_reference, validate_results


def shard_spec(results: dict) -> tuple[int, int] | None:
    shard = (results.get("options") or {}).get("shard")
    return (int(shard[0]), int(shard[1])) if shard else None


def combine_shards(shards: list[dict], sources: list[str] | None = None) -> dict:
    """One results document from the shards of one run (validated; UserError naming the problem)."""
    sources = sources or [f"shard file {i + 1}" for i in range(len(shards))]
    specs = [shard_spec(r) for r in shards]
    for spec, src in zip(specs, sources):
        if spec is None:
            raise UserError(f"{src} is not a shard (no options.shard): pass only files written with --shard K/N")
    counts = {n for _, n in specs}
    if len(counts) != 1:
        raise UserError(f"these files come from runs split into different shard counts ({sorted(counts)}): "
                        "combine the shards of one run")
    (n,) = counts
    ks = sorted(k for k, _ in specs)
    if ks != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(ks))
        dup = sorted({k for k in ks if ks.count(k) > 1})
        what = (f"shard {', '.join(map(str, missing))} of {n} missing" if missing else "") + \
               ("; " if missing and dup else "") + (f"shard {', '.join(map(str, dup))} given twice" if dup else "")
        raise UserError(f"cannot combine: {what}")
    first = shards[specs.index((1, n))]
    for r, src in zip(shards, sources):
        for key, label in ((("dataset", "id"), "dataset"), (("checkpoint", "sha256"), "checkpoint"),
                           (("device",), "device"), (("fingerprint",), "machine fingerprint")):
            a, b = first, r
            for k in key:
                a, b = a[k], b[k]
            if a != b:
                raise UserError(f"{src} has another {label} ({b}) than shard 1 ({a}): shards must come from one run")
    items, seen = [], set()
    skipped, findings = [], []
    for r in sorted(shards, key=lambda r: shard_spec(r)[0]):
        for it in r["items"]:
            if it["id"] in seen:
                if is_reference(it):
                    continue  # every shard measured the reference; shard 1's is kept
                raise UserError(f"item {it['id']} appears in two shards: the files are not shards of one run")
            seen.add(it["id"])
            items.append(it)
        skipped += [s for s in r.get("skipped") or [] if s["id"] not in {x["id"] for x in skipped}]
        for f in (r.get("gate") or {}).get("findings", []):
            if f not in findings:
                findings.append(f)
    combined = {**first, "items": items, "skipped": skipped,
                "options": {**first["options"], "shard": None, "combined_from_shards": n}}
    if any("gate" in r for r in shards):
        combined["gate"] = {**(first.get("gate") or {}), "findings": findings}
    return validate_results(combined, "combined shards")
