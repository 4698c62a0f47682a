"""The data step: a results document -> pandas frames with numeric columns (no formatting).

Row order everywhere: fp32 first, then variants in the order the run produced them; runtimes
in options.runtimes order. One row per (variant, runtime) item, never "best runtime per
variant" unless a frame says so: which runtime is best depends on the input size, and hiding a
runtime hides the gate's view of it.
"""
from __future__ import annotations

import math

import pandas as pd

from compress.errors import UserError

from ..results import (
    NOISY_RATIO_SPREAD,
    QUIET_RATIO_SPREAD,
    REFERENCE_VARIANT,
    VERDICT_ORDER,
    cv_warn,
    is_reference,
    shape_id,
    shape_key,
)
from ..stats import quantile_upper_bound

MB_BYTES = 1_000_000  # reports say MB = 10^6 bytes, as file managers on Linux/macOS do


# --- small helpers -------------------------------------------------------------------------

def _present(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def is_noisy(cv, cv_limit: float) -> bool:
    """The gate's rule: a series whose cv is above the run's cv_warn is noisy."""
    return _present(cv) and cv > cv_limit


def _ok_items(results: dict) -> list[dict]:
    return [it for it in results.get("items", []) if it.get("status") == "ok"]


def _reference_item(results: dict) -> dict | None:
    return next((it for it in _ok_items(results) if is_reference(it)), None)


def _variant_order(variants) -> list[str]:
    seen = list(dict.fromkeys(variants))
    return sorted(seen, key=lambda v: (v != REFERENCE_VARIANT, seen.index(v)))


def _runtime_order(results: dict, runtimes) -> list[str]:
    preferred = list(results.get("options", {}).get("runtimes") or [])
    seen = list(dict.fromkeys(runtimes))
    return sorted(seen, key=lambda r: (preferred.index(r) if r in preferred else len(preferred), seen.index(r)))


def input_sizes(results: dict) -> list[str]:
    """Input sizes with latency data, native first, then in the order the run used them."""
    sizes = [shape_id(s) for s in results.get("options", {}).get("input_sizes") or []]
    for it in _ok_items(results):
        sizes += [shape_id(lat["input_size"]) for lat in it.get("latency") or []]
    sizes = list(dict.fromkeys(sizes))
    native = native_size(results)
    return sorted(sizes, key=lambda s: s != native)


def native_size(results: dict) -> str:
    return shape_id(results["dataset"]["input_size"])


def size_title(results: dict, size: str) -> str:
    return f"{size} (native)" if size == native_size(results) else f"{size} (deployment)"


def _check_shape(results: dict) -> None:
    """render/merge take dicts from code too; fail with a sentence, not a KeyError."""
    if not isinstance(results, dict):
        raise UserError("results must be a dict loaded from a results JSON file")
    for key in ("dataset", "device", "items", "checkpoint"):
        if key not in results:
            raise UserError(f"results has no {key!r}: pass a results JSON written by `pytest bench/`")


def _ci95(acc: dict) -> tuple[float, float]:
    if acc.get("ci95"):
        return tuple(acc["ci95"])
    from bench.stats import wilson_interval  # lazy: keeps this module light to import

    return wilson_interval(acc["correct"], acc["n"])


# --- results -> DataFrames -----------------------------------------------------------------

def items_frame(results: dict) -> pd.DataFrame:
    """One row per "ok" item: size, accuracy and the change vs fp32-eager of the same run."""
    ref = _reference_item(results)
    ref_top1 = ref["accuracy"]["top1"] if ref and ref.get("accuracy") else None
    rows = []
    for it in _ok_items(results):
        acc = it.get("accuracy") or {}
        top1 = acc.get("top1")
        lo, hi = _ci95(acc) if top1 is not None else (None, None)
        gzip_bytes = it.get("size_gzip_bytes")
        rows.append({
            "id": it["id"], "variant": it["variant"], "runtime": it["runtime"],
            "size_bytes": it.get("size_bytes"),
            "size_mb": it["size_bytes"] / MB_BYTES if _present(it.get("size_bytes")) else None,
            "size_gzip_mb": gzip_bytes / MB_BYTES if _present(gzip_bytes) else None,
            "top1_pct": top1 * 100 if top1 is not None else None,
            "ci_lo_pct": lo * 100 if lo is not None else None,
            "ci_hi_pct": hi * 100 if hi is not None else None,
            "n": acc.get("n"),
            "agreement_pct": acc["agreement_with_fp32"] * 100 if _present(acc.get("agreement_with_fp32")) else None,
            "delta_pp": (top1 - ref_top1) * 100 if top1 is not None and ref_top1 is not None else None,
            # MLPerf states accuracy targets this way ("99% of fp32"), beside the drop in points
            "pct_of_fp32": top1 / ref_top1 * 100 if top1 is not None and ref_top1 else None,
        })
    cols = ["id", "variant", "runtime", "size_bytes", "size_mb", "size_gzip_mb", "top1_pct", "ci_lo_pct",
            "ci_hi_pct", "n", "agreement_pct", "delta_pp", "pct_of_fp32"]
    return _ordered(results, pd.DataFrame(rows, columns=cols))


def latency_frame(results: dict) -> pd.DataFrame:
    """One row per (item, input size, batch size); speedup = 1 / ratio_to_reference; "noisy"
    by the cv_warn the run's gate used."""
    cv_limit = cv_warn(results)
    rows = []
    for it in _ok_items(results):
        for lat in it.get("latency") or []:
            ratio = lat.get("ratio_to_reference")
            rows.append({
                "id": it["id"], "variant": it["variant"], "runtime": it["runtime"],
                "input_size": shape_id(lat["input_size"]), "batch_size": lat["batch_size"],
                "p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "p99_ms": lat.get("p99_ms"),
                # MLPerf-style: the p90 that holds with 99% confidence (None below 44 samples)
                "p90_bound_ms": quantile_upper_bound(lat["samples_ms"]) if lat.get("samples_ms") else None,
                "mean_ms": lat.get("mean_ms"), "stdev_ms": lat.get("stdev_ms"), "cv": lat.get("cv"),
                "ratio_to_reference": ratio, "speedup": 1 / ratio if ratio else None,
                "reference_id": lat.get("reference_id"),
                "noisy": is_noisy(lat.get("cv"), cv_limit),
                "samples_ms": list(lat.get("samples_ms") or []),
                "reference_samples_ms": list(lat.get("reference_samples_ms") or []),
            })
    cols = ["id", "variant", "runtime", "input_size", "batch_size", "p50_ms", "p90_ms", "p90_bound_ms", "p99_ms", "mean_ms",
            "stdev_ms", "cv", "ratio_to_reference", "speedup", "reference_id", "noisy", "samples_ms",
            "reference_samples_ms"]
    return _ordered(results, pd.DataFrame(rows, columns=cols))


def throughput_frame(results: dict) -> pd.DataFrame:
    rows = [{"id": it["id"], "variant": it["variant"], "runtime": it["runtime"],
             "input_size": shape_id(tp["input_size"]), "batch_size": tp["batch_size"], "img_s": tp["img_s"]}
            for it in _ok_items(results) for tp in it.get("throughput") or []]
    cols = ["id", "variant", "runtime", "input_size", "batch_size", "img_s"]
    return _ordered(results, pd.DataFrame(rows, columns=cols))


def _ordered(results: dict, df: pd.DataFrame) -> pd.DataFrame:
    """Stable row order: fp32 first, variants as produced, runtimes as in options."""
    if df.empty:
        return df
    v_rank = {v: i for i, v in enumerate(_variant_order(df["variant"]))}
    r_rank = {r: i for i, r in enumerate(_runtime_order(results, df["runtime"]))}
    df = df.assign(_v=df["variant"].map(v_rank), _r=df["runtime"].map(r_rank), _i=range(len(df)))
    return df.sort_values(["_v", "_r", "_i"], kind="stable").drop(columns=["_v", "_r", "_i"]).reset_index(drop=True)


def problems_frame(results: dict) -> pd.DataFrame:
    """Skipped and errored items with their reasons: nothing is dropped silently."""
    rows = [{"id": it["id"], "status": it.get("status"), "reason": it.get("reason")}
            for it in results.get("items", []) if it.get("status") != "ok"]
    listed = {r["id"] for r in rows}
    rows += [{"id": s["id"], "status": "skipped", "reason": s.get("reason")}
             for s in results.get("skipped") or [] if s["id"] not in listed]
    return pd.DataFrame(rows, columns=["id", "status", "reason"])


def remeasured_frame(results: dict) -> pd.DataFrame:
    """One row per discarded latency attempt (``--latency-retries``): the figure the gate found
    regressed, why, and the figure kept in its place."""
    rows = [{"id": it["id"], "input_size": shape_id(lat["input_size"]), "attempt": k + 1,
             "p50_ms": old["p50_ms"], "ratio_to_reference": old.get("ratio_to_reference"),
             "reference_p50_ms": old.get("reference_p50_ms"), "why": old["why"],
             "kept_p50_ms": lat["p50_ms"], "kept_ratio_to_reference": lat.get("ratio_to_reference")}
            for it in _ok_items(results) for lat in it.get("latency") or []
            for k, old in enumerate(lat.get("discarded_attempts") or [])]
    cols = ["id", "input_size", "attempt", "p50_ms", "ratio_to_reference", "reference_p50_ms", "why",
            "kept_p50_ms", "kept_ratio_to_reference"]
    return pd.DataFrame(rows, columns=cols)


def confirm_frame(results: dict) -> pd.DataFrame:
    """One row per latency shape compared with its history (``--latency-confirm``): the history's
    ratio and spread, this run's ratio, the smallest change one run confirms at that spread
    (at the gate's confirm_alpha, 80% power), whether it was measured again, and the verdict."""
    from ..config import GateConfig
    from ..history import RatioHistory

    alpha = (results.get("gate") or {}).get("confirm_alpha", GateConfig.confirm_alpha)
    verdicts = {(f.get("id"), f.get("shape")): f.get("verdict")
                for f in (results.get("gate") or {}).get("findings") or [] if f.get("check") == "latency_confirm"}
    rows = []
    for it in _ok_items(results):
        for lat in it.get("latency") or []:
            conf, ratio = lat.get("confirmation"), lat.get("ratio_to_reference")
            if not conf or not _present(ratio) or ratio <= 0:
                continue
            hist = RatioHistory.from_confirmation(conf)
            shape = shape_key(lat)
            rows.append({"id": it["id"], "input_size": shape_id(lat["input_size"]), "history_runs": hist.n_runs,
                         "history_ratio": hist.center, "history_sd": hist.sd_log, "ratio_to_reference": ratio,
                         "factor": ratio / hist.center, "detectable_change": hist.detectable_change(alpha),
                         "remeasured": bool(conf["remeasured"]), "verdict": verdicts.get((it["id"], shape))})
    cols = ["id", "input_size", "history_runs", "history_ratio", "history_sd", "ratio_to_reference", "factor",
            "detectable_change", "remeasured", "verdict"]
    return pd.DataFrame(rows, columns=cols)


def noisy_frame(results: dict) -> pd.DataFrame:
    """The latency rows with cv above the run's cv_warn."""
    lat = latency_frame(results)
    return lat[lat["noisy"].astype(bool)].reset_index(drop=True)


def _slower_by(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """(point, low, high): how much slower latency row ``b`` is than row ``a``, each divided by the
    fp32-eager reference it was interleaved with (stats.ratio_of_ratios). The reference item has
    no separate reference samples: it is its own."""
    from ..stats import ratio_of_ratios

    return ratio_of_ratios(a["samples_ms"], a["reference_samples_ms"] or a["samples_ms"],
                           b["samples_ms"], b["reference_samples_ms"] or b["samples_ms"])


def best_runtime_frame(results: dict, input_size: str) -> pd.DataFrame:
    """Per variant, its fastest runtime at batch 1 and ``input_size``, against the fastest fp32
    runtime of the same run (the bar a compressed model has to beat, not fp32 eager).

    Items are timed one after the other, so their raw medians also differ by the machine's drift;
    where every row has its ratio to the interleaved fp32-eager reference, "fastest" and the
    speedup come from those ratios (the ratio of the two in-run ratios, with a bootstrap 95%
    interval), as the frontier search ranks candidates. Otherwise raw medians, and the frame says so."""
    lat = latency_frame(results)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == input_size)]
    fp32 = b1[b1["variant"] == REFERENCE_VARIANT]
    if b1.empty or fp32.empty:
        return pd.DataFrame()
    by_ratio = bool(b1["ratio_to_reference"].notna().all()) and all(len(s) for s in b1["samples_ms"])
    key = "ratio_to_reference" if by_ratio else "p50_ms"
    bar = fp32.sort_values(key).iloc[0]
    items = items_frame(results).set_index("id")
    rows = []
    for variant in _variant_order(b1["variant"]):
        best = b1[b1["variant"] == variant].sort_values(key).iloc[0]
        it = items.loc[best["id"]] if best["id"] in items.index else None
        if best["id"] == bar["id"]:
            point, lo, hi = 1.0, None, None  # the bar itself
        elif by_ratio:
            point, lo, hi = _slower_by(best, bar)
        else:
            point, lo, hi = bar["p50_ms"] / best["p50_ms"], None, None
        rows.append({"variant": variant, "runtime": best["runtime"], "p50_ms": best["p50_ms"],
                     "speedup_vs_fastest_fp32": point, "speedup_lo": lo, "speedup_hi": hi,
                     "size_mb": None if it is None else it["size_mb"],
                     "smaller_than_fp32": None, "delta_pp": None if it is None else it["delta_pp"],
                     "noisy": bool(best["noisy"])})
    df = pd.DataFrame(rows)
    fp32_size = items[items["variant"] == REFERENCE_VARIANT]["size_mb"].max()
    if _present(fp32_size):
        df["smaller_than_fp32"] = fp32_size / df["size_mb"]
    df.attrs["bar"] = f"fp32 on {bar['runtime']}, {bar['p50_ms']:.2f} ms"
    df.attrs["by_ratio"] = by_ratio
    return df


def runtime_wins_frame(results: dict, input_size: str) -> pd.DataFrame:
    """Per variant measured on two runtimes or more at batch 1 and ``input_size``: the winner, the
    runner-up and the margin between them, from each item's ratio to the fp32-eager reference it
    was interleaved with (machine drift between the two items cancels), with a bootstrap 95%
    interval. ``clear`` only when the interval excludes a tie and the margin is beyond the
    between-run spread of such ratios (QUIET_RATIO_SPREAD, or NOISY_RATIO_SPREAD if either
    series is noisy)."""
    lat = latency_frame(results)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == input_size)]
    rows = []
    for variant in _variant_order(b1["variant"]):
        mine = b1[b1["variant"] == variant].sort_values("ratio_to_reference")
        if len(mine) < 2 or mine["ratio_to_reference"].isna().any():
            continue
        win, second = mine.iloc[0], mine.iloc[1]
        point, lo, hi = _slower_by(win, second)
        noisy = bool(win["noisy"]) or bool(second["noisy"])
        floor = 1 + (NOISY_RATIO_SPREAD if noisy else QUIET_RATIO_SPREAD)
        rows.append({"variant": variant, "winner": win["runtime"], "winner_p50_ms": win["p50_ms"],
                     "runner_up": second["runtime"], "runner_up_p50_ms": second["p50_ms"],
                     "margin": point, "margin_lo": lo, "margin_hi": hi, "noise_floor": floor,
                     "verdict": "clear" if lo > 1 and point > floor else "inside the noise"})
    return pd.DataFrame(rows)


def runtime_frames(results: dict) -> dict[str, pd.DataFrame]:
    """runtime -> one row per variant with every measured shape (batch sizes included)."""
    items = items_frame(results)
    lat = latency_frame(results)
    tput = throughput_frame(results)
    frames = {}
    for runtime in _runtime_order(results, items["runtime"]):
        df = items[items["runtime"] == runtime][["id", "variant", "size_mb", "top1_pct", "agreement_pct"]].copy()
        mine = lat[lat["runtime"] == runtime]
        for (size, batch), grp in mine.groupby(["input_size", "batch_size"], sort=False):
            df[f"p50_ms@{size}/b{batch}"] = df["id"].map(grp.set_index("id")["p50_ms"])
        mine_t = tput[tput["runtime"] == runtime]
        for (size, batch), grp in mine_t.groupby(["input_size", "batch_size"], sort=False):
            df[f"img_s@{size}/b{batch}"] = df["id"].map(grp.set_index("id")["img_s"])
        frames[runtime] = df.reset_index(drop=True)
    return frames


def latency_pivot(results: dict, input_size: str) -> pd.DataFrame:
    """Batch-1 p50 (ms), variant rows x runtime columns; NaN where not measured."""
    lat = latency_frame(results)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == input_size)]
    if b1.empty:
        return pd.DataFrame()
    pivot = b1.pivot_table(index="variant", columns="runtime", values="p50_ms", aggfunc="first")
    return pivot.reindex(index=_variant_order(b1["variant"]), columns=_runtime_order(results, b1["runtime"]))


def verdict_text(finding: dict) -> str:
    """"1.31x slower" for latency checks with both numbers, else the gate's verdict word."""
    verdict = finding.get("verdict", "")
    value, baseline = finding.get("value"), finding.get("baseline")
    if "latency" in str(finding.get("check", "")) and _present(value) and _present(baseline) and baseline > 0:
        ratio = value / baseline
        if verdict in ("regression", "slower"):
            return f"{ratio:.2f}x slower"
        if verdict in ("ok", "not significant"):
            return f"{verdict} ({ratio:.2f}x)"
    return verdict


def gate_frame(results: dict) -> pd.DataFrame | None:
    """The gate's findings, most severe verdict first; None when the gate has not run."""
    gate = results.get("gate")
    if not gate:
        return None
    rows = [{"id": f.get("id"), "check": f.get("check"), "shape": f.get("shape"), "verdict": f.get("verdict"),
             "verdict_text": verdict_text(f), "message": f.get("message"), "limit": f.get("limit")}
            for f in gate.get("findings") or []]
    df = pd.DataFrame(rows, columns=["id", "check", "shape", "verdict", "verdict_text", "message", "limit"])
    rank = {v: i for i, v in enumerate(VERDICT_ORDER)}
    df["_rank"] = df["verdict"].map(lambda v: rank.get(v, len(rank)))
    return df.sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)
