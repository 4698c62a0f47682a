"""bench/report/ and `python -m bench report`: golden files, the rules, merge, claims, CLI.

Regenerate the golden markdown after an intended change with
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_report.py
and review the diff like code: every changed number must have a reason.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pandas as pd
import pytest

from bench import report
from bench.__main__ import main
from bench.report.claims import CLAIMS_PATH, load_claims, tutorial_claims
from bench.results import validate_results
from compress.errors import UserError

DATA = Path(__file__).parent / "data" / "report"
REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.fixture
def x86() -> dict:
    return load("results-x86.json")


@pytest.fixture
def rpi() -> dict:
    return load("results-rpi.json")


def item(results: dict, item_id: str) -> dict:
    return next(it for it in results["items"] if it["id"] == item_id)


def check_golden(text: str, name: str) -> None:
    golden = DATA / name
    if UPDATE_GOLDEN:
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == golden.read_text(encoding="utf-8"), f"{name} differs; if intended, rerun with UPDATE_GOLDEN=1"


def table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown table rows whose first cell is ``first_cell``."""
    rows = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            rows.append(cells)
    return rows


# --- fixtures follow the schema -------------------------------------------------------------

@pytest.mark.parametrize("name", ["results-x86.json", "results-rpi.json"])
def test_fixtures_are_valid_results(name):
    validate_results(load(name), name)


# --- golden files ---------------------------------------------------------------------------

def test_render_matches_golden(x86, tmp_path):
    md_path = report.render_report(x86, tmp_path)
    assert md_path == tmp_path / "cifar10-x86.md"
    check_golden(md_path.read_text(encoding="utf-8"), "cifar10-x86.golden.md")


def test_merge_with_claims_matches_golden(x86, rpi):
    check_golden(report.merge([x86, rpi], claims=True), "merge-x86-rpi-claims.golden.md")


def test_render_is_byte_identical_across_runs(x86, tmp_path):
    first = report.render_report(x86, tmp_path / "a")
    second = report.render_report(x86, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    pngs_a = sorted((tmp_path / "a" / "cifar10-x86-plots").iterdir())
    pngs_b = sorted((tmp_path / "b" / "cifar10-x86-plots").iterdir())
    assert [p.name for p in pngs_a] == [p.name for p in pngs_b]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(pngs_a, pngs_b))


def test_environment_block_comes_from_the_results(x86):
    text = report.render_markdown(x86)
    env = text.split("## Environment")[1].split("##")[0]
    for expected in ("AMD EPYC 9R14", "x86_64", "2 cores", "2 threads", "GPU: none", "torch 2.14.1",
                     "onnxruntime 1.32.0", "3c1f9a2b7d4e", "cifar10-jpeg-5d1e0c2a", "10000 eval samples",
                     "9f2c4e7a1b3d", "2026-11-30T03:00:00Z"):
        assert expected in env


# --- plots ----------------------------------------------------------------------------------

def test_plots_are_valid_pngs_referenced_relatively(x86, tmp_path):
    md_path = report.render_report(x86, tmp_path)
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md_path.read_text(encoding="utf-8"))
    assert len(refs) == 4  # accuracy-vs-latency and latency boxes, at 32x32 and 224x224
    for ref in refs:
        assert not Path(ref).is_absolute()
        png = (md_path.parent / ref).read_bytes()
        assert png.startswith(PNG_SIGNATURE)
        assert b"Matplotlib" not in png  # no version string: stable bytes across upgrades of nothing else


def test_pareto_front():
    # (latency, accuracy): the slow-and-worse point (3) and the tie-but-worse point (1) are dominated.
    points = [(5.0, 83.3), (5.0, 82.0), (12.0, 84.0), (20.0, 83.0), (3.0, 80.0)]
    assert report.pareto_front(points) == [4, 0, 2]


# --- the rules ------------------------------------------------------------------------------

def test_good_for_rule_on_fixture(x86):
    assert report.good_for(x86) == {
        "fp32-eager-x86": ["reference"],
        "fp32-onnxruntime-x86": ["fastest at 32x32"],
        # gzip size is smaller while the raw file is not: zeroed weights in dense tensors
        "prune-l1-20-eager-x86": ["no gain: masks keep tensors dense"],
        "prune-l1-20-onnxruntime-x86": ["no gain: same size and speed as fp32"],
        "int8-dynamic-eager-x86": ["no gain: same size and speed as fp32"],
        "int8-static-eager-x86": ["accuracy loss: check before shipping"],
        "int8-static-onnxruntime-x86": ["smallest within budget", "fastest at 224x224"],
    }


def test_good_for_follows_the_numbers(x86):
    # Make the pruned eager file really smaller and faster: it gains, so "no gain" must go.
    pruned = item(x86, "prune-l1-20-eager-x86")
    pruned["size_bytes"] = pruned["size_bytes"] // 2
    for lat in pruned["latency"]:
        lat["p50_ms"] *= 0.5
    tags = report.good_for(x86)
    assert not any(t.startswith("no gain") for t in tags["prune-l1-20-eager-x86"])
    # Lowering the budget below int8-static-onnxruntime's drop (0.69 pp) takes its tags away.
    tags = report.good_for(x86, budget_pp=0.5)
    assert tags["int8-static-onnxruntime-x86"] == ["accuracy loss: check before shipping"]


def test_recommendation_picks_fastest_within_budget(x86):
    rec = report.recommend(x86, "224x224")
    assert rec.item_id == "int8-static-onnxruntime-x86"  # int8-static eager is slower and out of budget anyway
    assert rec.budget_pp == 1.0
    # Out of budget, the next fastest within budget wins.
    rec = report.recommend(x86, "224x224", budget_pp=0.5)
    lat = report.latency_frame(x86)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == "224x224")
             & lat["id"].isin(["fp32-onnxruntime-x86", "prune-l1-20-onnxruntime-x86"])]
    assert rec.item_id == b1.sort_values("p50_ms")["id"].iloc[0]


def test_each_variant_is_compared_on_its_fastest_runtime_with_the_fastest_fp32(x86):
    df = report.best_runtime_frame(x86, "224x224").set_index("variant")
    lat = report.latency_frame(x86)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == "224x224")]
    # Every row has its ratio to the interleaved reference: fastest and speedup come from those.
    assert df.attrs["by_ratio"]
    bar = b1[b1["variant"] == "fp32"]["ratio_to_reference"].min()  # fp32 on its fastest runtime, not eager
    for variant, row in df.iterrows():
        mine = b1[b1["variant"] == variant].sort_values("ratio_to_reference")
        assert row["runtime"] == mine["runtime"].iloc[0] and row["p50_ms"] == mine["p50_ms"].iloc[0]
        assert row["speedup_vs_fastest_fp32"] == pytest.approx(bar / mine["ratio_to_reference"].iloc[0], rel=0.02)
        if variant != "fp32":
            assert row["speedup_lo"] <= row["speedup_vs_fastest_fp32"] <= row["speedup_hi"]
    assert df.loc["fp32", "speedup_vs_fastest_fp32"] == 1.0 and pd.isna(df.loc["fp32", "speedup_lo"])
    assert report.best_runtime_frame(x86, "999x999").empty


def test_without_interleaved_ratios_the_fastest_runtime_falls_back_to_raw_medians(x86):
    bare = copy.deepcopy(x86)
    for it in bare["items"]:
        for lat in it.get("latency") or []:
            lat["ratio_to_reference"] = None
    df = report.best_runtime_frame(bare, "224x224").set_index("variant")
    assert not df.attrs["by_ratio"] and df["speedup_lo"].isna().all()
    lat = report.latency_frame(bare)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == "224x224")]
    bar = b1[b1["variant"] == "fp32"]["p50_ms"].min()
    for variant, row in df.iterrows():
        assert row["p50_ms"] == b1[b1["variant"] == variant]["p50_ms"].min()
        assert row["speedup_vs_fastest_fp32"] == pytest.approx(bar / row["p50_ms"])
    assert "Medians of separate items" in report.render_markdown(bare)


def test_which_runtime_wins_uses_in_run_ratios_and_says_when_it_is_a_tie(x86):
    from bench.results import NOISY_RATIO_SPREAD, QUIET_RATIO_SPREAD

    wins = report.runtime_wins_frame(x86, "224x224").set_index("variant")
    lat = report.latency_frame(x86)
    b1 = lat[(lat["batch_size"] == 1) & (lat["input_size"] == "224x224")]
    assert not wins.empty
    for variant, row in wins.iterrows():
        mine = b1[b1["variant"] == variant].sort_values("ratio_to_reference")
        assert [row["winner"], row["runner_up"]] == list(mine["runtime"].iloc[:2])
        expected = mine["ratio_to_reference"].iloc[1] / mine["ratio_to_reference"].iloc[0]
        assert row["margin"] == pytest.approx(expected, rel=0.02)  # medians of the raw samples
        assert row["margin_lo"] <= row["margin"] <= row["margin_hi"]
        floor = 1 + (NOISY_RATIO_SPREAD if mine["noisy"].iloc[:2].any() else QUIET_RATIO_SPREAD)
        clear = row["margin_lo"] > 1 and row["margin"] > floor
        assert row["verdict"] == ("clear" if clear else "inside the noise")
    text = report.render_markdown(x86)
    assert "### Which runtime wins, 224x224" in text


def test_a_runtime_note_is_printed_with_its_table(x86):
    x86 = copy.deepcopy(x86)
    x86["options"]["runtime_notes"] = {"onnxruntime": "deprecated by its vendor, say"}
    text = report.render_markdown(x86)
    assert "### onnxruntime\n\nNote: onnxruntime is deprecated by its vendor, say." in text
    assert "Note: eager" not in text


def test_recommendation_excludes_the_faster_item_beyond_budget(x86):
    # Make int8-static eager the fastest at 224x224: with its -1.36 pp drop it must still not win.
    for lat in item(x86, "int8-static-eager-x86")["latency"]:
        lat["p50_ms"] = lat["p90_ms"] = 0.01
    assert report.recommend(x86, "224x224").item_id == "int8-static-onnxruntime-x86"


def test_budget_comes_from_the_gate(x86):
    assert report.accuracy_budget(x86) == (1.0, "the gate's accuracy check")
    x86["gate"]["findings"][0]["limit"] = 0.5
    assert report.accuracy_budget(x86)[0] == 0.5
    assert report.recommend(x86, "224x224").item_id != "int8-static-onnxruntime-x86"
    del x86["gate"]
    assert report.accuracy_budget(x86) == (report.DEFAULT_BUDGET_PP, "default")


def test_no_recommendation_without_fp32_eager(x86):
    item(x86, "fp32-eager-x86")["status"] = "error"
    item(x86, "fp32-eager-x86")["reason"] = "out of memory"
    rec = report.recommend(x86, "224x224")
    assert rec.item_id is None and "fp32-eager was not measured" in rec.why_none
    assert "no recommendation" in report.render_markdown(x86)


def test_summary_numbers_come_from_the_results(x86):
    df = report.summary_frame(x86).set_index("id")
    it = item(x86, "int8-static-onnxruntime-x86")
    b1_224 = next(lat for lat in it["latency"] if lat["input_size"] == [224, 224] and lat["batch_size"] == 1)
    row = df.loc["int8-static-onnxruntime-x86"]
    assert row["size_mb"] == it["size_bytes"] / 1e6
    assert row["p50_ms@224x224"] == b1_224["p50_ms"]
    assert row["speedup@224x224"] == pytest.approx(1 / b1_224["ratio_to_reference"])
    fp32_top1 = item(x86, "fp32-eager-x86")["accuracy"]["top1"]
    assert row["delta_pp"] == pytest.approx((it["accuracy"]["top1"] - fp32_top1) * 100)
    assert row["img_s@224x224/b32"] == it["throughput"][-1]["img_s"]


def test_skipped_and_errored_items_are_listed_with_reasons(x86):
    text = report.render_markdown(x86)
    section = text.split("## Skipped and errored items")[1].split("##")[0]
    assert "int8-dynamic-onnxruntime-x86" in section and "no ONNX symbolic" in section
    assert "fp16-eager-x86" in section and "not a deployment target" in section


def test_noisy_samples_are_warned(x86):
    text = report.render_markdown(x86)
    section = text.split("## Noisy samples")[1].split("##")[0]
    assert "WARNING: `int8-dynamic-eager-x86` at 32x32 batch 1 may be unstable" in section
    assert "(noisy)" in text.split("## Summary")[1].split("##")[0]


def test_noisy_threshold_is_the_gates_cv_warn(x86, rpi):
    # int8-dynamic eager at 32x32 batch 1 has cv 0.20: noisy at the default cv_warn (0.10).
    assert "cv_warn" not in x86["gate"]
    lat = report.latency_frame(x86).set_index(["id", "input_size", "batch_size"])
    series = ("int8-dynamic-eager-x86", "32x32", 1)
    assert lat.at[series, "cv"] == 0.2 and lat.at[series, "noisy"]
    assert "cv 0.20 > 0.1 at 32x32 batch 1" in report.merge([x86, rpi])
    # The gate of this run allowed cv up to 0.5: the report must not call the series noisy.
    x86["gate"]["cv_warn"] = 0.5
    validate_results(x86, "results-x86.json")
    assert not report.latency_frame(x86)["noisy"].any()
    text = report.render_markdown(x86)
    assert "## Noisy samples (cv > 0.5)" in text and "No sample has cv > 0.5." in text
    assert "(noisy)" not in text and "WARNING: `int8-dynamic-eager-x86`" not in text
    merged = report.merge([x86, rpi], claims=True)
    assert "cv 0.20 >" not in merged and "(noisy)" not in merged


def test_gate_verdicts_regressions_first(x86):
    gate = report.gate_frame(x86)
    assert gate["verdict"].tolist()[0] == "regression"
    assert gate["verdict_text"].tolist()[0] == "1.31x slower"
    text = report.render_markdown(x86)
    rows = table_rows(text, "int8-static-onnxruntime-x86")
    assert any("1.31x slower" in r for r in rows)


def test_gate_not_run(rpi):
    assert report.gate_frame(rpi) is None
    assert "Gate not run" in report.render_markdown(rpi)


def test_pipes_in_messages_do_not_break_tables(x86):
    x86["gate"]["findings"][0]["message"] = "a | b"
    assert "a \\| b" in report.render_markdown(x86)


# --- merge ----------------------------------------------------------------------------------

def test_merge_has_a_column_per_device(x86, rpi):
    text = report.merge([x86, rpi])
    header = next(line for line in text.splitlines() if line.startswith("| Variant"))
    assert "x86 · AMD EPYC 9R14 · threads=2" in header and "rpi · Cortex-A76 · threads=4" in header
    assert "CLAIM" not in text
    fp32 = table_rows(text, "fp32")
    assert any("143.56" in " ".join(r) for r in fp32)  # rpi's fp32 eager p50 at 224x224


def test_merge_same_device_different_threads_is_distinguishable(x86):
    four = copy.deepcopy(x86)
    four["fingerprint"] = "x86|AMD EPYC 9R14|threads=4"
    four["options"]["threads"] = four["machine_info"]["threads"] = 4
    assert report.run_labels([x86, four]) == ["x86 · AMD EPYC 9R14 · threads=2", "x86 · AMD EPYC 9R14 · threads=4"]
    text = report.merge([x86, four])
    assert "threads=2" in text and "threads=4" in text


def test_merge_identical_fingerprints_get_distinct_labels(x86):
    again = copy.deepcopy(x86)
    again["created_utc"] = "2026-12-01T03:00:00Z"
    labels = report.run_labels([x86, again, copy.deepcopy(again)])
    assert len(set(labels)) == 3


@pytest.mark.parametrize("field", ["dataset", "checkpoint"])
def test_merge_refuses_different_dataset_or_checkpoint(x86, rpi, field):
    if field == "dataset":
        rpi["dataset"]["id"] = "cifar10-jpeg-00000000"
    else:
        rpi["checkpoint"]["sha256"] = "0" * 64
    with pytest.raises(UserError, match="different datasets or checkpoints.*--allow-mixed"):
        report.merge([x86, rpi])
    text = report.merge([x86, rpi], allow_mixed=True)
    assert "WARNING: these runs used different datasets or checkpoints" in text
    assert text.count("\n## Dataset ") == 2


def test_merge_of_nothing_is_an_error():
    with pytest.raises(UserError):
        report.merge([])


def test_merge_refuses_the_same_results_twice(x86, rpi):
    # The same file twice used to give two columns of one run.
    with pytest.raises(UserError, match=r"results #1 and #3 are identical .*pass each results file once") as err:
        report.merge([x86, rpi, copy.deepcopy(x86)])
    assert "\n" not in str(err.value)
    # A copy of the same run with its gate re-run (other content, same run) is refused too.
    regated = copy.deepcopy(x86)
    regated["gate"]["findings"] = []
    with pytest.raises(UserError, match=r"a\.json and b\.json are the same run"):
        report.merge([x86, regated], sources=["a.json", "b.json"])
    # Another run on the same machine is a column of its own.
    later = copy.deepcopy(x86)
    later["created_utc"] = "2026-12-01T03:00:00Z"
    assert report.merge([x86, later]).count("x86 · AMD EPYC 9R14 · threads=2 @ ") >= 2


def test_cli_merge_refuses_the_same_file_twice(tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    argv = ["report", "merge", str(DATA / "results-x86.json"), str(DATA / "results-x86.json"), "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "identical" in err and not out.exists()


HOSTILE = '<img src=x onerror="alert(1)"> & <script>alert(2)</script>'


def test_merge_escapes_html_and_pipes_from_results(x86, rpi):
    """Every string a results file brings is escaped: no raw HTML, no line break that starts a new
    block, no pipe that splits a table cell."""
    x86["fingerprint"] = f"x86|{HOSTILE}|threads=2"
    x86["machine_info"]["cpu_model"] = HOSTILE + " | col"
    x86["commit_info"]["id"] = "<b>abc</b>"
    x86["versions"]["torch"] = "2.10\n\n<iframe src=//evil>"
    problem = next(it for it in x86["items"] if it["status"] != "ok")
    problem["reason"] = HOSTILE + "\n| injected | row |"
    rpi["device"] = "rpi<svg onload=alert(3)>"
    text = report.merge([x86, rpi], claims=True)
    for raw in ("<img", "<script", "<b>", "<iframe", "<svg"):
        assert raw not in text, raw
    assert "&lt;img src=x onerror=\"alert(1)\"&gt; &amp; &lt;script&gt;" in text
    assert "&lt;svg onload=alert(3)&gt;" in text
    assert "\\| injected \\| row \\|" in text  # inside its cell, on its row
    assert not any(line.startswith("| injected") for line in text.splitlines())
    lines = text.splitlines()
    for i, line in enumerate(lines):  # every row of every table has as many cells as its header
        if line.startswith("|") and not lines[i - 1].startswith("|"):
            cells = line.replace("\\|", "").count("|")
            for row in lines[i + 1:]:
                if not row.startswith("|"):
                    break
                assert row.replace("\\|", "").count("|") == cells, row


# --- claims ---------------------------------------------------------------------------------

def test_claims_are_data_with_a_source():
    claims = tutorial_claims()
    assert [(c.variant, c.size_mb, c.top1_pct, c.latency_ms_per_image) for c in claims.claims] == [
        ("fp32", 44.7, 92.0, 15.0), ("prune-l1-20", 35.8, 91.5, 12.0), ("int8-dynamic", 8.4, 90.8, 8.0)]
    assert "../shared/seed/" in claims.source
    assert claims.claims[0].section == "tutorial §2, fp32 baseline"
    assert {c.hardware for c in claims.claims} == {"RTX 3090 GPU"}
    assert claims.claims[2].size_differs.min_fraction_of_fp32 == 0.5


def test_claims_file_ships_in_the_wheel():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "*.toml" in setuptools["package-data"]["bench.report"]


BAD_CLAIMS = {
    "not toml": ("source = ", "not valid TOML"),
    "missing number": (lambda text: text.replace("size_mb = 35.8\n", ""), "missing field claims[1].size_mb"),
    "misspelt key": (lambda text: text.replace("top1_pct = 91.5", "top1_pc = 91.5"), "unknown key claims[1].top1_pc"),
    "text for a number": (lambda text: text.replace("size_mb = 8.4", 'size_mb = "8.4"'),
                          "claims[2].size_mb must be a finite number"),
    "zero latency": (lambda text: text.replace("latency_ms_per_image = 15.0", "latency_ms_per_image = 0"),
                     "claims[0].latency_ms_per_image must be > 0"),
    "unknown rule": (lambda text: text.replace('rule = "fc-only"', 'rule = "smaller"'),
                     "claims[2].size_differs.rule must be one of"),
    "rule without its threshold": (lambda text: text.replace("min_fraction_of_fp32 = 0.5", ""),
                                   "min_fraction_of_fp32 is required"),
    "no fp32": (lambda text: text.replace('variant = "fp32"', 'variant = "fp16"'), "no claim about fp32"),
    "two hardwares": (lambda text: text.replace('hardware = "RTX 3090 GPU"\nsize_mb = 8.4',
                                                'hardware = "A100"\nsize_mb = 8.4'), "claims[2].hardware"),
}


@pytest.mark.parametrize("case", BAD_CLAIMS)
def test_malformed_claims_file_is_one_user_error_line(case, tmp_path):
    edit, expected = BAD_CLAIMS[case]
    good = CLAIMS_PATH.read_text(encoding="utf-8")
    text = edit(good) if callable(edit) else edit
    assert text != good
    bad = tmp_path / "claims.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_claims(bad)
    message = str(err.value)
    assert expected in message and message.startswith(str(bad)) and "\n" not in message


def test_claims_section_labels_claims_beside_measurements(x86, rpi):
    text = report.merge([x86, rpi], claims=True)
    section = text.split("## Tutorial claims vs our measurements")[1]
    assert "CLAIMS, not measurements" in section and "RTX 3090" in section
    claimed = {r[0]: r for r in table_rows(section, "fp32") + table_rows(section, "prune-l1-20")
               + table_rows(section, "int8-dynamic") if r[1].startswith("CLAIM")}
    assert claimed["fp32"][2:4] == ["44.7", "92.0"] and claimed["fp32"][5] == "15"
    assert claimed["prune-l1-20"][2:4] == ["35.8", "91.5"] and claimed["prune-l1-20"][5] == "12"
    assert claimed["int8-dynamic"][2:4] == ["8.4", "90.8"] and claimed["int8-dynamic"][5] == "8"
    measured = [r for r in table_rows(section, "prune-l1-20") if r[1].startswith("measured: x86")]
    assert measured and "gzip 37.12" in measured[0][2]  # size_gzip_bytes is shown when present


def test_claim_explanations_triggered_by_rule(x86):
    said = report.claim_explanations(x86, "x86")
    assert "tensors stay dense, so the file does not shrink" in said["size:prune-l1-20"]
    assert "gzip size shows the sparsity" in said["size:prune-l1-20"]
    assert "cannot shrink to 8.4 MB" in said["size:int8-dynamic"]
    assert "5,130 parameters of about 11.2 M" in said["size:int8-dynamic"]  # from per_class count and file size
    assert "83.98%" in said["accuracy"] and "compare the change vs fp32" in said["accuracy"]
    assert "RTX 3090" in said["latency:x86"]
    assert "no speedup" in said["speed:prune-l1-20:x86"]


def test_claim_explanations_stay_silent_when_the_numbers_agree(x86):
    fp32_bytes = item(x86, "fp32-eager-x86")["size_bytes"]
    item(x86, "prune-l1-20-eager-x86")["size_bytes"] = int(fp32_bytes * 0.8)
    item(x86, "int8-dynamic-eager-x86")["size_bytes"] = int(fp32_bytes * 0.2)
    for it in x86["items"]:
        if it["status"] == "ok":
            it["accuracy"]["top1"] += 0.081  # fp32 now scores 92.08%: same level as the tutorial's 92.0%
    said = report.claim_explanations(x86, "x86")
    assert not {"size:prune-l1-20", "size:int8-dynamic", "accuracy"} & set(said)


def test_claim_speed_sentence_ignores_noisy_timings(x86):
    for lat in item(x86, "prune-l1-20-eager-x86")["latency"]:
        lat["cv"] = 0.5
    assert "speed:prune-l1-20:x86" not in report.claim_explanations(x86, "x86")


# --- CLI ------------------------------------------------------------------------------------

def test_cli_render(tmp_path, capsys):
    assert main(["report", "render", str(DATA / "results-x86.json"), "-o", str(tmp_path)]) == 0
    assert (tmp_path / "cifar10-x86.md").exists()
    assert str(tmp_path / "cifar10-x86.md") in capsys.readouterr().out


def test_cli_merge_with_claims(tmp_path):
    out = tmp_path / "docs" / "RESULTS.md"
    argv = ["report", "merge", str(DATA / "results-x86.json"), str(DATA / "results-rpi.json"), "-o", str(out),
            "--claims"]
    assert main(argv) == 0
    assert "Tutorial claims vs our measurements" in out.read_text(encoding="utf-8")
    assert [p.name for p in out.parent.iterdir()] == ["RESULTS.md"]  # no temporary file left behind


def test_cli_missing_file_exits_2(tmp_path, capsys):
    assert main(["report", "render", str(tmp_path / "nope.json"), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_cli_mixed_refused_then_allowed(tmp_path, capsys):
    other = load("results-rpi.json")
    other["checkpoint"]["sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other), encoding="utf-8")
    out = tmp_path / "RESULTS.md"
    argv = ["report", "merge", str(DATA / "results-x86.json"), str(tmp_path / "other.json"), "-o", str(out)]
    assert main(argv) == 2
    assert "error: " in capsys.readouterr().err and not out.exists()
    assert main(argv + ["--allow-mixed"]) == 0 and out.exists()


def test_cli_output_is_a_folder(tmp_path, capsys):
    argv = ["report", "merge", str(DATA / "results-x86.json"), "-o", str(tmp_path)]
    assert main(argv) == 2
    assert "is a folder" in capsys.readouterr().err


def test_python_m_bench_entry_point_and_no_torch(tmp_path):
    """The real entry point: exit code 2 and one line on stderr; the report never imports torch."""
    proc = subprocess.run([sys.executable, "-m", "bench", "report", "render", str(tmp_path / "missing.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    check = "import sys, bench.report, bench.__main__; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_emulated_run_is_flagged_in_the_report(x86, tmp_path):
    assert "Emulated" not in report.render_report(x86, tmp_path / "real").read_text()
    x86["machine_info"]["emulated"] = "qemu-aarch64"
    text = report.render_report(x86, tmp_path / "emu").read_text()
    assert "**Emulated (qemu-aarch64)**: every latency and throughput here was measured under emulation" in text
