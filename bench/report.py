"""Markdown + PNG reports from results JSON files (docs/results-schema.md).

Two steps, kept apart so the numbers can be unit-tested without parsing markdown:
  data:   results dict -> DataFrames / small records (pure functions, numeric columns)
  render: DataFrames -> markdown text and PNG bytes (formatting only, no decisions)

Every number printed comes from the results file (a measurement of that run), from the
gate's findings stored in it, or from TUTORIAL_CLAIMS (labelled as claims, never mixed with
measurements). The rules that turn numbers into words ("good for", the recommendation, the
claim explanations) are constants and functions below, and the report states them.

Rules
-----
* Summary rows: one per (variant, runtime) item with status "ok", fp32 first, then variants
  in the order the run produced them; runtimes in options.runtimes order. Not "best runtime
  per variant": which runtime is best depends on the input size, and hiding a runtime hides
  the gate's view of it.
* Accuracy budget: results["gate"]["accuracy_budget_pp"] if set, else the strictest limit of
  the gate's accuracy findings (check starting with "accuracy", limit in percentage points),
  else DEFAULT_BUDGET_PP. "Within budget": top-1 change vs fp32-eager >= -budget.
* Good for (per row, several may apply):
    "reference"                                 the fp32-eager item
    "accuracy loss: check before shipping"      change vs fp32 < -budget (no other tag then)
    "no gain: ..."                              not fp32, size within SAME_SIZE_FRACTION of fp32
                                                on the same runtime and every non-noisy batch-1
                                                p50 within SAME_SPEED_FRACTION of it; "masks keep
                                                tensors dense" when its gzip size is smaller than
                                                fp32's (zeros compress, the tensors stay dense)
    "smallest within budget"                    smallest file among rows within budget, if it is
                                                smaller than fp32-eager's by SAME_SIZE_FRACTION
    "fastest at HxW"                            lowest batch-1 p50 at that input size among rows
                                                within budget
* Recommendation (per input size): the row with the lowest batch-1 p50 within budget; the
  next one within budget is named with its difference, and called a tie when its p50 is
  below the winner's p90 (the two distributions overlap).
"""
from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from compress.errors import UserError
from compress.fsutil import atomic_write_bytes

from .results import shape_id

MB_BYTES = 1_000_000  # reports say MB = 10^6 bytes, as file managers on Linux/macOS do
NOISY_CV = 0.10  # pyperf warns above 10%; the gate marks such samples "noisy" too
DEFAULT_BUDGET_PP = 1.0
SAME_SIZE_FRACTION = 0.01  # a file within 1% of fp32 has not been compressed
SAME_SPEED_FRACTION = 0.05  # below the run-to-run spread of a quiet CPU: "no speed change"
REFERENCE_VARIANT, REFERENCE_RUNTIME = "fp32", "eager"
NA = "—"

# Verdicts in the order a reader should act on them.
VERDICT_ORDER = ("regression", "noisy", "missing", "new", "not significant", "skipped", "ok")

# Claims of the tutorial this project started from, quoted as data so that no claimed number
# is typed into prose. Source: ../shared/seed/ tutorial ("ResNet18轻量化教程"), §2 (fp32
# baseline), §3.1 (prune.l1_unstructured, amount=0.2), §4.1 (quantize_dynamic on nn.Linear,
# qint8), §5 (comparison table). Its latencies are per image on an RTX 3090 GPU.
TUTORIAL_CLAIMS_SOURCE = "`../shared/seed/` tutorial, §2-§5"
TUTORIAL_CLAIMS_HARDWARE = "RTX 3090 GPU"
TUTORIAL_CLAIMS = (
    {"variant": "fp32", "section": "§2", "what": "fp32 baseline",
     "size_mb": 44.7, "top1_pct": 92.0, "latency_ms": 15.0},
    {"variant": "prune-l1-20", "section": "§3.1", "what": "L1 unstructured pruning 20%",
     "size_mb": 35.8, "top1_pct": 91.5, "latency_ms": 12.0},
    {"variant": "int8-dynamic", "section": "§4.1", "what": "dynamic int8 quantization",
     "size_mb": 8.4, "top1_pct": 90.8, "latency_ms": 8.0},
)
# Architecture facts used to explain the int8-dynamic size: ResNet18's fc maps 512 pooled
# features to the classes, and an fp32 weight takes 4 bytes in the file.
RESNET18_FC_IN_FEATURES = 512
FP32_BYTES_PER_PARAM = 4
CLAIMS_PREFERRED_INPUT = (224, 224)  # the tutorial resizes to 224 (§2)


# --- small helpers ------------------------------------------------------------------------

def _present(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "unnamed"


def _ok_items(results: dict) -> list[dict]:
    return [it for it in results.get("items", []) if it.get("status") == "ok"]


def _reference_item(results: dict) -> dict | None:
    for it in _ok_items(results):
        if it["variant"] == REFERENCE_VARIANT and it["runtime"] == REFERENCE_RUNTIME:
            return it
    return None


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


# --- data step: results -> DataFrames -------------------------------------------------------

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
        })
    cols = ["id", "variant", "runtime", "size_bytes", "size_mb", "size_gzip_mb", "top1_pct", "ci_lo_pct",
            "ci_hi_pct", "n", "agreement_pct", "delta_pp"]
    return _ordered(results, pd.DataFrame(rows, columns=cols))


def latency_frame(results: dict) -> pd.DataFrame:
    """One row per (item, input size, batch size); speedup = 1 / ratio_to_reference."""
    rows = []
    for it in _ok_items(results):
        for lat in it.get("latency") or []:
            ratio = lat.get("ratio_to_reference")
            rows.append({
                "id": it["id"], "variant": it["variant"], "runtime": it["runtime"],
                "input_size": shape_id(lat["input_size"]), "batch_size": lat["batch_size"],
                "p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "p99_ms": lat.get("p99_ms"),
                "mean_ms": lat.get("mean_ms"), "stdev_ms": lat.get("stdev_ms"), "cv": lat.get("cv"),
                "ratio_to_reference": ratio, "speedup": 1 / ratio if ratio else None,
                "reference_id": lat.get("reference_id"),
                "noisy": _present(lat.get("cv")) and lat["cv"] > NOISY_CV,
                "samples_ms": list(lat.get("samples_ms") or []),
            })
    cols = ["id", "variant", "runtime", "input_size", "batch_size", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
            "stdev_ms", "cv", "ratio_to_reference", "speedup", "reference_id", "noisy", "samples_ms"]
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


def noisy_frame(results: dict, cv_limit: float = NOISY_CV) -> pd.DataFrame:
    lat = latency_frame(results)
    return lat[lat["cv"].fillna(0) > cv_limit].reset_index(drop=True)


def accuracy_budget(results: dict) -> tuple[float, str]:
    """(budget in pp, where it came from)."""
    gate = results.get("gate") or {}
    if _present(gate.get("accuracy_budget_pp")):
        return float(gate["accuracy_budget_pp"]), "the gate"
    limits = [f["limit"] for f in gate.get("findings") or []
              if str(f.get("check", "")).startswith("accuracy") and _present(f.get("limit"))]
    if limits:
        return float(min(limits)), "the gate's accuracy check"
    return DEFAULT_BUDGET_PP, "default"


def _within(delta_pp, budget_pp: float) -> bool:
    # 1e-9: top-1 differences are ratios of counts; float noise must not flip a verdict.
    return _present(delta_pp) and delta_pp >= -budget_pp - 1e-9


def good_for(results: dict, budget_pp: float | None = None) -> dict[str, list[str]]:
    """item id -> tags, by the rule in the module docstring."""
    budget_pp = accuracy_budget(results)[0] if budget_pp is None else budget_pp
    items = items_frame(results)
    lat = latency_frame(results)
    b1 = lat[lat["batch_size"] == 1]
    ref = _reference_item(results)
    tags: dict[str, list[str]] = {i: [] for i in items["id"]}
    if items.empty:
        return tags
    fp32_by_runtime = {r.runtime: r for r in items.itertuples() if r.variant == REFERENCE_VARIANT}
    ok_budget = items[[_within(d, budget_pp) for d in items["delta_pp"]]]

    for row in items.itertuples():
        if ref is not None and row.id == ref["id"]:
            tags[row.id].append("reference")
        if _present(row.delta_pp) and not _within(row.delta_pp, budget_pp):
            tags[row.id].append("accuracy loss: check before shipping")
            continue
        fp32 = fp32_by_runtime.get(row.runtime)
        if row.variant != REFERENCE_VARIANT and fp32 is not None and _no_gain(row, fp32, b1):
            dense = (_present(row.size_gzip_mb) and _present(fp32.size_gzip_mb)
                     and row.size_gzip_mb < fp32.size_gzip_mb * (1 - SAME_SIZE_FRACTION))
            tags[row.id].append("no gain: masks keep tensors dense" if dense
                                else "no gain: same size and speed as fp32")

    sized = ok_budget[ok_budget["size_bytes"].notna()]
    ref_size = ref.get("size_bytes") if ref else None
    if not sized.empty and _present(ref_size):
        smallest = sized["size_bytes"].min()
        if smallest < ref_size * (1 - SAME_SIZE_FRACTION):
            for i in sized.loc[sized["size_bytes"] == smallest, "id"]:
                tags[i].append("smallest within budget")
    for size in input_sizes(results):
        rec = recommend(results, size, budget_pp)
        if rec.item_id is not None:
            tags[rec.item_id].append(f"fastest at {size}")
    return tags


def _no_gain(row, fp32, b1: pd.DataFrame) -> bool:
    if not (_present(row.size_bytes) and _present(fp32.size_bytes)):
        return False
    if abs(row.size_bytes / fp32.size_bytes - 1) > SAME_SIZE_FRACTION:
        return False
    mine = b1[(b1["id"] == row.id) & ~b1["noisy"]].set_index("input_size")["p50_ms"]
    theirs = b1[(b1["id"] == fp32.id) & ~b1["noisy"]].set_index("input_size")["p50_ms"]
    shared = mine.index.intersection(theirs.index)
    if shared.empty:
        return False  # no clean timing to compare: do not call it "no gain"
    return all(abs(mine[s] / theirs[s] - 1) <= SAME_SPEED_FRACTION for s in shared)


@dataclass(frozen=True)
class Recommendation:
    input_size: str
    budget_pp: float
    item_id: str | None = None
    variant: str | None = None
    runtime: str | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    speedup: float | None = None
    delta_pp: float | None = None
    noisy: bool = False
    runner_up_id: str | None = None
    runner_up_p50_ms: float | None = None
    why_none: str | None = None

    @property
    def tie(self) -> bool:
        """The runner-up's median sits inside the winner's spread: no real winner."""
        return self.runner_up_p50_ms is not None and self.runner_up_p50_ms <= self.p90_ms


def recommend(results: dict, input_size: str, budget_pp: float | None = None) -> Recommendation:
    """Fastest batch-1 p50 at ``input_size`` among items within the accuracy budget."""
    budget_pp = accuracy_budget(results)[0] if budget_pp is None else budget_pp
    if _reference_item(results) is None:
        return Recommendation(input_size, budget_pp,
                              why_none="fp32-eager was not measured in this run, so the accuracy change is unknown")
    items = items_frame(results).set_index("id")
    lat = latency_frame(results)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == input_size)]
    b1 = b1[[_within(items.at[i, "delta_pp"], budget_pp) for i in b1["id"]]]
    if b1.empty:
        return Recommendation(input_size, budget_pp,
                              why_none=f"no item within {budget_pp:g} pp of fp32 has batch-1 latency at {input_size}")
    b1 = b1.sort_values(["p50_ms", "id"], kind="stable")
    best = b1.iloc[0]
    second = b1.iloc[1] if len(b1) > 1 else None
    return Recommendation(
        input_size, budget_pp, best["id"], best["variant"], best["runtime"], best["p50_ms"], best["p90_ms"],
        best["speedup"], items.at[best["id"], "delta_pp"], bool(best["noisy"]),
        None if second is None else second["id"], None if second is None else second["p50_ms"])


def best_runtime_frame(results: dict, input_size: str) -> pd.DataFrame:
    """Per variant, its fastest runtime at batch 1 and ``input_size``, against the fastest fp32
    runtime of the same run (the bar a compressed model has to beat, not fp32 eager)."""
    lat = latency_frame(results)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == input_size)]
    fp32 = b1[b1["variant"] == REFERENCE_VARIANT]
    if b1.empty or fp32.empty:
        return pd.DataFrame()
    bar = fp32.loc[fp32["p50_ms"].idxmin()]
    items = items_frame(results).set_index("id")
    rows = []
    for variant in _variant_order(b1["variant"]):
        best = b1[b1["variant"] == variant].sort_values("p50_ms").iloc[0]
        it = items.loc[best["id"]] if best["id"] in items.index else None
        rows.append({"variant": variant, "runtime": best["runtime"], "p50_ms": best["p50_ms"],
                     "speedup_vs_fastest_fp32": bar["p50_ms"] / best["p50_ms"],
                     "size_mb": None if it is None else it["size_mb"],
                     "smaller_than_fp32": None, "delta_pp": None if it is None else it["delta_pp"],
                     "noisy": bool(best["noisy"])})
    df = pd.DataFrame(rows)
    fp32_size = items[items["variant"] == REFERENCE_VARIANT]["size_mb"].max()
    if _present(fp32_size):
        df["smaller_than_fp32"] = fp32_size / df["size_mb"]
    df.attrs["bar"] = f"fp32 on {bar['runtime']}, {bar['p50_ms']:.2f} ms"
    return df


def _best_runtime_table(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Variant": df["variant"], "Fastest runtime": df["runtime"],
        "b1 p50 ms": [_f(x, ".2f") + (" (noisy)" if n else "") for x, n in zip(df["p50_ms"], df["noisy"])],
        "Speedup vs fastest fp32": [_f(x, ".2f", "x") for x in df["speedup_vs_fastest_fp32"]],
        "Size (MB)": [_f(x, ".2f") for x in df["size_mb"]],
        "Smaller than fp32": [_f(x, ".1f", "x") for x in df["smaller_than_fp32"]],
        "Δ vs fp32 (pp)": [_pp(x) for x in df["delta_pp"]],
    })


def summary_frame(results: dict, budget_pp: float | None = None) -> pd.DataFrame:
    """The headline table, numeric: one row per ok (variant, runtime) item."""
    budget_pp = accuracy_budget(results)[0] if budget_pp is None else budget_pp
    df = items_frame(results)[["id", "variant", "runtime", "size_mb", "top1_pct", "ci_lo_pct", "ci_hi_pct",
                               "delta_pp"]].copy()
    lat = latency_frame(results)
    tput = throughput_frame(results)
    for size in input_sizes(results):
        b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == size)].set_index("id")
        for col in ("p50_ms", "p90_ms", "speedup", "noisy"):
            df[f"{col}@{size}"] = df["id"].map(b1[col])
        at_size = tput[tput["input_size"] == size]
        if not at_size.empty:
            largest = at_size["batch_size"].max()
            df[f"img_s@{size}/b{largest}"] = df["id"].map(
                at_size[at_size["batch_size"] == largest].set_index("id")["img_s"])
    tags = good_for(results, budget_pp)
    df["good_for"] = df["id"].map(lambda i: "; ".join(tags.get(i, [])))
    return df


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
        if verdict == "regression":
            return f"{ratio:.2f}x slower"
        if verdict in ("ok", "not significant"):
            return f"{verdict} ({ratio:.2f}x)"
    return verdict


def gate_frame(results: dict) -> pd.DataFrame | None:
    """The gate's findings, regressions first; None when the gate has not run."""
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


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points no other point beats on both, fastest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_acc = [], -math.inf
    for i in order:
        if points[i][1] > best_acc:
            front.append(i)
            best_acc = points[i][1]
    return front


# --- render step: formatting ---------------------------------------------------------------

def _f(x, spec: str, suffix: str = "") -> str:
    return f"{x:{spec}}{suffix}" if _present(x) else NA


def _pp(x) -> str:
    if not _present(x):
        return NA
    text = f"{x:+.2f}"
    return "+0.00" if text == "-0.00" else text


def _cell(text) -> str:
    """Table-safe text: one line, pipes escaped."""
    if not _present(text) or text == "":
        return NA
    return " ".join(str(text).split()).replace("|", "\\|")


def _md(df: pd.DataFrame) -> str:
    # disable_numparse: cells are already formatted; tabulate would reformat "44.70" to "44.7".
    return df.map(_cell).to_markdown(index=False, disable_numparse=True)


def _label(fingerprint: str) -> str:
    return fingerprint.replace("|", " · ")


def _shorten_sha(sha: str | None) -> str:
    return f"{sha[:12]}…" if sha and len(sha) > 12 else (sha or NA)


def _environment_lines(results: dict) -> list[str]:
    m = results.get("machine_info") or {}
    gpu = m.get("gpu_name")
    gpu_text = (f"{gpu} (driver {m.get('gpu_driver') or NA}, CUDA {m.get('cuda_version') or NA})"
                if gpu else "none")
    versions = ", ".join(f"{k} {v}" for k, v in (results.get("versions") or {}).items() if v)
    commit = results.get("commit_info") or {}
    commit_text = (commit.get("id") or "unknown")[:12] + (" (dirty: uncommitted changes)" if commit.get("dirty")
                                                          else " (clean)" if commit.get("dirty") is False else "")
    ds, ck = results["dataset"], results["checkpoint"]
    return [
        f"- Machine: {m.get('cpu_model') or 'unknown CPU'} ({m.get('arch', NA)}), {m.get('cpu_count', NA)} cores, "
        f"{m.get('threads', NA)} threads; GPU: {gpu_text}",
        f"- Fingerprint: `{results.get('fingerprint', NA)}`; OS {m.get('os', NA)}, Python {m.get('python', NA)}",
        f"- Versions: {versions or NA}",
        f"- Commit: `{commit_text}`",
        f"- Dataset: `{ds['id']}` ({ds.get('name', NA)}), {ds.get('eval_samples', NA)} eval samples, "
        f"native input {native_size(results)}",
        f"- Checkpoint: sha256 `{_shorten_sha(ck.get('sha256'))}` ({ck.get('source') or 'source not recorded'})",
        f"- Date: {results.get('created_utc', NA)} (run start, UTC)",
    ] + ([f"- **Emulated ({m['emulated']})**: every latency and throughput here was measured under "
          "emulation and says nothing about real hardware; none is compared with baselines"]
         if m.get("emulated") else [])


def _count_words(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {word}" for word, n in counts.items() if n)


def _one_line_summary(results: dict) -> str:
    problems = problems_frame(results)
    parts = [f"{len(_ok_items(results))} items measured on {results['device']} "
             f"({(results.get('machine_info') or {}).get('cpu_model') or 'unknown CPU'}, "
             f"{(results.get('options') or {}).get('threads', NA)} threads)"]
    status_counts = problems["status"].value_counts()
    parts.append(_count_words({"errored": int(status_counts.get("error", 0)),
                               "skipped": int(status_counts.get("skipped", 0))}))
    gate = gate_frame(results)
    if gate is None:
        parts.append("gate not run")
    else:
        counts = {v: int((gate["verdict"] == v).sum()) for v in VERDICT_ORDER if v != "ok"}
        parts.append("gate: " + (_count_words(counts) or ("all ok" if not gate.empty else "no findings")))
    return "; ".join(p for p in parts if p) + "."


def _recommendation_line(results: dict, rec: Recommendation) -> str:
    head = f"- **{size_title(results, rec.input_size)}**: "
    if rec.item_id is None:
        return head + f"no recommendation: {rec.why_none}."
    speed = (f"{rec.speedup:.2f}x vs fp32 eager" if rec.item_id != (_reference_item(results) or {}).get("id")
             else "the fp32 eager reference itself")
    line = (f"{head}{rec.variant} on {rec.runtime}: batch-1 p50 {rec.p50_ms:.2f} ms ({speed}), "
            f"top-1 {_pp(rec.delta_pp)} pp vs fp32 (budget {rec.budget_pp:g} pp).")
    if rec.noisy:
        line += f" Its timing is noisy (cv > {NOISY_CV:g}): rerun before relying on it."
    if rec.runner_up_id is not None:
        diff = rec.runner_up_p50_ms / rec.p50_ms - 1
        line += f" Next within budget: `{rec.runner_up_id}` at {rec.runner_up_p50_ms:.2f} ms ({diff:+.0%})"
        line += (" — inside the winner's p90, so treat them as a tie and pick by size or accuracy."
                 if rec.tie else ".")
    return line


def _summary_table(results: dict, df: pd.DataFrame) -> pd.DataFrame:
    ref_id = (_reference_item(results) or {}).get("id")
    out = pd.DataFrame({
        "Variant": df["variant"], "Runtime": df["runtime"],
        "Size (MB)": df["size_mb"].map(lambda x: _f(x, ".2f")),
        "Top-1 % [95% CI]": [f"{_f(t, '.2f')} [{_f(lo, '.2f')}, {_f(hi, '.2f')}]" if _present(t) else NA
                             for t, lo, hi in zip(df["top1_pct"], df["ci_lo_pct"], df["ci_hi_pct"])],
        "Δ vs fp32 (pp)": df["delta_pp"].map(_pp),
    })
    for size in input_sizes(results):
        noisy = df[f"noisy@{size}"].fillna(False).astype(bool)
        out[f"b1 p50 / p90 ms @{size}"] = [
            f"{_f(p50, '.2f')} / {_f(p90, '.2f')}" + (" (noisy)" if n else "") if _present(p50) else NA
            for p50, p90, n in zip(df[f"p50_ms@{size}"], df[f"p90_ms@{size}"], noisy)]
        out[f"Speedup vs fp32 eager @{size}"] = ["reference" if i == ref_id else _f(s, ".2f", "x")
                                   for i, s in zip(df["id"], df[f"speedup@{size}"])]
    for col in [c for c in df.columns if c.startswith("img_s@")]:
        size, batch = col[len("img_s@"):].split("/")
        out[f"img/s @{size} {batch}"] = df[col].map(lambda x: _f(x, ".1f"))
    out["Good for"] = df["good_for"]
    return out


def _runtime_table(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "Variant": df["variant"], "Size (MB)": df["size_mb"].map(lambda x: _f(x, ".2f")),
        "Top-1 %": df["top1_pct"].map(lambda x: _f(x, ".2f")),
        "Agreement with fp32 %": df["agreement_pct"].map(lambda x: _f(x, ".2f")),
    })
    for col in df.columns:
        if col.startswith("p50_ms@"):
            out[f"p50 ms {col[len('p50_ms@'):]}"] = df[col].map(lambda x: _f(x, ".2f"))
    for col in df.columns:
        if col.startswith("img_s@"):
            out[f"img/s {col[len('img_s@'):]}"] = df[col].map(lambda x: _f(x, ".1f"))
    return out


def _pivot_table(pivot: pd.DataFrame) -> pd.DataFrame:
    out = pivot.map(lambda x: _f(x, ".2f"))
    out.insert(0, "Variant", out.index)
    return out.reset_index(drop=True)


def _gate_table(gate: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Item": gate["id"], "Check": gate["check"], "Shape": gate["shape"], "Verdict": gate["verdict_text"],
        "Message": gate["message"], "Limit": gate["limit"].map(lambda x: _f(x, "g")),
    })


def _noisy_lines(results: dict) -> list[str]:
    noisy = noisy_frame(results)
    if noisy.empty:
        return [f"No sample has cv > {NOISY_CV:g}."]
    lines = []
    for r in noisy.itertuples():
        lines.append(f"- WARNING: `{r.id}` at {r.input_size} batch {r.batch_size} may be unstable: the standard "
                     f"deviation ({r.stdev_ms:.2f} ms) is {r.cv:.0%} of the mean ({r.mean_ms:.2f} ms)")
    lines.append("")
    lines.append("Rerun on an idle machine (no other jobs, fixed CPU frequency, pinned threads) or with more "
                 "rounds; the gate does not compare noisy samples.")
    return lines


def _problems_table(problems: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"Item": problems["id"], "Status": problems["status"],
                         "Reason": problems["reason"].map(lambda r: r if _present(r) and r else "(no reason recorded)")})


def _reading_notes(results: dict, budget_pp: float, budget_source: str) -> list[str]:
    sizes = input_sizes(results)
    others = [s for s in sizes if s != native_size(results)]
    samples = results["dataset"].get("eval_samples", NA)
    ref_ids = sorted({r for r in latency_frame(results)["reference_id"].dropna()})
    ref_id = (_reference_item(results) or {}).get("id")
    notes = [
        f"- Accuracy is measured at the native input size {native_size(results)} on {samples} images; "
        f"latency at the native size and at the deployment size{'s' if len(others) > 1 else ''} "
        f"{', '.join(others) or NA}.",
        "- Size: the runtime's deployable file; 1 MB = 10^6 bytes.",
        "- Top-1 % with its 95% Wilson interval; Δ vs fp32 is against the fp32-eager item of this run (pp).",
        "- Latency: batch-1 p50 / p90 over the timed samples. Speedup = 1 / ratio_to_reference, the ratio of "
        "medians against fp32 eager timed interleaved in the same rounds (so machine drift cancels).",
        f"- Accuracy budget: {budget_pp:g} pp ({budget_source}). Good for: \"accuracy loss\" when the drop is "
        "beyond the budget; \"no gain\" when size is within "
        f"{SAME_SIZE_FRACTION:.0%} and every clean batch-1 p50 within {SAME_SPEED_FRACTION:.0%} of fp32 on the "
        "same runtime; \"smallest within budget\" / \"fastest at <size>\" among rows within the budget.",
    ]
    if any(r != ref_id for r in ref_ids):
        notes.append(f"- Note: some speedups are against another reference: {', '.join(ref_ids)}.")
    return notes


# --- plots ---------------------------------------------------------------------------------

RUNTIME_MARKERS = ("o", "^", "s", "D", "v", "P", "X")
PNG_METADATA = {"Software": None}  # no matplotlib version string: same bytes on every run
FIG_DPI = 100


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width_in, height_in), dpi=FIG_DPI, layout="constrained")


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=PNG_METADATA)
    return buf.getvalue()


def _plain_log_ticks(axis) -> None:
    """"5, 10, 20" instead of "5x10^0": people read these as milliseconds."""
    from matplotlib import ticker

    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda x, _pos: f"{x:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


LABEL_OFFSETS_PT = ((6, 6), (6, -12), (-6, 6), (-6, -12), (6, 18), (6, -24), (-6, 18), (-6, -24))


def _label_points(ax, texts: list[str], points: list[tuple[float, float]], fontsize: float) -> None:
    """Greedy placement: each label takes the first offset whose box hits no earlier label.

    Points of the same variant on one runtime cluster tightly (fp32 vs pruned), so fixed
    offsets would print labels on top of each other.
    """
    ax.autoscale_view()
    to_px = ax.transData.transform
    pt_px = FIG_DPI / 72
    height_px = fontsize * pt_px * 1.3
    marker_px = 10  # markers are obstacles too, or a label lands on its neighbour's point
    taken = [(x - marker_px, y - marker_px, x + marker_px, y + marker_px) for x, y in map(to_px, points)]
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], texts[i]))
    for i in order:
        x_px, y_px = to_px(points[i])
        width_px = len(texts[i]) * fontsize * pt_px * 0.65
        chosen = LABEL_OFFSETS_PT[0]
        for dx, dy in LABEL_OFFSETS_PT:
            left = x_px + dx * pt_px - (width_px if dx < 0 else 0)
            box = (left, y_px + dy * pt_px, left + width_px, y_px + dy * pt_px + height_px)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
                chosen = (dx, dy)
                break
        dx, dy = chosen
        left = x_px + dx * pt_px - (width_px if dx < 0 else 0)
        taken.append((left, y_px + dy * pt_px, left + width_px, y_px + dy * pt_px + height_px))
        ax.annotate(texts[i], points[i], textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                    ha="right" if dx < 0 else "left", va="bottom",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 4})


def accuracy_latency_png(results: dict, input_size: str, budget_pp: float) -> bytes:
    import matplotlib.style

    items = items_frame(results).set_index("id")
    lat = latency_frame(results)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == input_size)]
    b1 = b1[[_present(items.at[i, "top1_pct"]) for i in b1["id"]]]
    runtimes = _runtime_order(results, b1["runtime"])
    with matplotlib.style.context("default"):  # ignore the user's matplotlibrc: same image everywhere
        fig = _figure(7.5, 4.8)
        ax = fig.add_subplot()
        for k, runtime in enumerate(runtimes):
            pts = b1[b1["runtime"] == runtime]
            acc = items.loc[pts["id"]]
            ax.errorbar(pts["p50_ms"], acc["top1_pct"],
                        yerr=[acc["top1_pct"] - acc["ci_lo_pct"], acc["ci_hi_pct"] - acc["top1_pct"]],
                        fmt=RUNTIME_MARKERS[k % len(RUNTIME_MARKERS)], color=f"C{k}", markersize=8,
                        capsize=3, label=runtime, linestyle="none")
        points = [(r.p50_ms, items.at[r.id, "top1_pct"]) for r in b1.itertuples()]
        front = pareto_front(points)
        if front:
            ax.scatter([points[i][0] for i in front], [points[i][1] for i in front], s=220, facecolors="none",
                       edgecolors="0.3", linewidths=1, label="Pareto optimal", zorder=3)
        if len(front) > 1:
            ax.step([points[i][0] for i in front], [points[i][1] for i in front], where="post",
                    color="0.4", linestyle="--", linewidth=1, label="Pareto front")
        ref = _reference_item(results)
        if ref is not None and ref.get("accuracy"):
            ax.axhline(ref["accuracy"]["top1"] * 100 - budget_pp, color="C3", linestyle=":", linewidth=1,
                       label=f"fp32 − {budget_pp:g} pp budget")
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
        ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
        _label_points(ax, [r.variant for r in b1.itertuples()], points, fontsize=8)
        ax.set_xlabel(f"batch-1 p50 latency at {input_size} (ms, log scale)")
        ax.set_ylabel(f"top-1 accuracy at {native_size(results)} (%)")
        ax.set_title(f"{results['dataset'].get('name', '')} on {results['device']}: accuracy vs latency "
                     f"at {size_title(results, input_size)}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        return _png_bytes(fig)


def latency_box_png(results: dict, input_size: str) -> bytes:
    import matplotlib.style

    lat = latency_frame(results)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == input_size)].sort_values(["p50_ms", "id"])
    b1 = b1.iloc[::-1]  # fastest at the top of a horizontal box plot
    labels = [f"{r.variant} / {r.runtime}" + (" (noisy)" if r.noisy else "") for r in b1.itertuples()]
    with matplotlib.style.context("default"):
        fig = _figure(7.5, 1.2 + 0.42 * max(len(b1), 1))
        ax = fig.add_subplot()
        ax.boxplot(list(b1["samples_ms"]), orientation="horizontal", tick_labels=labels, showfliers=True)
        lo, hi = b1["p50_ms"].min(), b1["p50_ms"].max()
        if _present(lo) and lo > 0 and hi / lo > 10:
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
        ax.set_xlabel(f"batch-1 latency at {input_size} (ms{', log scale' if ax.get_xscale() == 'log' else ''})")
        ax.set_title(f"Latency samples per item at {size_title(results, input_size)}", fontsize=10)
        ax.grid(True, axis="x", which="both", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
        return _png_bytes(fig)


# --- public API ----------------------------------------------------------------------------

def report_stem(results: dict) -> str:
    return f"{_slug(results['dataset'].get('name') or results['dataset']['id'])}-{_slug(results['device'])}"


def render_markdown(results: dict, plot_paths: dict[str, str] | None = None) -> str:
    """The report text; ``plot_paths`` maps a caption to a path relative to the markdown file."""
    _check_shape(results)
    budget_pp, budget_source = accuracy_budget(results)
    ds = results["dataset"]
    lines = [f"# ResNet18 compression benchmark: {ds.get('name') or ds['id']} on {results['device']}", "",
             _one_line_summary(results), "", "## Environment", "", *_environment_lines(results), "",
             "## How to read this", "", *_reading_notes(results, budget_pp, budget_source), "",
             "## Recommendation", "",
             f"Fastest (variant, runtime) at batch 1 whose top-1 is within {budget_pp:g} pp of fp32 eager:", ""]
    lines += [_recommendation_line(results, recommend(results, s, budget_pp)) for s in input_sizes(results)]
    for size in input_sizes(results):
        best = best_runtime_frame(results, size)
        if best.empty:
            continue
        lines += ["", f"### Each variant on its fastest runtime, {size_title(results, size)}", "",
                  f"Against the fastest fp32 runtime of this run ({best.attrs['bar']}): the bar a "
                  "compressed model must beat. Medians of separate items, not interleaved: read "
                  "differences under ~20% as noise.", "", _md(_best_runtime_table(best))]
    summary = summary_frame(results, budget_pp)
    lines += ["", "## Summary", "", "One row per measured (variant, runtime).", ""]
    lines += [_md(_summary_table(results, summary)) if not summary.empty else "No item was measured.", ""]

    lines += ["## Gate verdicts", ""]
    gate = gate_frame(results)
    if gate is None:
        lines += ["Gate not run: this results file has no gate findings.", ""]
    else:
        g = results["gate"]
        lines += [f"Baseline: `{g.get('baseline_file') or NA}`."
                  + ("" if g.get("fingerprint_match", True) else
                     " WARNING: the baseline comes from a machine with a different fingerprint; latency "
                     "verdicts compare different hardware."), ""]
        lines += [_md(_gate_table(gate)) if not gate.empty else "The gate ran and reported no findings.", ""]

    lines += [f"## Noisy samples (cv > {NOISY_CV:g})", "", *_noisy_lines(results), ""]
    problems = problems_frame(results)
    lines += ["## Skipped and errored items", ""]
    lines += [_md(_problems_table(problems)) if not problems.empty else "None: every item ran.", ""]

    lines += ["## Per runtime", ""]
    for runtime, df in runtime_frames(results).items():
        lines += [f"### {runtime}", "", _md(_runtime_table(df)), ""]
    lines += ["## Batch-1 p50 latency (ms) by variant × runtime", ""]
    for size in input_sizes(results):
        pivot = latency_pivot(results, size)
        if not pivot.empty:
            lines += [f"### {size_title(results, size)}", "", _md(_pivot_table(pivot)), ""]
    lines += [f"{NA}: not measured (skipped, errored or not part of this run; see above).", ""]
    if plot_paths:
        lines += ["## Plots", ""]
        for caption, path in plot_paths.items():
            lines += [f"![{caption}]({path})", ""]
    return "\n".join(lines)


def render_report(results: dict, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/<dataset name>-<device>.md`` and its PNGs in ``<same stem>-plots/``."""
    _check_shape(results)
    out_dir = Path(out_dir)
    stem = report_stem(results)
    plots_dir = out_dir / f"{stem}-plots"
    budget_pp = accuracy_budget(results)[0]
    plot_paths: dict[str, str] = {}
    if not latency_frame(results).empty:
        for size in input_sizes(results):
            for caption, name, png in (
                    (f"Accuracy vs batch-1 latency at {size}", f"accuracy-vs-latency-{size}.png",
                     lambda s=size: accuracy_latency_png(results, s, budget_pp)),
                    (f"Latency samples at {size}", f"latency-{size}.png",
                     lambda s=size: latency_box_png(results, s))):
                atomic_write_bytes(plots_dir / name, png())
                plot_paths[caption] = f"{plots_dir.name}/{name}"
    # The markdown goes last: it never points at a plot that has not been written.
    md_path = out_dir / f"{stem}.md"
    atomic_write_bytes(md_path, render_markdown(results, plot_paths).encode("utf-8"))
    return md_path


# --- merge across machines -----------------------------------------------------------------

def run_labels(results_list: list[dict]) -> list[str]:
    """Column label per run: the fingerprint (device, CPU, threads), made unique by date then index."""
    labels = [_label(r.get("fingerprint") or r["device"]) for r in results_list]
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = f"{label} @ {results_list[i].get('created_utc', NA)}"
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = f"{label} #{labels[:i].count(label) + 1}"
    return labels


def _group_key(results: dict) -> tuple[str, str]:
    return results["dataset"]["id"], results["checkpoint"]["sha256"]


def _row_keys(results_list: list[dict]) -> list[tuple[str, str]]:
    variants = _variant_order(it["variant"] for r in results_list for it in _ok_items(r))
    runtimes = _runtime_order(results_list[0], (it["runtime"] for r in results_list for it in _ok_items(r)))
    present = {(it["variant"], it["runtime"]) for r in results_list for it in _ok_items(r)}
    return [(v, rt) for v in variants for rt in runtimes if (v, rt) in present]


def merged_frames(results_list: list[dict], labels: list[str]) -> dict[str, pd.DataFrame]:
    """Title -> table (formatted strings): rows (variant, runtime), one column per run."""
    keys = _row_keys(results_list)
    base = pd.DataFrame({"Variant": [k[0] for k in keys], "Runtime": [k[1] for k in keys]})
    tables = {"Top-1 accuracy % (Δ vs fp32 eager of the same run, pp)": base.copy(), "Size (MB)": base.copy()}
    sizes = list(dict.fromkeys(s for r in results_list for s in input_sizes(r)))
    for size in sizes:
        tables[f"Batch-1 p50 latency at {size}, ms (speedup vs fp32 eager on the same machine)"] = base.copy()
    for results, label in zip(results_list, labels):
        items = items_frame(results).set_index(["variant", "runtime"])
        lat = latency_frame(results)
        acc_cells, size_cells = [], []
        for key in keys:
            row = items.loc[key] if key in items.index else None
            acc_cells.append(NA if row is None or not _present(row["top1_pct"])
                             else f"{row['top1_pct']:.2f} ({_pp(row['delta_pp'])})")
            size_cells.append(NA if row is None else _f(row["size_mb"], ".2f"))
        tables["Top-1 accuracy % (Δ vs fp32 eager of the same run, pp)"][label] = acc_cells
        tables["Size (MB)"][label] = size_cells
        for size in sizes:
            b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == size)].set_index(["variant", "runtime"])
            cells = []
            for key in keys:
                if key not in b1.index:
                    cells.append(NA)
                    continue
                r = b1.loc[key]
                cells.append(f"{r['p50_ms']:.2f} ({_f(r['speedup'], '.2f', 'x')})"
                             + (" (noisy)" if r["noisy"] else ""))
            tables[f"Batch-1 p50 latency at {size}, ms (speedup vs fp32 eager on the same machine)"][label] = cells
    return tables


def _runs_table(results_list: list[dict], labels: list[str]) -> pd.DataFrame:
    rows = []
    for r, label in zip(results_list, labels):
        m = r.get("machine_info") or {}
        gate = gate_frame(r)
        gate_text = ("not run" if gate is None else
                     _count_words({v: int((gate["verdict"] == v).sum()) for v in VERDICT_ORDER if v != "ok"})
                     or "all ok")
        rows.append({"Column": label, "Device": r["device"],
                     "Machine": f"{m.get('cpu_model') or NA} ({m.get('arch', NA)}), {m.get('cpu_count', NA)} cores",
                     "Threads": str((r.get("options") or {}).get("threads", m.get("threads", NA))),
                     "GPU": m.get("gpu_name") or "none",
                     "torch": (r.get("versions") or {}).get("torch") or NA,
                     "Commit": ((r.get("commit_info") or {}).get("id") or NA)[:12],
                     "Date (UTC)": r.get("created_utc", NA), "Gate": gate_text})
    return pd.DataFrame(rows)


def _merged_section(results_list: list[dict], labels: list[str], level: int, claims: bool) -> list[str]:
    h = "#" * level
    first = results_list[0]
    lines = [f"Dataset `{first['dataset']['id']}` ({first['dataset'].get('eval_samples', NA)} eval samples, "
             f"native input {native_size(first)}), checkpoint sha256 `{_shorten_sha(first['checkpoint']['sha256'])}`.",
             "", f"{h} Runs", "", _md(_runs_table(results_list, labels)), ""]
    for title, df in merged_frames(results_list, labels).items():
        lines += [f"{h} {title}", "", _md(df), ""]
    lines += [f"{h} Recommendation per machine", ""]
    for r, label in zip(results_list, labels):
        budget_pp = accuracy_budget(r)[0]
        for size in input_sizes(r):
            lines.append(_recommendation_line(r, recommend(r, size, budget_pp)).replace(
                "- **", f"- {label}, **", 1))
    lines.append("")
    problems = []
    for r, label in zip(results_list, labels):
        p = problems_frame(r)
        problems += [{"Column": label, "Item": x.id, "Status": x.status,
                      "Reason": x.reason if _present(x.reason) and x.reason else "(no reason recorded)"}
                     for x in p.itertuples()]
        problems += [{"Column": label, "Item": x.id, "Status": "noisy",
                      "Reason": f"cv {x.cv:.2f} > {NOISY_CV:g} at {x.input_size} batch {x.batch_size}"}
                     for x in noisy_frame(r).itertuples()]
    lines += [f"{h} Skipped, errored and noisy items", ""]
    lines += [_md(pd.DataFrame(problems)) if problems else "None.", ""]
    lines += [f"{NA}: not measured on that machine (see the table above)."
              " MB = 10^6 bytes. Accuracy is measured at the native input size.", ""]
    if claims:
        lines += claims_section(results_list, labels, level)
    return lines


def merge(results_list: list[dict], claims: bool = False, allow_mixed: bool = False) -> str:
    """One markdown document with a column per run; refuses runs on different data/checkpoints
    unless ``allow_mixed``, which puts each (dataset, checkpoint) in its own section."""
    if not results_list:
        raise UserError("nothing to merge: pass at least one results JSON file")
    for r in results_list:
        _check_shape(r)
    labels = run_labels(results_list)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(results_list):
        groups.setdefault(_group_key(r), []).append(i)
    if len(groups) > 1 and not allow_mixed:
        described = "; ".join(f"{labels[idx[0]]}: dataset {key[0]}, checkpoint {key[1][:12]}"
                              for key, idx in groups.items())
        raise UserError(f"cannot merge results from different datasets or checkpoints ({described}); "
                        "rerun them on the same dataset and checkpoint, or pass --allow-mixed "
                        "to put each in its own section")
    devices = list(dict.fromkeys(r["device"] for r in results_list))
    lines = ["# ResNet18 compression results", "",
             f"Merged from {len(results_list)} run{'s' if len(results_list) > 1 else ''} on "
             f"{len(devices)} device{'s' if len(devices) > 1 else ''} ({', '.join(devices)}); one column per run, "
             "labelled by its fingerprint (device · CPU · threads). Generated by `python -m bench report merge`; "
             "every number is a measurement from the results files"
             + (" except the tutorial's, in rows labelled CLAIM." if claims else "."), ""]
    if len(groups) == 1:
        lines += _merged_section(results_list, labels, 2, claims)
    else:
        lines += ["WARNING: these runs used different datasets or checkpoints. Each section below stands alone; "
                  "do not compare numbers across sections.", ""]
        for (dataset_id, sha), idx in groups.items():
            lines += [f"## Dataset {dataset_id}, checkpoint {sha[:12]}", ""]
            lines += _merged_section([results_list[i] for i in idx], [labels[i] for i in idx], 3, claims)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- claims check --------------------------------------------------------------------------

def _eager_item(results: dict, variant: str) -> dict | None:
    for it in _ok_items(results):
        if it["variant"] == variant and it["runtime"] == REFERENCE_RUNTIME:
            return it
    return None


def _claims_latency_entry(item: dict | None) -> dict | None:
    """Batch-1 latency at 224x224 (the tutorial's input), else the largest measured size."""
    if not item:
        return None
    b1 = [lat for lat in item.get("latency") or [] if lat["batch_size"] == 1]
    for lat in b1:
        if tuple(lat["input_size"]) == CLAIMS_PREFERRED_INPUT:
            return lat
    return max(b1, key=lambda lat: lat["input_size"][0] * lat["input_size"][1], default=None)


def claims_frame(results_list: list[dict], labels: list[str]) -> pd.DataFrame:
    """Claimed rows (kind "CLAIM") beside measured eager rows of every run (kind "measured")."""
    rows = []
    claimed_fp32 = TUTORIAL_CLAIMS[0]
    for claim in TUTORIAL_CLAIMS:
        rows.append({"variant": claim["variant"], "kind": "CLAIM", "source": f"tutorial {claim['section']}, {claim['what']}",
                     "size_mb": claim["size_mb"], "size_gzip_mb": None, "top1_pct": claim["top1_pct"],
                     "delta_pp": claim["top1_pct"] - claimed_fp32["top1_pct"],
                     "latency_ms": claim["latency_ms"], "latency_what": f"per image, {TUTORIAL_CLAIMS_HARDWARE}",
                     "speedup": claimed_fp32["latency_ms"] / claim["latency_ms"], "reason": None})
        for results, label in zip(results_list, labels):
            item = _eager_item(results, claim["variant"])
            if item is None:
                reason = next((p.reason for p in problems_frame(results).itertuples()
                               if p.id.startswith(f"{claim['variant']}-{REFERENCE_RUNTIME}-")), None)
                rows.append({"variant": claim["variant"], "kind": "measured", "source": label, "size_mb": None,
                             "size_gzip_mb": None, "top1_pct": None, "delta_pp": None, "latency_ms": None,
                             "latency_what": None, "speedup": None,
                             "reason": f"not measured: {reason}" if reason else "not measured in this run"})
                continue
            frame = items_frame(results).set_index("id")
            lat = _claims_latency_entry(item)
            ratio = lat.get("ratio_to_reference") if lat else None
            rows.append({
                "variant": claim["variant"], "kind": "measured", "source": label,
                "size_mb": frame.at[item["id"], "size_mb"], "size_gzip_mb": frame.at[item["id"], "size_gzip_mb"],
                "top1_pct": frame.at[item["id"], "top1_pct"], "delta_pp": frame.at[item["id"], "delta_pp"],
                "latency_ms": lat["p50_ms"] if lat else None,
                "latency_what": (f"batch-1 p50 at {shape_id(lat['input_size'])}, {REFERENCE_RUNTIME}, {results['device']}"
                                 + (" (noisy)" if _present(lat.get("cv")) and lat["cv"] > NOISY_CV else "")
                                 if lat else None),
                "speedup": 1 / ratio if ratio else None, "reason": None})
    return pd.DataFrame(rows)


def claim_explanations(results: dict, label: str, budget_pp: float | None = None) -> dict[str, str]:
    """topic -> one sentence per claim this run contradicts, chosen by rule from the numbers.

    Topics about the model (size, accuracy) are the same on every machine of a merge and are
    said once; topics about speed carry the machine label.
    """
    budget_pp = accuracy_budget(results)[0] if budget_pp is None else budget_pp
    claims = {c["variant"]: c for c in TUTORIAL_CLAIMS}
    fp32, prune, dyn = (_eager_item(results, v) for v in ("fp32", "prune-l1-20", "int8-dynamic"))
    if fp32 is None:
        return {f"no-fp32:{label}": f"{label}: fp32 eager was not measured, so no claim can be checked."}
    out: dict[str, str] = {}
    fp32_bytes = fp32.get("size_bytes")
    claimed_prune_ratio = claims["prune-l1-20"]["size_mb"] / claims["fp32"]["size_mb"]

    if prune and _present(prune.get("size_bytes")) and _present(fp32_bytes):
        ratio = prune["size_bytes"] / fp32_bytes
        if abs(ratio - 1) <= SAME_SIZE_FRACTION < abs(claimed_prune_ratio - 1):
            sentence = (f"Size, prune-l1-20 ({prune['size_bytes'] / MB_BYTES:.2f} MB measured vs "
                        f"{claims['prune-l1-20']['size_mb']:g} MB claimed): unstructured pruning only zeroes "
                        "weights: tensors stay dense, so the file does not shrink")
            if _present(prune.get("size_gzip_bytes")) and _present(fp32.get("size_gzip_bytes")):
                sentence += (f" (gzip size shows the sparsity: {prune['size_gzip_bytes'] / MB_BYTES:.2f} MB vs "
                             f"{fp32['size_gzip_bytes'] / MB_BYTES:.2f} MB for fp32)")
            out["size:prune-l1-20"] = sentence + "."

    if dyn and _present(dyn.get("size_bytes")) and _present(fp32_bytes) and dyn["size_bytes"] > 0.5 * fp32_bytes:
        classes = len((fp32.get("accuracy") or {}).get("per_class") or {})
        fc_text = ""
        if classes:
            fc_params = RESNET18_FC_IN_FEATURES * classes + classes
            params_m = fp32_bytes / FP32_BYTES_PER_PARAM / 1e6
            fc_text = (f" ({fc_params:,} parameters of about {params_m:.1f} M, estimated from the fp32 file at "
                       f"{FP32_BYTES_PER_PARAM} bytes per weight)")
        out["size:int8-dynamic"] = (
            f"Size, int8-dynamic ({dyn['size_bytes'] / MB_BYTES:.2f} MB measured vs "
            f"{claims['int8-dynamic']['size_mb']:g} MB claimed): dynamic quantization only touches nn.Linear, "
            f"and ResNet18's only Linear is the final fc{fc_text}, so the model cannot shrink to "
            f"{claims['int8-dynamic']['size_mb']:g} MB this way.")

    fp32_top1 = fp32["accuracy"]["top1"]
    deltas = {v: (it["accuracy"]["top1"] - fp32_top1) * 100
              for v, it in (("prune-l1-20", prune), ("int8-dynamic", dyn)) if it and it.get("accuracy")}
    claimed_deltas = {v: claims[v]["top1_pct"] - claims["fp32"]["top1_pct"] for v in ("prune-l1-20", "int8-dynamic")}
    if abs(fp32_top1 * 100 - claims["fp32"]["top1_pct"]) > budget_pp:
        compare = "; ".join(f"{v} {_pp(claimed_deltas[v])} pp claimed, {_pp(d)} pp measured" for v, d in deltas.items())
        out["accuracy"] = (
            f"Accuracy: different data: the tutorial's {claims['fp32']['top1_pct']:.1f}% is its own model on its "
            f"own CIFAR-10 pipeline, while the reference model scores {fp32_top1 * 100:.2f}% on this test set "
            f"(`{results['dataset']['id']}`, {fp32['accuracy']['n']} images), so compare the change vs fp32, "
            f"not absolute values" + (f": {compare}." if compare else "."))
    for variant, ours in deltas.items():
        if ours < claimed_deltas[variant] - budget_pp:
            out[f"accuracy:{variant}"] = (
                f"Accuracy, {variant}: loses {-ours:.2f} pp here vs {-claimed_deltas[variant]:.2f} pp claimed, "
                f"beyond the {budget_pp:g} pp budget: check before shipping.")

    speedups = {}
    for variant, item in (("prune-l1-20", prune), ("int8-dynamic", dyn)):
        lat = _claims_latency_entry(item)
        if lat and lat.get("ratio_to_reference"):
            speedups[variant] = (1 / lat["ratio_to_reference"], _present(lat.get("cv")) and lat["cv"] > NOISY_CV)
    claimed_speedups = {v: claims["fp32"]["latency_ms"] / claims[v]["latency_ms"] for v in ("prune-l1-20", "int8-dynamic")}
    gpu = (results.get("machine_info") or {}).get("gpu_name") or ""
    if speedups and TUTORIAL_CLAIMS_HARDWARE.split()[0] not in gpu:  # only another RTX is remotely comparable
        compare = "; ".join(f"{v} {claimed_speedups[v]:.2f}x claimed, {s:.2f}x measured{' (noisy)' if noisy else ''}"
                            for v, (s, noisy) in speedups.items())
        out[f"latency:{label}"] = (
            f"Latency on {label}: the tutorial timed each image on an {TUTORIAL_CLAIMS_HARDWARE}, so its "
            f"milliseconds are not comparable to these; compare speedups vs fp32 instead: {compare}.")
    why_no_speedup = {
        "prune-l1-20": "zeroed weights are still multiplied: dense kernels do the same work, so unstructured "
                       "pruning gives no speedup",
        "int8-dynamic": "dynamic quantization converts only the final fc; every convolution still runs in fp32, "
                        "so there is no speedup",
    }
    for variant, (speedup, noisy) in speedups.items():
        # A noisy timing is no evidence either way: say nothing rather than explain noise.
        if not noisy and abs(speedup - 1) <= SAME_SPEED_FRACTION < claimed_speedups[variant] - 1:
            out[f"speed:{variant}:{label}"] = (
                f"Speed, {variant} on {label} ({speedup:.2f}x measured vs {claimed_speedups[variant]:.2f}x "
                f"claimed): {why_no_speedup[variant]}.")
    return out


def claims_section(results_list: list[dict], labels: list[str], level: int = 2) -> list[str]:
    h = "#" * level
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
             f"started from ({TUTORIAL_CLAIMS_SOURCE}). Its latencies were measured on an {TUTORIAL_CLAIMS_HARDWARE}, "
             "so they are not comparable to CPU numbers. Measured rows are the eager runtime of each run above.",
             "", _md(table), "", f"{h}# Why our measurements differ", ""]
    sentences: dict[str, str] = {}
    for results, label in zip(results_list, labels):
        for topic, sentence in claim_explanations(results, label).items():
            sentences.setdefault(topic, sentence)  # a fact about the model is said once, not per machine
    lines += [f"- {s}" for s in sentences.values()] or ["No measurement contradicts a claim."]
    return lines + [""]
