"""The tutorial's claims (claims.toml, beside this module) against our measurements.

Claims are data: every claimed number, its source and its hardware are read from claims.toml,
and the report labels them CLAIM, never mixing them with measurements. The rules that explain a
difference ("why our measurements differ") are functions below, chosen per claim by that file.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from compress.errors import UserError

from ..results import (
    REFERENCE_VARIANT,
    Field,
    check_fields,
    cv_warn,
    integer,
    list_of,
    number,
    obj,
    optional,
    shape_id,
    string,
)
from .frames import MB_BYTES, _ok_items, _present, is_noisy, items_frame, problems_frame
from .markdown import NA, _f, _md, _pp
from .rules import SAME_SIZE_FRACTION, SAME_SPEED_FRACTION, accuracy_budget

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib

CLAIMS_PATH = Path(__file__).with_name("claims.toml")
# Architecture facts used to explain the "fc-only" size rule: ResNet18's fc maps 512 pooled
# features to the classes, and an fp32 weight takes 4 bytes in the file.
RESNET18_FC_IN_FEATURES = 512
FP32_BYTES_PER_PARAM = 4

SIZE_RULES = ("dense-zeros", "fc-only")
_TEXT = string(min_len=1)
_CLAIM_FIELDS: dict[str, Field] = {
    "variant": _TEXT,
    "section": _TEXT,
    "hardware": _TEXT,
    "size_mb": number(min_value=0),
    "top1_pct": number(min_value=0, max_value=100),
    "latency_ms_per_image": number(min_value=0),
    "size_differs": optional(obj({
        "rule": string(choices=SIZE_RULES),
        "because": _TEXT,
        "min_fraction_of_fp32": optional(number(min_value=0, max_value=1)),
    })),
    "no_speedup": optional(obj({"because": _TEXT})),
}
_FIELDS: dict[str, Field] = {
    "source": _TEXT,
    "runtime": _TEXT,
    "input_size": list_of(integer(min_value=1), min_len=2, max_len=2),
    "comparable_gpu": _TEXT,
    "claims": list_of(obj(_CLAIM_FIELDS), min_len=1),
}
_FIX = "fix the claims file"


@dataclass(frozen=True)
class SizeExplanation:
    rule: str  # one of SIZE_RULES
    because: str
    min_fraction_of_fp32: float | None  # "fc-only" only


@dataclass(frozen=True)
class Claim:
    variant: str
    section: str
    hardware: str
    size_mb: float
    top1_pct: float
    latency_ms_per_image: float
    size_differs: SizeExplanation | None
    no_speedup_because: str | None


@dataclass(frozen=True)
class TutorialClaims:
    source: str
    runtime: str
    input_size: tuple[int, int]
    comparable_gpu: str
    claims: tuple[Claim, ...]

    @property
    def reference(self) -> Claim:
        return next(c for c in self.claims if c.variant == REFERENCE_VARIANT)

    @property
    def compared(self) -> list[Claim]:
        """The claims about compressed variants, each compared with the reference claim."""
        return [c for c in self.claims if c.variant != REFERENCE_VARIANT]

    @property
    def hardware(self) -> str:
        return self.claims[0].hardware  # the same for every claim (checked on load)


# --- loading --------------------------------------------------------------------------------

def _reject_unknown(table: dict, fields: dict[str, Field], path: str, source: str) -> None:
    """A misspelt key would silently drop a claim's number or explanation."""
    for key, value in table.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            raise UserError(f"{source}: unknown key {where} (known: {', '.join(fields)}); {_FIX}")
        spec = fields[key]
        if spec.kind == "dict" and isinstance(value, dict):
            _reject_unknown(value, spec.fields, where, source)
        elif spec.kind == "list" and isinstance(value, list) and spec.item is not None and spec.item.kind == "dict":
            for i, element in enumerate(value):
                if isinstance(element, dict):
                    _reject_unknown(element, spec.item.fields, f"{where}[{i}]", source)


def _parse(data: dict, source: str) -> TutorialClaims:
    _reject_unknown(data, _FIELDS, "", source)
    check_fields(data, _FIELDS, "", source, _FIX)
    claims = []
    for i, raw in enumerate(data["claims"]):
        where = f"claims[{i}]"
        for key in ("size_mb", "latency_ms_per_image"):
            if raw[key] <= 0:  # claimed ratios divide by these
                raise UserError(f"{source}: {where}.{key} must be > 0, got {raw[key]!r}; {_FIX}")
        size = raw.get("size_differs")
        if size is not None and (size["rule"] == "fc-only") != ("min_fraction_of_fp32" in size):
            raise UserError(f"{source}: {where}.size_differs.min_fraction_of_fp32 is required by rule "
                            f"\"fc-only\" and only by it; {_FIX}")
        claims.append(Claim(
            raw["variant"], raw["section"], raw["hardware"], float(raw["size_mb"]), float(raw["top1_pct"]),
            float(raw["latency_ms_per_image"]),
            None if size is None else SizeExplanation(size["rule"], size["because"], size.get("min_fraction_of_fp32")),
            (raw.get("no_speedup") or {}).get("because")))
    variants = [c.variant for c in claims]
    duplicates = sorted({v for v in variants if variants.count(v) > 1})
    if duplicates:
        raise UserError(f"{source}: more than one claim about {', '.join(duplicates)}; {_FIX}")
    if REFERENCE_VARIANT not in variants:
        raise UserError(f"{source}: no claim about {REFERENCE_VARIANT}: claimed changes are relative to it; {_FIX}")
    reference = claims[variants.index(REFERENCE_VARIANT)]
    if reference.size_differs is not None or reference.no_speedup_because is not None:
        raise UserError(f"{source}: the {REFERENCE_VARIANT} claim cannot have explanations: they compare a "
                        f"variant with {REFERENCE_VARIANT}; {_FIX}")
    for i, claim in enumerate(claims):
        if claim.hardware != claims[0].hardware:
            raise UserError(f"{source}: claims[{i}].hardware {claim.hardware!r} differs from claims[0]'s "
                            f"{claims[0].hardware!r}: claimed speedups compare latencies on one machine; {_FIX}")
    return TutorialClaims(data["source"], data["runtime"], tuple(data["input_size"]), data["comparable_gpu"],
                          tuple(claims))


def load_claims(path: str | os.PathLike = CLAIMS_PATH) -> TutorialClaims:
    """Read and validate a claims file; any problem is one UserError line naming the key."""
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"{source}: cannot read ({err.strerror or err}); reinstall resnet18-bench") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{source}: not valid TOML ({' '.join(str(err).split())}); {_FIX}") from None
    return _parse(data, source)


@functools.cache
def tutorial_claims() -> TutorialClaims:
    """The claims shipped with the package, read once."""
    return load_claims(CLAIMS_PATH)


# --- claims vs measurements -----------------------------------------------------------------

def _measured_item(results: dict, claims: TutorialClaims, variant: str) -> dict | None:
    """The run's item for ``variant`` on the runtime the tutorial used."""
    return next((it for it in _ok_items(results) if it["variant"] == variant and it["runtime"] == claims.runtime),
                None)


def _claims_latency_entry(item: dict | None, claims: TutorialClaims) -> dict | None:
    """Batch-1 latency at the tutorial's input size, else the largest measured size."""
    if not item:
        return None
    b1 = [lat for lat in item.get("latency") or [] if lat["batch_size"] == 1]
    for lat in b1:
        if tuple(lat["input_size"]) == claims.input_size:
            return lat
    return max(b1, key=lambda lat: lat["input_size"][0] * lat["input_size"][1], default=None)


def claims_frame(results_list: list[dict], labels: list[str]) -> pd.DataFrame:
    """Claimed rows (kind "CLAIM") beside measured rows of every run (kind "measured")."""
    claims = tutorial_claims()
    reference = claims.reference
    rows = []
    for claim in claims.claims:
        rows.append({"variant": claim.variant, "kind": "CLAIM", "source": claim.section,
                     "size_mb": claim.size_mb, "size_gzip_mb": None, "top1_pct": claim.top1_pct,
                     "delta_pp": claim.top1_pct - reference.top1_pct,
                     "latency_ms": claim.latency_ms_per_image, "latency_what": f"per image, {claim.hardware}",
                     "speedup": reference.latency_ms_per_image / claim.latency_ms_per_image, "reason": None})
        for results, label in zip(results_list, labels):
            item = _measured_item(results, claims, claim.variant)
            if item is None:
                reason = next((p.reason for p in problems_frame(results).itertuples()
                               if p.id.startswith(f"{claim.variant}-{claims.runtime}-")), None)
                rows.append({"variant": claim.variant, "kind": "measured", "source": label, "size_mb": None,
                             "size_gzip_mb": None, "top1_pct": None, "delta_pp": None, "latency_ms": None,
                             "latency_what": None, "speedup": None,
                             "reason": f"not measured: {reason}" if reason else "not measured in this run"})
                continue
            frame = items_frame(results).set_index("id")
            lat = _claims_latency_entry(item, claims)
            ratio = lat.get("ratio_to_reference") if lat else None
            rows.append({
                "variant": claim.variant, "kind": "measured", "source": label,
                "size_mb": frame.at[item["id"], "size_mb"], "size_gzip_mb": frame.at[item["id"], "size_gzip_mb"],
                "top1_pct": frame.at[item["id"], "top1_pct"], "delta_pp": frame.at[item["id"], "delta_pp"],
                "latency_ms": lat["p50_ms"] if lat else None,
                "latency_what": (f"batch-1 p50 at {shape_id(lat['input_size'])}, {claims.runtime}, {results['device']}"
                                 + (" (noisy)" if is_noisy(lat.get("cv"), cv_warn(results)) else "")
                                 if lat else None),
                "speedup": 1 / ratio if ratio else None, "reason": None})
    return pd.DataFrame(rows)


def _size_sentence(claim: Claim, reference: Claim, item: dict | None, fp32: dict) -> str | None:
    """Why the measured file is not the claimed size, by the claim's rule; None if it does not apply."""
    rule = claim.size_differs
    fp32_bytes = fp32.get("size_bytes")
    if rule is None or not item or not _present(item.get("size_bytes")) or not _present(fp32_bytes):
        return None
    head = (f"Size, {claim.variant} ({item['size_bytes'] / MB_BYTES:.2f} MB measured vs {claim.size_mb:g} MB "
            f"claimed): {rule.because}")
    if rule.rule == "dense-zeros":
        ratio, claimed_ratio = item["size_bytes"] / fp32_bytes, claim.size_mb / reference.size_mb
        if not abs(ratio - 1) <= SAME_SIZE_FRACTION < abs(claimed_ratio - 1):
            return None
        if _present(item.get("size_gzip_bytes")) and _present(fp32.get("size_gzip_bytes")):
            head += (f" (gzip size shows the sparsity: {item['size_gzip_bytes'] / MB_BYTES:.2f} MB vs "
                     f"{fp32['size_gzip_bytes'] / MB_BYTES:.2f} MB for fp32)")
        return head + "."
    # rule "fc-only"
    if not item["size_bytes"] > rule.min_fraction_of_fp32 * fp32_bytes:
        return None
    classes = len((fp32.get("accuracy") or {}).get("per_class") or {})
    fc_text = ""
    if classes:
        fc_params = RESNET18_FC_IN_FEATURES * classes + classes
        params_m = fp32_bytes / FP32_BYTES_PER_PARAM / 1e6
        fc_text = (f" ({fc_params:,} parameters of about {params_m:.1f} M, estimated from the fp32 file at "
                   f"{FP32_BYTES_PER_PARAM} bytes per weight)")
    return f"{head}{fc_text}, so the model cannot shrink to {claim.size_mb:g} MB this way."


def claim_explanations(results: dict, label: str, budget_pp: float | None = None) -> dict[str, str]:
    """topic -> one sentence per claim this run contradicts, chosen by rule from the numbers.

    Topics about the model (size, accuracy) are the same on every machine of a merge and are
    said once; topics about speed carry the machine label.
    """
    budget_pp = accuracy_budget(results)[0] if budget_pp is None else budget_pp
    claims = tutorial_claims()
    reference = claims.reference
    fp32 = _measured_item(results, claims, reference.variant)
    if fp32 is None:
        return {f"no-fp32:{label}": f"{label}: fp32 eager was not measured, so no claim can be checked."}
    measured = {c.variant: _measured_item(results, claims, c.variant) for c in claims.compared}
    out: dict[str, str] = {}
    for claim in claims.compared:
        sentence = _size_sentence(claim, reference, measured[claim.variant], fp32)
        if sentence is not None:
            out[f"size:{claim.variant}"] = sentence

    fp32_top1 = fp32["accuracy"]["top1"]
    deltas = {v: (it["accuracy"]["top1"] - fp32_top1) * 100 for v, it in measured.items() if it and it.get("accuracy")}
    claimed_deltas = {c.variant: c.top1_pct - reference.top1_pct for c in claims.compared}
    if abs(fp32_top1 * 100 - reference.top1_pct) > budget_pp:
        compare = "; ".join(f"{v} {_pp(claimed_deltas[v])} pp claimed, {_pp(d)} pp measured" for v, d in deltas.items())
        out["accuracy"] = (
            f"Accuracy: different data: the tutorial's {reference.top1_pct:.1f}% is its own model on its "
            f"own CIFAR-10 pipeline, while the reference model scores {fp32_top1 * 100:.2f}% on this test set "
            f"(`{results['dataset']['id']}`, {fp32['accuracy']['n']} images), so compare the change vs fp32, "
            f"not absolute values" + (f": {compare}." if compare else "."))
    for variant, ours in deltas.items():
        if ours < claimed_deltas[variant] - budget_pp:
            out[f"accuracy:{variant}"] = (
                f"Accuracy, {variant}: loses {-ours:.2f} pp here vs {-claimed_deltas[variant]:.2f} pp claimed, "
                f"beyond the {budget_pp:g} pp budget: check before shipping.")

    cv_limit = cv_warn(results)
    speedups = {}
    for variant, item in measured.items():
        lat = _claims_latency_entry(item, claims)
        if lat and lat.get("ratio_to_reference"):
            speedups[variant] = (1 / lat["ratio_to_reference"], is_noisy(lat.get("cv"), cv_limit))
    claimed = {c.variant: c for c in claims.compared}
    claimed_speedups = {v: reference.latency_ms_per_image / c.latency_ms_per_image for v, c in claimed.items()}
    gpu = (results.get("machine_info") or {}).get("gpu_name") or ""
    if speedups and claims.comparable_gpu not in gpu:
        compare = "; ".join(f"{v} {claimed_speedups[v]:.2f}x claimed, {s:.2f}x measured{' (noisy)' if noisy else ''}"
                            for v, (s, noisy) in speedups.items())
        out[f"latency:{label}"] = (
            f"Latency on {label}: the tutorial timed each image on an {claims.hardware}, so its "
            f"milliseconds are not comparable to these; compare speedups vs fp32 instead: {compare}.")
    for variant, (speedup, noisy) in speedups.items():
        because = claimed[variant].no_speedup_because
        # A noisy timing is no evidence either way: say nothing rather than explain noise.
        if because and not noisy and abs(speedup - 1) <= SAME_SPEED_FRACTION < claimed_speedups[variant] - 1:
            out[f"speed:{variant}:{label}"] = (
                f"Speed, {variant} on {label} ({speedup:.2f}x measured vs {claimed_speedups[variant]:.2f}x "
                f"claimed): {because}.")
    return out


def claims_section(results_list: list[dict], labels: list[str], level: int = 2) -> list[str]:
    h = "#" * level
    claims = tutorial_claims()
    df = claims_frame(results_list, labels)
    table = pd.DataFrame({
        "Variant": df["variant"],
        "Source": [("CLAIM: " if k == "CLAIM" else "measured: ") + s for k, s in zip(df["kind"], df["source"])],
        # Claims keep the tutorial's own precision (44.7 MB, 92.0%, 15 ms); ours show 2 decimals.
        "Size (MB)": [_f(s, ".2f" if k == "measured" else ".1f") + (f" (gzip {g:.2f})" if _present(g) else "")
                      for s, g, k in zip(df["size_mb"], df["size_gzip_mb"], df["kind"])],
        "Top-1 %": [_f(t, ".2f" if k == "measured" else ".1f") for t, k in zip(df["top1_pct"], df["kind"])],
        "Δ vs fp32 (pp)": [NA if v == REFERENCE_VARIANT else _pp(d) for v, d in zip(df["variant"], df["delta_pp"])],
        "Latency (ms)": [_f(x, ".2f" if k == "measured" else "g") for x, k in zip(df["latency_ms"], df["kind"])],
        "Speedup vs fp32": [NA if v == REFERENCE_VARIANT else _f(s, ".2f", "x")
                            for v, s in zip(df["variant"], df["speedup"])],
        "Latency measured as": [r if _present(r) else w for w, r in zip(df["latency_what"], df["reason"])],
    })
    lines = [f"{h} Tutorial claims vs our measurements", "",
             f"> **CLAIMS, not measurements**: rows marked CLAIM are figures quoted from the tutorial this project "
             f"started from ({claims.source}). Its latencies were measured on an {claims.hardware}, "
             f"so they are not comparable to CPU numbers. Measured rows are the {claims.runtime} runtime of each "
             "run above.", "", _md(table), "", f"{h}# Why our measurements differ", ""]
    sentences: dict[str, str] = {}
    for results, label in zip(results_list, labels):
        for topic, sentence in claim_explanations(results, label).items():
            sentences.setdefault(topic, sentence)  # a fact about the model is said once, not per machine
    lines += [f"- {s}" for s in sentences.values()] or ["No measurement contradicts a claim."]
    return lines + [""]
