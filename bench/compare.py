"""Compare results files, the way ``pyperf compare_to`` and ``benchstat`` do: matched items side by
side with a verdict that a statistical test backs.

Latency: where both files have in-run ratios to the interleaved fp32-eager reference, B's ratio over
A's (machine drift and even a different machine cancel) with a bootstrap 95% interval; "slower" or
"faster" only when the interval excludes a tie and the change is beyond the between-run spread of
such ratios (results.QUIET_RATIO_SPREAD, or NOISY_RATIO_SPREAD for noisy series). Otherwise (the
reference item itself, or files without reference samples) p50s are compared and a one-sided
Mann-Whitney test on the raw samples decides, with the same spread as the smallest change.
Accuracy: the top-1 delta in points, with an exact McNemar test when both files scored the same
images (same dataset id and eval split); otherwise the delta alone, marked untested.

Pure functions over results documents; the CLI (bench/__main__.py) prints and sets the exit code.
"""
from __future__ import annotations

from compress.errors import UserError

from .results import NOISY_RATIO_SPREAD, QUIET_RATIO_SPREAD, cv_warn, fmt_ms, is_reference, shape_key
from .stats import mann_whitney_p, mcnemar_p, ratio_of_ratios, unpack_bits

ALPHA = 0.01  # the gate's significance level (bench/config.py): many series per comparison


def mismatch(a: dict, b: dict) -> str | None:
    """Why two results files do not measure the same thing (dataset or checkpoint); None if they do.
    Machines and devices may differ: comparing them is what the command is for."""
    why = []
    if a["dataset"]["id"] != b["dataset"]["id"]:
        why.append(f"datasets {a['dataset']['id']} vs {b['dataset']['id']}")
    if a["checkpoint"]["sha256"] != b["checkpoint"]["sha256"]:
        why.append(f"checkpoints {a['checkpoint']['sha256'][:12]} vs {b['checkpoint']['sha256'][:12]}")
    return "; ".join(why) or None


def _speed(factor: float) -> str:
    return f"{factor:.2f}x slower" if factor >= 1 else f"{1 / factor:.2f}x faster"


def compare_latency(a: dict, b: dict, noisy: bool, alpha: float = ALPHA, reference: bool = False) -> dict:
    """One latency series of A against the same series of B (each a results latency entry).
    ``reference``: the series is the fp32-eager reference itself, whose ratio is 1 by definition."""
    floor = 1 + (NOISY_RATIO_SPREAD if noisy else QUIET_RATIO_SPREAD)
    both_ratio = not reference and all(x.get("reference_samples_ms") and x.get("ratio_to_reference") for x in (a, b))
    if both_ratio:
        factor, lo, hi = ratio_of_ratios(a["samples_ms"], a["reference_samples_ms"],
                                         b["samples_ms"], b["reference_samples_ms"])
        if lo > 1 and factor > floor:
            verdict = "slower"
        elif hi < 1 and 1 / factor > floor:
            verdict = "faster"
        else:
            verdict = "not significant"
        evidence = f"ratio to reference, 95% CI {lo:.2f}-{hi:.2f}"
        p = None
    else:
        factor = b["p50_ms"] / a["p50_ms"]
        p_slow = mann_whitney_p(b["samples_ms"], a["samples_ms"], "greater")
        p_fast = mann_whitney_p(b["samples_ms"], a["samples_ms"], "less")
        p = min(p_slow, p_fast)
        if p_slow < alpha and factor > floor:
            verdict = "slower"
        elif p_fast < alpha and 1 / factor > floor:
            verdict = "faster"
        else:
            verdict = "not significant"
        evidence = f"p50, Mann-Whitney {'p < 0.001' if p < 0.001 else f'p = {p:.3f}'}"
    text = _speed(factor) if verdict != "not significant" else f"not significant ({factor:.2f}x)"
    return {"factor": factor, "verdict": verdict, "text": f"{text} ({evidence})", "p": p,
            "a_p50_ms": a["p50_ms"], "b_p50_ms": b["p50_ms"], "method": "ratio" if both_ratio else "raw"}


def compare_accuracy(a: dict, b: dict, paired: bool, alpha: float = ALPHA) -> dict | None:
    """Top-1 of one item in A and B (each a results accuracy block); None when either has none."""
    if not a or not b:
        return None
    delta_pp = (b["top1"] - a["top1"]) * 100
    p = None
    if paired and a.get("correct_b64") and b.get("correct_b64") and a["n"] == b["n"]:
        p = mcnemar_p(unpack_bits(a["correct_b64"], a["n"]), unpack_bits(b["correct_b64"], b["n"]))
    if p is None:
        verdict, how = ("same" if delta_pp == 0 else "untested"), "different images: no paired test"
    elif p < alpha:
        verdict, how = ("worse" if delta_pp < 0 else "better"), ("McNemar p < 0.001" if p < 0.001 else f"McNemar p = {p:.3f}")
    else:
        verdict, how = "not significant", f"McNemar p = {p:.3f}"
    return {"delta_pp": delta_pp, "p": p, "verdict": verdict, "text": f"{delta_pp:+.2f} pp ({how})",
            "a_top1": a["top1"], "b_top1": b["top1"]}


def compare(a: dict, b: dict, allow_mixed: bool = False, alpha: float = ALPHA) -> list[dict]:
    """Rows for every (variant, runtime) both files measured ("ok"), latency series matched by shape; items in
    only one file get a row saying so. UserError for different datasets or checkpoints unless
    ``allow_mixed`` (accuracy is then not compared)."""
    why = mismatch(a, b)
    if why and not allow_mixed:
        raise UserError(f"the files measure different things ({why}); pass --allow-mixed to compare latency anyway")
    paired = why is None and a["dataset"].get("eval_samples") == b["dataset"].get("eval_samples")
    # Matched by (variant, runtime): item ids carry the device, which may differ between machines.
    ok_a = {f"{it['variant']}/{it['runtime']}": it for it in a["items"] if it.get("status") == "ok"}
    ok_b = {f"{it['variant']}/{it['runtime']}": it for it in b["items"] if it.get("status") == "ok"}
    noisy_a, noisy_b = cv_warn(a), cv_warn(b)
    rows = []
    for item_id in [*ok_a, *(i for i in ok_b if i not in ok_a)]:
        if item_id not in ok_a or item_id not in ok_b:
            rows.append({"id": item_id, "metric": "item", "shape": None, "verdict": "unmatched",
                         "text": f"only in {'A' if item_id in ok_a else 'B'}"})
            continue
        ia, ib = ok_a[item_id], ok_b[item_id]
        if why is None:
            acc = compare_accuracy(ia.get("accuracy"), ib.get("accuracy"), paired, alpha)
            if acc:
                rows.append({"id": item_id, "metric": "top-1", "shape": None,
                             "a": f"{acc['a_top1']:.2%}", "b": f"{acc['b_top1']:.2%}", **acc})
        lat_b = {shape_key(x): x for x in ib.get("latency") or []}
        for la in ia.get("latency") or []:
            lb = lat_b.get(shape_key(la))
            if lb is None:
                continue
            noisy = (la.get("cv") or 0) > noisy_a or (lb.get("cv") or 0) > noisy_b
            lat = compare_latency(la, lb, noisy, alpha, reference=is_reference(ia))
            rows.append({"id": item_id, "metric": "latency", "shape": shape_key(la),
                         "a": fmt_ms(la["p50_ms"]), "b": fmt_ms(lb["p50_ms"]), **lat})
    return rows


def machines_note(a: dict, b: dict) -> str | None:
    """What a reader must know when the two runs come from different machines."""
    if a.get("fingerprint") == b.get("fingerprint"):
        return None
    return (f"machines differ (A: {a.get('fingerprint')}, B: {b.get('fingerprint')}): a latency verdict compares "
            "each item relative to its own run's fp32 eager (the fp32-eager rows compare raw p50s)")


def render(rows: list[dict], a_name: str, b_name: str, fmt: str = "text") -> str:
    from tabulate import tabulate

    table = [[r["id"], r["metric"], r.get("shape") or "", r.get("a", ""), r.get("b", ""), r["text"]] for r in rows]
    head = ["item", "metric", "shape", f"A: {a_name}", f"B: {b_name}", "B vs A"]
    return tabulate(table, headers=head, tablefmt="github" if fmt == "md" else "simple")


def failing(rows: list[dict], fail_on: set[str]) -> list[dict]:
    """Rows whose verdict is one of ``fail_on`` (e.g. {"slower", "worse"})."""
    return [r for r in rows if r["verdict"] in fail_on]
