"""The render step: frames -> markdown text (formatting only, no decisions), and the report files.

Every number printed comes from the results file (a measurement of that run) or from the
gate's findings stored in it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from compress.fsutil import atomic_write_bytes

from ..baselines import FINGERPRINT_RULES
from ..results import NOISY_RATIO_SPREAD, QUIET_RATIO_SPREAD, VERDICT_ORDER, cv_warn
from .frames import (
    _check_shape,
    _ok_items,
    _present,
    _reference_item,
    best_runtime_frame,
    confirm_frame,
    gate_frame,
    input_sizes,
    latency_frame,
    latency_pivot,
    native_size,
    noisy_frame,
    problems_frame,
    remeasured_frame,
    runtime_frames,
    runtime_wins_frame,
    size_title,
)
from .plots import accuracy_latency_png, latency_box_png
from .rules import SAME_SIZE_FRACTION, SAME_SPEED_FRACTION, Recommendation, accuracy_budget, recommend, summary_frame

NA = "—"


# --- formatting helpers --------------------------------------------------------------------

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


_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def escape_text(text: str) -> str:
    """Text from a results file made inert in markdown: ``&``, ``<`` and ``>`` as HTML entities
    (no raw HTML gets through) and line breaks as spaces (no new block starts). Table cells
    also escape pipes (``_cell``)."""
    return _CONTROL.sub(" ", str(text)).translate(_HTML_ESCAPES)


def escape_results(obj):
    """A copy of a results document with every string, dictionary keys included, passed through
    ``escape_text``: whatever a results file holds can then go into any line or cell of a report."""
    if isinstance(obj, str):
        return escape_text(obj)
    if isinstance(obj, dict):
        return {escape_text(k) if isinstance(k, str) else k: escape_results(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [escape_results(v) for v in obj]
    return obj


def _md(df: pd.DataFrame) -> str:
    # disable_numparse: cells are already formatted; tabulate would reformat "44.70" to "44.7".
    # Column names can come from results too (merge labels each run's column): pipes escaped.
    df = df.rename(columns=lambda c: str(c).replace("|", "\\|"))
    return df.map(_cell).to_markdown(index=False, disable_numparse=True)


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
    ] + _cost_lines(results) + ([f"- **Emulated ({m['emulated']})**: every latency and throughput here was measured under "
          "emulation and says nothing about real hardware; none is compared with baselines"]
         if m.get("emulated") else [])


def _cost_lines(results: dict) -> list[str]:
    """What the run cost: peak resident memory, and how fast evaluation images went through."""
    peak = (results.get("resources") or {}).get("peak_rss_bytes")
    speeds = [it["eval_img_s"] for it in results["items"] if it.get("eval_img_s")]
    if peak is None and not speeds:
        return []  # results files written before these were recorded
    parts = []
    if peak is not None:
        parts.append(f"peak resident memory {peak / 1e9:.2f} GB")
    if speeds:
        parts.append(f"evaluation {min(speeds):,.0f} to {max(speeds):,.0f} images/s per (variant, runtime), "
                     "decoding included")
    return [f"- Cost: {'; '.join(parts)}"]


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
    if rec.item_id == (_reference_item(results) or {}).get("id"):
        speed = "the fp32 eager reference itself"
    else:
        speed = f"{rec.speedup:.2f}x vs fp32 eager" if _present(rec.speedup) else "no interleaved fp32-eager reference"
    line = (f"{head}{rec.variant} on {rec.runtime}: batch-1 p50 {rec.p50_ms:.2f} ms ({speed}), "
            f"top-1 {_pp(rec.delta_pp)} pp vs fp32 (budget {rec.budget_pp:g} pp).")
    if rec.noisy:
        line += f" Its timing is noisy (cv > {cv_warn(results):g}): rerun before relying on it."
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
        "% of fp32": df["pct_of_fp32"].map(lambda x: _f(x, ".1f")),
    })
    for size in input_sizes(results):
        noisy = [_present(v) and bool(v) for v in df[f"noisy@{size}"]]  # missing: not measured, not noisy
        out[f"b1 p50 / p90 (99% bound) ms @{size}"] = [
            f"{_f(p50, '.2f')} / {_f(p90, '.2f')} ({_f(bound, '.2f')})" + (" (noisy)" if n else "")
            if _present(p50) else NA
            for p50, p90, bound, n in zip(df[f"p50_ms@{size}"], df[f"p90_ms@{size}"], df[f"p90_bound_ms@{size}"],
                                          noisy)]
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


def _fingerprint_rule_text(gate: dict) -> str:
    rule = gate.get("fingerprint_rule")
    if rule is None:  # files from before the rule was recorded
        return ("" if gate.get("fingerprint_match", True) else
                " WARNING: the baseline comes from a machine with a different fingerprint; latency "
                "verdicts compare different hardware.")
    return f" Compared with the entry of `{gate.get('baseline_fingerprint')}`, {FINGERPRINT_RULES[rule]}."


def _remeasured_table(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Item": df["id"], "Shape": df["input_size"], "Attempt": df["attempt"],
        "Discarded p50 ms": df["p50_ms"].map(lambda x: _f(x, ".2f")),
        "Reference p50 ms": df["reference_p50_ms"].map(lambda x: _f(x, ".2f")),
        "Kept p50 ms": df["kept_p50_ms"].map(lambda x: _f(x, ".2f")),
        "Why": df["why"].map(lambda w: w.replace("\n", "; ")),
    })


def _confirm_table(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Item": df["id"], "Shape": df["input_size"], "Earlier runs": df["history_runs"],
        "Their ratio": df["history_ratio"].map(lambda x: _f(x, ".3f")),
        "Between-run sd": df["history_sd"].map(lambda x: _f(x, ".1%")),
        "This run": df["ratio_to_reference"].map(lambda x: _f(x, ".3f")),
        "Change": df["factor"].map(lambda x: _f(x, ".2f", "x")),
        "One run confirms": df["detectable_change"].map(lambda x: f">= {x:.0%}"),
        "Measured again": df["remeasured"].map(lambda b: "yes" if b else ""),
        "Verdict": df["verdict"].fillna(NA),
    })


def _noisy_lines(results: dict) -> list[str]:
    noisy = noisy_frame(results)
    if noisy.empty:
        return [f"No sample has cv > {cv_warn(results):g}."]
    lines = []
    for r in noisy.itertuples():
        lines.append(f"- WARNING: `{r.id}` at {r.input_size} batch {r.batch_size} may be unstable: the standard "
                     f"deviation ({r.stdev_ms:.2f} ms) is {r.cv:.0%} of the mean ({r.mean_ms:.2f} ms)")
    lines.append("")
    lines.append("Rerun on an idle machine (no other jobs, fixed CPU frequency, pinned threads) or with more "
                 "rounds; the gate does not compare noisy samples.")
    return lines


def _reason(reason) -> str:
    return reason if _present(reason) and reason else "(no reason recorded)"


def _problems_table(problems: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"Item": problems["id"], "Status": problems["status"], "Reason": problems["reason"].map(_reason)})


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
        "- Top-1 % with its 95% Wilson interval; Δ vs fp32 is against the fp32-eager item of this run (pp); "
        "% of fp32 is top-1 over fp32's, the form MLPerf states accuracy targets in (\"99% of fp32\").",
        "- Latency: batch-1 p50 / p90 over the timed samples; in brackets the p90 that holds with 99% "
        "confidence (MLPerf's early-stopping bound: an order statistic chosen by the binomial distribution; "
        "— below 44 samples). Speedup = 1 / ratio_to_reference, the ratio of "
        "medians against fp32 eager timed interleaved in the same rounds (so machine drift cancels).",
        f"- Accuracy budget: {budget_pp:g} pp ({budget_source}). Good for: \"accuracy loss\" when the drop is "
        "beyond the budget; \"no gain\" when size is within "
        f"{SAME_SIZE_FRACTION:.0%} and every clean batch-1 p50 within {SAME_SPEED_FRACTION:.0%} of fp32 on the "
        "same runtime; \"smallest within budget\" / \"fastest at <size>\" among rows within the budget.",
    ]
    if any(r != ref_id for r in ref_ids):
        notes.append(f"- Note: some speedups are against another reference: {', '.join(ref_ids)}.")
    return notes


def _best_runtime_table(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Variant": df["variant"], "Fastest runtime": df["runtime"],
        "b1 p50 ms": [_f(x, ".2f") + (" (noisy)" if n else "") for x, n in zip(df["p50_ms"], df["noisy"])],
        "Speedup vs fastest fp32": [_f(x, ".2f", "x") + (f" [{lo:.2f}, {hi:.2f}]" if _present(lo) else "")
                                    for x, lo, hi in zip(df["speedup_vs_fastest_fp32"], df["speedup_lo"],
                                                         df["speedup_hi"])],
        "Size (MB)": [_f(x, ".2f") for x in df["size_mb"]],
        "Smaller than fp32": [_f(x, ".1f", "x") for x in df["smaller_than_fp32"]],
        "Δ vs fp32 (pp)": [_pp(x) for x in df["delta_pp"]],
    })


def _runtime_wins_lines(results: dict) -> list[str]:
    lines = []
    for size in input_sizes(results):
        wins = runtime_wins_frame(results, size)
        if wins.empty:
            continue
        table = pd.DataFrame({
            "Variant": wins["variant"], "Winner": wins["winner"], "b1 p50 ms": [_f(x, ".2f") for x in wins["winner_p50_ms"]],
            "Runner-up": wins["runner_up"], "Runner-up p50 ms": [_f(x, ".2f") for x in wins["runner_up_p50_ms"]],
            "Margin": [f"{m:.2f}x [{lo:.2f}, {hi:.2f}]" for m, lo, hi in
                       zip(wins["margin"], wins["margin_lo"], wins["margin_hi"])],
            "Verdict": [v if v == "clear" else f"{v} (< {f:.2f}x)" if m <= f else f"{v} (interval reaches 1)"
                        for v, m, f in zip(wins["verdict"], wins["margin"], wins["noise_floor"])],
        })
        lines += ["", f"### Which runtime wins, {size_title(results, size)}", "",
                  "Per variant, batch 1: margin = how much slower the runner-up is, from each item's ratio to the "
                  "fp32-eager reference it was interleaved with (drift between the two items cancels), with a "
                  f"bootstrap 95% interval. \"clear\" needs the interval above 1 and a margin beyond the between-run "
                  f"spread of such ratios ({1 + QUIET_RATIO_SPREAD:.2f}x; {1 + NOISY_RATIO_SPREAD:.2f}x where either "
                  "series is noisy).", "", _md(table)]
    return lines


# --- the report files ----------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "unnamed"


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
                  "compressed model must beat. " + (
                      "Speedup: the fp32 item's ratio to its interleaved fp32-eager reference over this "
                      "item's (machine drift between the two items cancels), with a bootstrap 95% interval; "
                      f"between runs such ratios move by up to {QUIET_RATIO_SPREAD:.0%} "
                      f"({NOISY_RATIO_SPREAD:.0%} for noisy series)."
                      if best.attrs["by_ratio"] else
                      "Medians of separate items, not interleaved: read differences under ~20% as noise."),
                  "", _md(_best_runtime_table(best))]
    lines += _runtime_wins_lines(results)
    summary = summary_frame(results, budget_pp)
    lines += ["", "## Summary", "", "One row per measured (variant, runtime).", ""]
    lines += [_md(_summary_table(results, summary)) if not summary.empty else "No item was measured.", ""]

    lines += ["## Gate verdicts", ""]
    gate = gate_frame(results)
    if gate is None:
        lines += ["Gate not run: this results file has no gate findings.", ""]
    else:
        g = results["gate"]
        lines += [f"Baseline: `{g.get('baseline_file') or NA}`." + _fingerprint_rule_text(g), ""]
        lines += [_md(_gate_table(gate)) if not gate.empty else "The gate ran and reported no findings.", ""]

    lines += [f"## Noisy samples (cv > {cv_warn(results):g})", "", *_noisy_lines(results), ""]
    confirmed = confirm_frame(results)
    if not confirmed.empty:
        lines += ["## Against this machine's history", "",
                  "Each ratio to the reference beside the same series' earlier quiet runs (--history-store). A ratio "
                  "that stands out is measured again with more rounds; it is \"slower\" when the prediction test "
                  "still puts it above the history. \"One run confirms\" is the power of that check: the "
                  "smallest slowdown a single run confirms 80% of the time at this series' between-run spread; "
                  "smaller ones are left to the trend gate (`python -m bench history --gate`).", "",
                  _md(_confirm_table(confirmed)), ""]
    remeasured = remeasured_frame(results)
    if not remeasured.empty:
        lines += ["## Latencies measured again", "",
                  "The gate found these regressed (--latency-retries) or standing out from their history "
                  "(--latency-confirm) and measured them again after waiting for the machine to go quiet; the "
                  "tables above show the last measurement, which the gate judged.", "",
                  _md(_remeasured_table(remeasured)), ""]
    problems = problems_frame(results)
    lines += ["## Skipped and errored items", ""]
    lines += [_md(_problems_table(problems)) if not problems.empty else "None: every item ran.", ""]

    lines += ["## Per runtime", ""]
    notes = results.get("options", {}).get("runtime_notes") or {}
    for runtime, df in runtime_frames(results).items():
        lines += [f"### {runtime}", ""] + ([f"Note: {runtime} is {notes[runtime]}.", ""] if runtime in notes else [])
        lines += [_md(_runtime_table(df)), ""]
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
