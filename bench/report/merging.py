"""Several results files (one per machine or run) -> one markdown document, a column per run.

Runs on different datasets or checkpoints are refused unless the caller allows a mix; then
each (dataset, checkpoint) gets its own section, since their numbers are not comparable. The same
run passed twice is refused (it would be two columns of one measurement). Every string taken from
a results file is escaped before it reaches the document (markdown.escape_results): a results file
cannot put raw HTML, line breaks or table pipes into the merged markdown.
"""
from __future__ import annotations

import hashlib
import json

import pandas as pd

from compress.errors import UserError

from ..devices import machine_label
from ..results import VERDICT_ORDER, cv_warn
from .claims import claims_section
from .frames import (
    _check_shape,
    _ok_items,
    _present,
    _runtime_order,
    _variant_order,
    gate_frame,
    input_sizes,
    items_frame,
    latency_frame,
    native_size,
    noisy_frame,
    problems_frame,
)
from .markdown import (
    NA,
    _count_words,
    _f,
    _md,
    _pp,
    _reason,
    _recommendation_line,
    _shorten_sha,
    escape_results,
)
from .rules import accuracy_budget, recommend


def _label(results: dict) -> str:
    if results.get("machine_info"):
        return machine_label(results["device"], results["machine_info"])
    return (results.get("fingerprint") or results["device"]).replace("|", " · ")


def run_labels(results_list: list[dict]) -> list[str]:
    """Column label per run: device, CPU, threads (devices.machine_label), made unique by date then index."""
    labels = [_label(r) for r in results_list]
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
                      "Reason": _reason(x.reason)}
                     for x in p.itertuples()]
        problems += [{"Column": label, "Item": x.id, "Status": "noisy",
                      "Reason": f"cv {x.cv:.2f} > {cv_warn(r):g} at {x.input_size} batch {x.batch_size}"}
                     for x in noisy_frame(r).itertuples()]
    lines += [f"{h} Skipped, errored and noisy items", ""]
    lines += [_md(pd.DataFrame(problems)) if problems else "None.", ""]
    lines += [f"{NA}: not measured on that machine (see the table above)."
              " MB = 10^6 bytes. Accuracy is measured at the native input size.", ""]
    if claims:
        lines += claims_section(results_list, labels, level)
    return lines


def _run_identity(results: dict) -> tuple:
    """What names one run: the machine, its settings, when it started and from which commit."""
    return ((results.get("machine_info") or {}).get("node"), results.get("fingerprint"), results["device"],
            results.get("created_utc"), (results.get("commit_info") or {}).get("id"),
            results["dataset"]["id"], results["checkpoint"]["sha256"])


def refuse_duplicates(results_list: list[dict], sources: list[str] | None = None) -> None:
    """UserError if one run appears twice: the same file given twice, a copy of it, or another
    rendering of the same run (same machine, settings, start time and commit)."""
    seen: dict[object, int] = {}
    for i, r in enumerate(results_list):
        content = hashlib.sha256(json.dumps(r, sort_keys=True, default=str).encode()).hexdigest()
        for key in (("content", content), ("run", _run_identity(r))):
            if key in seen:
                j = seen[key]
                named = (f"{sources[j]} and {sources[i]}" if sources and len(sources) == len(results_list)
                         else f"results #{j + 1} and #{i + 1}")
                what = "are identical" if key[0] == "content" else "are the same run"
                raise UserError(f"{named} {what} (fingerprint {r.get('fingerprint')!r}, started "
                                f"{r.get('created_utc')}): each run would appear as two columns; pass each "
                                "results file once")
            seen[key] = i


def merge(results_list: list[dict], claims: bool = False, allow_mixed: bool = False,
          sources: list[str] | None = None) -> str:
    """One markdown document with a column per run; refuses runs on different data/checkpoints
    unless ``allow_mixed``, which puts each (dataset, checkpoint) in its own section. Refuses the
    same run twice; ``sources`` (the files' names, in order) only make that message name them."""
    if not results_list:
        raise UserError("nothing to merge: pass at least one results JSON file")
    for r in results_list:
        _check_shape(r)
    refuse_duplicates(results_list, sources)
    results_list = [escape_results(r) for r in results_list]
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
