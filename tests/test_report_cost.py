"""The report shows what a run cost (memory, evaluation speed) when the results record it."""
from __future__ import annotations

from gate_fixtures import make_item, make_results

from bench.report import render_markdown


def test_cost_line_shows_peak_memory_and_evaluation_speed():
    items = [make_item("fp32", "eager", seed=1), make_item("int8-static", "onnxruntime", seed=2)]
    items[0]["eval_img_s"], items[1]["eval_img_s"] = 120.0, 480.5
    results = make_results(items)
    results["resources"] = {"peak_rss_bytes": 2_313_584_000}
    text = render_markdown(results)
    assert "- Cost: peak resident memory 2.31 GB; evaluation 120 to 480 images/s" in text


def test_no_cost_line_for_results_that_do_not_record_it():
    assert "- Cost:" not in render_markdown(make_results())
