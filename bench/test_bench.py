"""The benchmark items: one per (metric, variant, runtime, device[, input shape]).

Run as ``pytest bench/ --device cpu``. Every measurement lands in the run's results document;
each item then compares its own metric with the stored baseline and fails on a regression.
"""
from __future__ import annotations

import pytest

from bench.plugin import gate_item


def test_size(bench, bench_case):
    item = bench.measure_size(bench_case)
    assert item["size_bytes"] and item["size_bytes"] > 0, f"{bench_case.id}: no deployable file was written"
    gate_item(bench, bench_case, "test_size")


def test_equivalence(bench, bench_case):
    rec = bench.measure_equivalence(bench_case)
    assert rec["finite"], f"{bench_case.id}: non-finite outputs (NaN or inf)"
    rel = "n/a" if rec["max_rel_error"] is None else f"{rec['max_rel_error']:.2e}"
    assert rec["passed"], (f"{bench_case.id} disagrees with {rec['reference']}: {rec['rule']} failed "
                           f"(max relative error {rel}, top-1 agreement {rec['top1_agreement']:.2%} "
                           f"on {rec['n']} images)")


def test_accuracy(bench, bench_case):
    bench.measure_accuracy(bench_case)
    gate_item(bench, bench_case, "test_accuracy")


def test_latency(bench, bench_case, bench_shape, benchmark):
    _require_equivalent(bench, bench_case)
    bench.measure_latency(bench_case, bench_shape, benchmark)
    gate_item(bench, bench_case, "test_latency", shape=bench_shape)


def test_throughput(bench, bench_case, bench_shape):
    _require_equivalent(bench, bench_case)
    rec = bench.measure_throughput(bench_case, bench_shape)
    assert rec["img_s"] > 0


def _require_equivalent(bench, case):
    eq = bench.item(case).get("equivalence") or bench.measure_equivalence(case)
    if not eq["passed"]:
        pytest.fail(f"{case.id}: not timed, its outputs do not match eager ({eq['rule']} failed)", pytrace=False)
