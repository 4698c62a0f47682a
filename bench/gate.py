"""The regression gate: compare one results document with the stored baseline.

Each check is a small function that returns a Finding, or None when it does not apply, in
the style of pytest-benchmark's compare: every finding is collected and all regressions are
reported together at the end, so one run shows everything that got worse.

Decision rules (thresholds from bench/config.py, per device and variant):

accuracy_stored   top-1 versus the baseline's stored count on the same eval set. Regression iff
                  it dropped by more than accuracy_tolerance_pp (same machine fingerprint) or
                  accuracy_tolerance_cross_machine_pp (baseline from another machine).
                  Deterministic runtimes reproduce counts exactly, so no statistics here.
accuracy_budget   top-1 versus fp32-eager in the same run on the same images. The drop must
                  exceed accuracy_budget_pp AND the exact McNemar test on the two per-image
                  masks must reject "same accuracy" at alpha. A drop over budget that McNemar
                  cannot tell from zero is "not significant" (shown, not failed): on a few
                  hundred images, 1 pp is a handful of images and could be a coin flip. Pairing
                  matters: only images where the two disagree carry information, which makes
                  this far stronger than comparing two accuracies with their own intervals.
                  The test is two-sided but only drops reach it, so the false-failure rate is
                  alpha/2 at most. Note what it does not prove: that the true drop exceeds the
                  budget (that would need a shifted test and far more images). E.g. on 360
                  images, 8 images lost and none gained (2.2 pp) fails; 7 (1.9 pp) is "not
                  significant" at alpha 0.01. Without masks the test cannot run and the drop
                  alone decides (fails safe).
latency_ratio     p50 / interleaved-reference p50, versus the same ratio in the baseline.
                  Regression iff it grew by more than ratio_tolerance. Machine load hits both
                  sides of the ratio, so this one works across machines; its threshold already
                  covers run-to-run spread, which a within-run test could not see.
latency_abs       only against a baseline from the same fingerprint. Regression iff the p50
                  is more than (1 + min_effect) times the baseline p50 AND Mann-Whitney
                  (current > baseline) gives p < alpha. Slower beyond the limit without
                  significance is "not significant"; within the limit or faster is "ok".
                  Fewer than min_samples on either side: "not significant", not judged.
latency_confirm   a slowdown too small for latency_ratio, confirmed within the run (the plugin
                  measured the shape again when its ratio stood more than confirm_suspect_sd
                  between-run sds above the same series' quiet history). "slower" iff the
                  prediction test (bench/stats.py) on the final ratio against the history gives
                  p < confirm_alpha and the ratio is at least 1 + confirm_min_change times the
                  history's: a warning unless the run asked --latency-confirm fail. Otherwise "ok"
                  (or "not significant" after a re-measurement), stating the smallest change one
                  run confirms at that noise (80% power): the power of the single-run check.
noisy             cv above cv_warn: a warning (verdict "noisy"), never a failure.
size              regression iff the deployable file grew by more than size_tolerance.
baseline          no stored item: "new"; stored item absent from the run: "missing". Whether
                  "new" fails, skips or records is the pytest plugin's decision.
status            a skipped item is "skipped"; an item that errored is a regression.

Units in findings: latency values in ms (ratios for latency_ratio), sizes in bytes, accuracy
in percent; ``limit`` is a factor for latency and size, percentage points for accuracy.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from .baselines import BaselineStore
from .config import GateConfig
from .results import VERDICT_ORDER, emulation, fmt_ms, in_shard, is_reference, item_label, shape_key
from .stats import mann_whitney_p, mcnemar_p, unpack_bits

# Counts are compared as pp of n; this keeps 1/3 * 3 style float error from flipping a verdict.
_EPS_PP = 1e-9


@dataclass
class Finding:
    id: str
    check: str
    shape: str | None
    verdict: str
    message: str
    value: float | None = None
    baseline: float | None = None
    limit: float | None = None
    p_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("value", "baseline", "limit", "p_value"):
            if d[key] is not None:
                d[key] = float(d[key])  # numpy scalars would survive json but not equality
        return d


def _speed(factor: float) -> str:
    """1.23 -> "1.23x slower", 0.8 -> "1.25x faster"."""
    if round(factor, 2) == 1.0:
        return "same speed (1.00x)"
    if factor <= 0:
        return "faster (measured as zero time: check the timer)"
    return f"{factor:.2f}x slower" if factor > 1 else f"{1 / factor:.2f}x faster"


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


# --- accuracy -----------------------------------------------------------------------------

def check_accuracy_stored(item: dict, base_item: dict, same_machine: bool,
                          cfg: GateConfig) -> Finding | None:
    acc, base = item.get("accuracy"), base_item.get("accuracy")
    if acc is None or base is None:
        return None
    label = item_label(item)
    if base["n"] != acc["n"]:
        return Finding(item["id"], "accuracy_stored", None, "new",
                       f"{label} accuracy: eval set has {acc['n']} images, baseline "
                       f"{base['n']}; not comparable, re-record the baseline")
    tol_pp = cfg.accuracy_tolerance_pp if same_machine else cfg.accuracy_tolerance_cross_machine_pp
    delta_pp = (acc["correct"] - base["correct"]) / acc["n"] * 100 if acc["n"] else 0.0
    now_pct = acc["correct"] / max(acc["n"], 1) * 100
    base_pct = base["correct"] / max(base["n"], 1) * 100
    where = "this machine" if same_machine else "another machine"
    head = (f"{label} accuracy top1 {now_pct:.2f}% vs {base_pct:.2f}% stored ({where}): "
            f"{delta_pp:+.2f} pp")
    if -delta_pp > tol_pp + _EPS_PP:
        verdict, message = "regression", f"{head} (limit -{tol_pp:.2f} pp)"
    elif delta_pp > tol_pp + _EPS_PP:
        verdict, message = "ok", f"{head}, improved; re-record the baseline to keep it"
    else:
        verdict, message = "ok", f"{head}, within {tol_pp:.2f} pp"
    return Finding(item["id"], "accuracy_stored", None, verdict, message,
                   value=now_pct, baseline=base_pct, limit=tol_pp)


def find_reference(item: dict, results: dict) -> dict | None:
    """The fp32-eager item measured on the same device in the same run, if it succeeded."""
    for other in results["items"]:
        if is_reference(other) and other["device"] == item["device"] and other["status"] == "ok":
            return other
    return None


def check_accuracy_budget(item: dict, reference: dict | None, cfg: GateConfig) -> Finding | None:
    if reference is not None and reference["id"] == item["id"]:
        return None
    if item.get("accuracy") is None:
        return None  # not measured in this run (deselected, or the item stopped before it)
    label = item_label(item)
    if reference is None or reference.get("accuracy") is None:
        return Finding(item["id"], "accuracy_budget", None, "skipped",
                       f"{label} accuracy budget: no fp32-eager result on {item['device']} in "
                       "this run to compare against")
    acc, ref = item["accuracy"], reference["accuracy"]
    if acc["n"] != ref["n"] or acc["n"] == 0:
        return Finding(item["id"], "accuracy_budget", None, "skipped",
                       f"{label} accuracy budget: evaluated on {acc['n']} images, fp32-eager on "
                       f"{ref['n']}; not the same images")
    drop_pp = (ref["correct"] - acc["correct"]) / acc["n"] * 100
    budget = cfg.accuracy_budget_pp
    head = (f"{label} accuracy top1 {acc['correct'] / acc['n']:.2%} vs fp32-eager "
            f"{ref['correct'] / ref['n']:.2%}: drop {drop_pp:.2f} pp")

    def finding(verdict: str, message: str, p: float | None = None) -> Finding:
        return Finding(item["id"], "accuracy_budget", None, verdict, message,
                       value=-drop_pp, baseline=0.0, limit=budget, p_value=p)

    if drop_pp <= budget + _EPS_PP:
        return finding("ok", f"{head}, within budget {budget:.2f} pp")
    if acc.get("correct_b64") is None or ref.get("correct_b64") is None:
        return finding("regression", f"{head} > budget {budget:.2f} pp (no per-image masks, "
                                     "so no significance test)")
    p = mcnemar_p(unpack_bits(ref["correct_b64"], ref["n"]),
                  unpack_bits(acc["correct_b64"], acc["n"]))
    if p < cfg.alpha:
        return finding("regression", f"{head} > budget {budget:.2f} pp (McNemar {_fmt_p(p)})", p)
    return finding("not significant",
                   f"{head} > budget {budget:.2f} pp but not significant (McNemar {_fmt_p(p)}, "
                   f"alpha {cfg.alpha:g}); evaluate on more images to decide", p)


# --- latency --------------------------------------------------------------------------------

def check_latency_ratio(item: dict, lat: dict, base_lat: dict, cfg: GateConfig) -> Finding | None:
    ratio, ref_id = lat.get("ratio_to_reference"), lat.get("reference_id")
    if ratio is None or ref_id is None or ref_id == item["id"]:
        return None  # no reference, or this is the reference (its ratio is 1 by definition)
    shape = shape_key(lat)
    head = f"{item_label(item)} latency {shape} ratio to {ref_id}"
    base_ratio = base_lat.get("ratio_to_reference")
    if base_ratio is None or base_ratio <= 0 or base_lat.get("reference_id") != ref_id:
        return Finding(item["id"], "latency_ratio", shape, "new",
                       f"{head}: baseline has no ratio to this reference; re-record the baseline")
    ref_samples = lat.get("reference_samples_ms") or lat["samples_ms"]
    n_samples = min(len(lat["samples_ms"]), len(ref_samples))
    if n_samples < cfg.min_samples:
        return Finding(item["id"], "latency_ratio", shape, "not significant",
                       f"{head}: too few samples (< min_samples {cfg.min_samples}) to judge",
                       value=ratio, baseline=base_ratio)
    factor = ratio / base_ratio
    noisy = max(lat.get("cv") or 0.0, lat.get("reference_cv") or 0.0) > cfg.cv_warn
    limit = 1 + (max(cfg.ratio_tolerance, cfg.noisy_ratio_tolerance) if noisy else cfg.ratio_tolerance)
    text = f"{head} {ratio:.3f} vs {base_ratio:.3f}: {_speed(factor)} relative to the reference"
    verdict = "regression" if factor > limit else "ok"
    widened = " for noisy samples" if noisy and limit > 1 + cfg.ratio_tolerance else ""
    suffix = f" (limit {limit:.2f}x{widened})" if verdict == "regression" else f", within {limit:.2f}x{widened}"
    return Finding(item["id"], "latency_ratio", shape, verdict, text + suffix,
                   value=ratio, baseline=base_ratio, limit=limit)


def check_latency_abs(item: dict, lat: dict, base_lat: dict, cfg: GateConfig) -> Finding | None:
    shape = shape_key(lat)
    now, base = lat["p50_ms"], base_lat["p50_ms"]
    limit = 1 + cfg.min_effect
    head = f"{item_label(item)} latency {shape} p50 {fmt_ms(now)} ms vs {fmt_ms(base)} ms"

    def finding(verdict: str, message: str, p: float | None = None) -> Finding:
        return Finding(item["id"], "latency_abs", shape, verdict, message,
                       value=now, baseline=base, limit=limit, p_value=p)

    n_now, n_base = len(lat["samples_ms"]), len(base_lat["samples_ms"])
    if min(n_now, n_base) < cfg.min_samples:
        return finding("not significant", f"{head}: too few samples ({n_now} vs {n_base}, "
                                          f"min_samples {cfg.min_samples}) to judge")
    if base <= 0:
        return finding("new", f"{head}: baseline p50 is zero; re-record the baseline")
    factor = now / base
    if factor <= limit:
        suffix = "" if factor < 1 else f", within {limit:.2f}x"
        return finding("ok", f"{head}: {_speed(factor)}{suffix}")
    p = mann_whitney_p(lat["samples_ms"], base_lat["samples_ms"], alternative="greater")
    if p < cfg.alpha:
        return finding("regression",
                       f"{head}: {_speed(factor)} ({_fmt_p(p)}, limit {limit:.2f}x)", p)
    return finding("not significant", f"{head}: {_speed(factor)} but not significant "
                                      f"({_fmt_p(p)}, alpha {cfg.alpha:g})", p)


def check_latency_confirm(item: dict, lat: dict, cfg: GateConfig) -> Finding | None:
    from .history import RatioHistory

    conf, ratio = lat.get("confirmation"), lat.get("ratio_to_reference")
    if not conf or not ratio or ratio <= 0:
        return None
    hist = RatioHistory.from_confirmation(conf)
    shape = shape_key(lat)
    factor, p = ratio / hist.center, hist.p_value(ratio)
    power = (f"one run confirms {hist.detectable_change(cfg.confirm_alpha):.0%} or more here "
             f"(80% power, between-run sd {hist.sd_log:.1%})")
    head = (f"{item_label(item)} latency {shape} ratio {ratio:.3f} vs {hist.center:.3f} over its "
            f"last {hist.n_runs} runs: {_speed(factor)}")
    again = (f", measured again with {conf['rounds_factor']}x the rounds (first read {conf['first_ratio']:.3f})"
             if conf["remeasured"] and conf.get("first_ratio") is not None else "")

    def finding(verdict: str, message: str) -> Finding:
        return Finding(item["id"], "latency_confirm", shape, verdict, message, value=ratio,
                       baseline=hist.center, limit=1 + cfg.confirm_min_change, p_value=p)

    if p < cfg.confirm_alpha and factor >= 1 + cfg.confirm_min_change:
        return finding("slower", f"{head} ({_fmt_p(p)}){again}; {power}")
    if conf["remeasured"]:
        return finding("not significant", f"{head}{again}, not confirmed ({_fmt_p(p)}, alpha "
                                          f"{cfg.confirm_alpha:g}, at least {1 + cfg.confirm_min_change:.2f}x); {power}")
    return finding("ok", f"{head}; {power}")


def check_noisy(item: dict, lat: dict, cfg: GateConfig) -> Finding | None:
    if lat["cv"] <= cfg.cv_warn:
        return None
    shape = shape_key(lat)
    return Finding(item["id"], "noisy", shape, "noisy",
                   f"{item_label(item)} latency {shape} cv {lat['cv']:.1%} > {cfg.cv_warn:.0%}: "
                   "noisy measurement; stop other load, pin threads or take more rounds",
                   value=lat["cv"], limit=cfg.cv_warn)


# --- size -----------------------------------------------------------------------------------

def check_size(item: dict, base_item: dict, cfg: GateConfig) -> Finding | None:
    now, base = item.get("size_bytes"), base_item.get("size_bytes")
    if now is None or base is None or base <= 0:
        return None
    limit = 1 + cfg.size_tolerance
    growth = now / base - 1
    head = f"{item_label(item)} size {now / 1e6:.2f} MB vs {base / 1e6:.2f} MB: {growth:+.1%}"
    verdict = "regression" if now > base * limit else "ok"
    suffix = f" (limit +{cfg.size_tolerance:.1%})" if verdict == "regression" else ""
    return Finding(item["id"], "size", None, verdict, head + suffix,
                   value=now, baseline=base, limit=limit)


# --- putting it together -----------------------------------------------------------------------

def check_item(item: dict, results: dict, baseline_entry: dict | None, other_entry: dict | None,
               config: GateConfig, why_missing: str | None = None) -> list[Finding]:
    """All findings for one results item.

    ``baseline_entry``: the stored entry for this run's fingerprint; ``other_entry``: one from
    another fingerprint (used for everything except absolute latency). ``why_missing`` is
    appended to "new" messages (e.g. the stored entry had another checkpoint).
    """
    label = item_label(item)
    if item["status"] == "skipped":
        return [Finding(item["id"], "status", None, "skipped",
                        f"{label} skipped: {item.get('reason')}")]
    if item["status"] == "error":
        return [Finding(item["id"], "status", None, "regression",
                        f"{label} failed: {item.get('reason')}")]

    cfg = config.for_item(item)
    same_item = (baseline_entry or {}).get("items", {}).get(item["id"])
    other_item = (other_entry or {}).get("items", {}).get(item["id"])
    base_item = same_item or other_item
    findings: list[Finding | None] = [
        check_accuracy_budget(item, find_reference(item, results), cfg)]

    if base_item is None:
        where = "this machine or any other" if baseline_entry is None else "this machine"
        findings.append(Finding(item["id"], "baseline", None, "new",
                                f"{label}: no baseline for {where} yet"
                                + (f" ({why_missing})" if why_missing else "")))
    else:
        findings.append(check_accuracy_stored(item, base_item, same_item is not None, cfg))
        findings.append(check_size(item, base_item, cfg))

    emulated = emulation(results)
    for lat in item.get("latency") or []:
        shape = shape_key(lat)
        if emulated:
            findings.append(Finding(item["id"], "latency_ratio", shape, "skipped",
                                    f"{label} latency {shape}: measured under emulation ({emulated}), "
                                    "never compared with baselines"))
            continue
        lcfg = cfg.for_shape(lat["input_size"])
        findings.append(check_noisy(item, lat, lcfg))
        findings.append(check_latency_confirm(item, lat, lcfg))  # against the history, not the baseline
        if base_item is None:
            continue
        same_lat = same_item["latency"].get(shape) if same_item else None
        other_lat = other_item["latency"].get(shape) if other_item else None
        ratio_base = same_lat or other_lat
        if ratio_base is not None:
            findings.append(check_latency_ratio(item, lat, ratio_base, lcfg))
        if same_lat is not None:
            findings.append(check_latency_abs(item, lat, same_lat, lcfg))
        elif ratio_base is None or same_item is not None:
            findings.append(Finding(item["id"], "baseline", shape, "new",
                                    f"{label} latency {shape}: no baseline for this shape on "
                                    f"{'this machine' if same_item else 'any machine'} yet"))
    return [f for f in findings if f is not None]


def run_gate(results: dict, store: BaselineStore, config: GateConfig) -> dict:
    """The "gate" block of the results schema for ``results`` against ``store``."""
    same, other, notes = store.lookup_with_notes(results)
    # Notes explain unusable entries; they only matter to items that end up without a baseline.
    why = "; ".join(notes) if notes and same is None else None
    findings: list[Finding] = []
    for item in results["items"]:
        findings += check_item(item, results, same, other, config, why_missing=why)

    compared = same or other
    if compared is not None:
        present = {item["id"] for item in results["items"]}
        present |= {s["id"] for s in results.get("skipped") or []}
        shard = (results.get("options") or {}).get("shard")
        expected = {i for i, it in compared["items"].items() if in_shard((it["variant"], it["runtime"]), shard)}
        for item_id in sorted(expected - present):
            findings.append(Finding(item_id, "baseline", None, "missing",
                                    f"{item_id} is in the baseline ({compared['fingerprint']}) but "
                                    "not in this run"))
    return {
        "baseline_file": str(store.path_for_results(results)),
        "fingerprint_match": same is not None,
        # Which stored entry the run was compared with and under which rule (FINGERPRINT_RULES).
        "baseline_fingerprint": compared["fingerprint"] if compared is not None else None,
        "fingerprint_rule": compared["rule"] if compared is not None else None,
        # The default budget, so the report can say what "within budget" meant without
        # reading pyproject; per-variant budgets are each accuracy_budget finding's limit.
        "accuracy_budget_pp": config.accuracy_budget_pp,
        "cv_warn": config.cv_warn,
        "confirm_alpha": config.confirm_alpha,
        "config_source": config.source,
        "findings": [f.to_dict() for f in findings],
    }


def _as_dict(finding: Finding | dict) -> dict:
    return finding.to_dict() if isinstance(finding, Finding) else finding


def format_summary(findings: Iterable[Finding | dict]) -> str:
    """Every regression on its own line, then one line of counts per verdict."""
    found = [_as_dict(f) for f in findings]
    lines = [f["message"] for f in found if f["verdict"] == "regression"]
    lines += [f"confirmed slower than its history: {f['message']}" for f in found if f["verdict"] == "slower"]
    counts = Counter(f["verdict"] for f in found)
    tally = ", ".join(f"{counts[v]} {v}" for v in VERDICT_ORDER if counts[v])
    n_reg = counts["regression"]
    if n_reg:
        lines.append(f"{n_reg} regression{'s' if n_reg != 1 else ''} ({tally})")
    else:
        lines.append(f"no regressions ({tally or 'nothing checked'})")
    return "\n".join(lines)
