"""`python -m bench compare`: matched items of real results files with verdicts a test backs,
across machines, with refusals and exit codes usable in CI."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from bench.__main__ import EXIT_REGRESSION, EXIT_USER_ERROR, main
from bench.compare import compare, compare_latency
from bench.stats import pack_bits, unpack_bits
from compress.errors import UserError

DATA = Path(__file__).parent / "data" / "report"


@pytest.fixture
def x86() -> dict:
    return json.loads((DATA / "results-x86.json").read_text())


@pytest.fixture
def rpi() -> dict:
    return json.loads((DATA / "results-rpi.json").read_text())


def rows_of(rows, item, metric="latency", shape="224x224/b1"):
    return next(r for r in rows if r["id"] == item and r["metric"] == metric and (metric != "latency" or r["shape"] == shape))


def slowed(doc: dict, item_id: str, factor: float) -> dict:
    doc = copy.deepcopy(doc)
    item = next(it for it in doc["items"] if it["id"] == item_id)
    for lat in item["latency"]:
        lat["samples_ms"] = [s * factor for s in lat["samples_ms"]]
        lat["p50_ms"] *= factor
        lat["ratio_to_reference"] *= factor
    return doc


def test_a_file_against_itself_changes_nothing(x86):
    rows = compare(x86, x86)
    assert rows and {r["verdict"] for r in rows} <= {"not significant"}
    assert all(r["factor"] == pytest.approx(1.0) for r in rows if r["metric"] == "latency")


def test_a_real_slowdown_is_slower_with_its_interval(x86):
    rows = compare(x86, slowed(x86, "int8-static-onnxruntime-x86", 1.5))
    r = rows_of(rows, "int8-static/onnxruntime")
    assert r["verdict"] == "slower" and r["method"] == "ratio"
    assert r["factor"] == pytest.approx(1.5, rel=0.02) and r["text"].startswith("1.50x slower")
    assert rows_of(rows, "fp32/onnxruntime")["verdict"] == "not significant"


def test_a_change_inside_the_between_run_spread_is_not_significant(x86):
    r = rows_of(compare(x86, slowed(x86, "int8-static-onnxruntime-x86", 1.05)), "int8-static/onnxruntime")
    assert r["verdict"] == "not significant"  # 5% < the 10% a quiet ratio moves between runs


def test_the_reference_item_is_compared_on_raw_samples(x86):
    r = rows_of(compare(x86, slowed(x86, "fp32-eager-x86", 2.0)), "fp32/eager")
    assert r["method"] == "raw" and r["verdict"] == "slower" and "Mann-Whitney" in r["text"]


def test_two_machines_are_matched_by_variant_and_runtime(x86, rpi):
    rows = compare(x86, rpi)
    matched = {r["id"] for r in rows if r["metric"] != "item"}
    assert matched == {"fp32/eager", "fp32/onnxruntime", "int8-static/eager", "int8-static/onnxruntime"}
    assert rows_of(rows, "prune-l1-20/eager", metric="item")["text"] == "only in A"
    assert rows_of(rows, "fp32/eager")["verdict"] == "slower"  # a Raspberry Pi is slower than an EPYC


def test_accuracy_uses_mcnemar_on_the_same_images(x86):
    other = copy.deepcopy(x86)
    item = next(it for it in other["items"] if it["id"] == "int8-static-onnxruntime-x86")
    acc = item["accuracy"]
    correct = unpack_bits(acc["correct_b64"], acc["n"]).copy()
    flip = np.flatnonzero(correct)[:300]  # 300 right answers become wrong: 3 points on 10,000 images
    correct[flip] = False
    acc["correct_b64"], acc["top1"] = pack_bits(correct), float(correct.mean())
    r = rows_of(compare(x86, other), "int8-static/onnxruntime", metric="top-1")
    assert r["verdict"] == "worse" and r["delta_pp"] == pytest.approx(-3.0) and "McNemar p < 0.001" in r["text"]


def test_different_checkpoints_are_refused_unless_allowed(x86):
    other = copy.deepcopy(x86)
    other["checkpoint"]["sha256"] = "0" * 64
    with pytest.raises(UserError, match="different things.*checkpoints.*--allow-mixed"):
        compare(x86, other)
    rows = compare(x86, other, allow_mixed=True)
    assert rows and not [r for r in rows if r["metric"] == "top-1"]  # accuracy is not comparable


def test_raw_samples_without_reference_use_mann_whitney():
    rng = np.random.default_rng(0)
    a = {"samples_ms": list(10 + rng.random(60)), "p50_ms": 10.5}
    b = {"samples_ms": list(13 + rng.random(60)), "p50_ms": 13.5}
    r = compare_latency(a, b, noisy=False)
    assert r["method"] == "raw" and r["verdict"] == "slower" and r["p"] < 0.001
    assert compare_latency(a, a, noisy=False)["verdict"] == "not significant"


def test_cli_exit_codes_and_formats(x86, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(x86))
    b.write_text(json.dumps(slowed(x86, "int8-static-onnxruntime-x86", 1.5)))
    assert main(["compare", str(a), str(b)]) == 0  # reporting only, by default
    assert main(["compare", str(a), str(b), "--fail-on", "slower", "--format", "md"]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert "| int8-static/onnxruntime" in out and "1.50x slower" in out
    assert main(["compare", str(a), str(a), "--fail-on", "slower,worse"]) == 0
    assert main(["compare", str(a)]) == EXIT_USER_ERROR
    assert main(["compare", str(a), str(tmp_path / "absent.json")]) == EXIT_USER_ERROR
    with pytest.raises(SystemExit):
        main(["compare", str(a), str(b), "--fail-on", "sometimes"])
