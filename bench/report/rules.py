"""The rules that turn numbers into words; the report states each of them.

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

import math
from dataclasses import dataclass

import pandas as pd

from ..results import REFERENCE_VARIANT
from .frames import _present, _reference_item, input_sizes, items_frame, latency_frame, throughput_frame

DEFAULT_BUDGET_PP = 1.0
SAME_SIZE_FRACTION = 0.01  # a file within 1% of fp32 has not been compressed
SAME_SPEED_FRACTION = 0.05  # below the run-to-run spread of a quiet CPU: "no speed change"


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


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points no other point beats on both, fastest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_acc = [], -math.inf
    for i in order:
        if points[i][1] > best_acc:
            front.append(i)
            best_acc = points[i][1]
    return front


def summary_frame(results: dict, budget_pp: float | None = None) -> pd.DataFrame:
    """The headline table, numeric: one row per ok (variant, runtime) item, with its "good for" tags."""
    budget_pp = accuracy_budget(results)[0] if budget_pp is None else budget_pp
    df = items_frame(results)[["id", "variant", "runtime", "size_mb", "top1_pct", "ci_lo_pct", "ci_hi_pct",
                               "delta_pp", "pct_of_fp32"]].copy()
    lat = latency_frame(results)
    tput = throughput_frame(results)
    for size in input_sizes(results):
        b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == size)].set_index("id")
        for col in ("p50_ms", "p90_ms", "p90_bound_ms", "speedup", "noisy"):
            df[f"{col}@{size}"] = df["id"].map(b1[col])
        at_size = tput[tput["input_size"] == size]
        if not at_size.empty:
            largest = at_size["batch_size"].max()
            df[f"img_s@{size}/b{largest}"] = df["id"].map(
                at_size[at_size["batch_size"] == largest].set_index("id")["img_s"])
    tags = good_for(results, budget_pp)
    df["good_for"] = df["id"].map(lambda i: "; ".join(tags.get(i, [])))
    return df
