"""bench/measure.py: equivalence and accuracy records, throughput, and interleaved latency.

No assertion here depends on how fast this machine is: latency runs on a fake clock that the
fake workloads advance by exact amounts, through a fake pytest-benchmark fixture.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from bench import measure
from bench.measure import LatencySpec, accuracy_record, equivalence_record, measure_latency, measure_throughput
from bench.results import RESULTS_FIELDS, check_value
from bench.stats import unpack_bits, wilson_interval

RNG = np.random.default_rng(0)


def _logits(n=200, k=10, margin=5.0):
    """Logits with a clear winner per row, so small perturbations never change a decision."""
    x = RNG.normal(size=(n, k)).astype(np.float32)
    x[np.arange(n), RNG.integers(0, k, n)] += margin
    return x


def _scaled_error(ref, rel):
    """ref plus an error whose max |a-b| / max |ref| is exactly ``rel``."""
    out = ref.copy()
    out[0, 0] += rel * np.abs(ref).max()
    return out


# ---------------------------------------------------------------- equivalence_record
def test_fp32_identical_outputs_pass_with_zero_error():
    ref = _logits()
    rec = equivalence_record(ref.copy(), ref, "float", "fp32-eager-x86")
    assert rec["passed"] and rec["finite"]
    assert rec["max_rel_error"] == 0 and rec["top1_agreement"] == 1.0
    assert rec["reference"] == "fp32-eager-x86" and rec["n"] == len(ref)


@pytest.mark.parametrize("rel,passed", [(5e-4, True), (1e-3 * 0.99, True), (2e-3, False), (0.5, False)])
def test_fp32_tolerance_is_1e_3_relative(rel, passed):
    ref = _logits()
    rec = equivalence_record(_scaled_error(ref, rel), ref, "float", "r")
    assert rec["passed"] is passed
    assert rec["max_rel_error"] == pytest.approx(rel, rel=1e-3)
    assert "1e-03" in rec["rule"] or "0.001" in rec["rule"]


def test_fp32_fails_on_error_even_when_every_decision_agrees():
    # A layout or weight bug that keeps the argmax is still a bug for a float runtime.
    ref = _logits(margin=50.0)
    rec = equivalence_record(_scaled_error(ref, 0.01), ref, "float", "r")
    assert rec["top1_agreement"] == 1.0 and not rec["passed"]


@pytest.mark.parametrize("rel,passed", [(1e-2, True), (1.9e-2, True), (3e-2, False)])
def test_fp16_tolerance_is_2e_2_relative(rel, passed):
    ref = _logits()
    rec = equivalence_record(_scaled_error(ref, rel), ref, "fp16", "r")
    assert rec["passed"] is passed
    assert "0.02" in rec["rule"]


def _flip(ref, rows):
    """Change the decision of ``rows`` rows (the winner moves to another class)."""
    out = ref.copy()
    for r in range(rows):
        out[r, (ref[r].argmax() + 1) % ref.shape[1]] = ref[r].max() + 1.0
    return out


@pytest.mark.parametrize("n,flipped,passed", [(200, 0, True), (200, 2, True), (200, 3, False), (100, 2, False)])
def test_int8_rule_is_top1_agreement_at_least_99_percent(n, flipped, passed):
    ref = _logits(n=n)
    rec = equivalence_record(_flip(ref, flipped), ref, "int8", "r")
    assert rec["top1_agreement"] == pytest.approx(1 - flipped / n)
    assert rec["passed"] is passed
    assert "agreement" in rec["rule"]


def test_int8_ignores_the_size_of_logit_differences():
    # Two int8 implementations round differently: only decisions are comparable.
    ref = _logits(margin=50.0)
    rec = equivalence_record(ref * 1.3, ref, "int8", "r")
    assert rec["max_rel_error"] > 0.2 and rec["passed"]


@pytest.mark.parametrize("kind", ["float", "fp16", "int8"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_fail_every_kind(kind, bad):
    ref = _logits(margin=50.0)
    out = ref.copy()
    # Put the bad value where it does not change the int8 decision: agreement alone would pass.
    row_min = out[5].argmin()
    out[5, row_min] = bad if bad != np.inf else out[5, row_min]
    if bad == np.inf:
        out[5, out[5].argmax()] = np.inf
    rec = equivalence_record(out, ref, kind, "r")
    assert rec["finite"] is False and rec["passed"] is False


def test_non_finite_record_still_fits_the_results_schema():
    # One NaN-producing variant must fail its own item, not make the whole results file invalid
    # (the writer refuses NaN: json allow_nan=False, and the schema wants finite numbers).
    ref = _logits()
    out = ref.copy()
    out[3, 3] = np.nan
    rec = equivalence_record(out, ref, "float", "r")
    spec = RESULTS_FIELDS["items"].item.fields["equivalence"]
    check_value(rec, spec, "items[0].equivalence", "test", "fix")


# ---------------------------------------------------------------- accuracy_record
def test_accuracy_record_counts_ci_per_class_and_bits():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    preds = np.array([0, 0, 1, 1, 0, 2, 2, 2, 1, 0])
    fp32 = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
    rec = accuracy_record(preds, labels, fp32, ("zero", "one", "two", "three"))
    correct = preds == labels
    assert (rec["correct"], rec["n"]) == (7, 10)
    assert rec["top1"] == pytest.approx(0.7)
    lo, hi = wilson_interval(7, 10)
    assert rec["ci95"] == [pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6)]
    assert rec["ci95"][0] < rec["top1"] < rec["ci95"][1]
    # Per class, by name; a class with no eval images ("three") has no entry rather than a fake 0.
    assert rec["per_class"] == {"zero": 0.75, "one": 0.5, "two": 0.75}
    # The per-image mask survives the base64 round trip: the gate's McNemar test reads it.
    assert np.array_equal(unpack_bits(rec["correct_b64"], rec["n"]), correct)
    assert rec["agreement_with_fp32"] == pytest.approx(0.8)
    check_value(rec, RESULTS_FIELDS["items"].item.fields["accuracy"], "accuracy", "test", "fix")


def test_accuracy_record_without_fp32_reference():
    labels = np.arange(10) % 3
    rec = accuracy_record(labels.copy(), labels, None, ("a", "b", "c"))
    assert rec["agreement_with_fp32"] is None
    assert rec["top1"] == 1.0 and rec["ci95"][1] == 1.0


@pytest.mark.parametrize("n", [1, 7, 8, 9, 360])
def test_correct_bits_round_trip_for_any_length(n):
    labels = RNG.integers(0, 10, n)
    preds = np.where(RNG.random(n) < 0.7, labels, (labels + 1) % 10)
    rec = accuracy_record(preds, labels, preds, tuple(map(str, range(10))))
    mask = unpack_bits(rec["correct_b64"], n)
    assert mask.sum() == rec["correct"] and np.array_equal(mask, preds == labels)


# ---------------------------------------------------------------- measure_throughput
def test_throughput_on_a_trivial_function():
    calls, syncs = [], []
    rec = measure_throughput(calls.append, "batch", 8, lambda: syncs.append(1), min_time_s=0.0, min_batches=3)
    # 1 untimed warm-up call, then exactly min_batches timed ones when no minimum time is asked.
    assert calls == ["batch"] * 4 and len(syncs) == 4
    assert rec["batch_size"] == 8 and rec["batches"] == 3
    assert rec["img_s"] > 0 and rec["seconds"] >= 0
    check_value({"input_size": [8, 8], **rec}, RESULTS_FIELDS["items"].item.fields["throughput"].item,
                "throughput", "test", "fix")


def test_throughput_runs_at_least_min_time(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(measure, "time", clock)
    # 125 ms per batch (exact in binary floating point): 1 s takes 8 batches, more than min_batches.
    rec = measure_throughput(lambda b: clock.advance(0.125), None, 4, lambda: None, min_time_s=1.0, min_batches=3)
    assert rec["batches"] == 8
    assert rec["img_s"] == pytest.approx(4 * 8 / 1.0)


# ---------------------------------------------------------------- measure_latency
class _FakeClock:
    """Stands in for the ``time`` module inside measure.py: time moves only when work is done."""

    def __init__(self):
        self.t = 1000.0

    def perf_counter(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


class FakeBenchmark:
    """The slice of pytest-benchmark's fixture that measure_latency uses: pedantic() and stats."""

    disabled = False

    def __init__(self, clock):
        self.clock = clock
        self.calls = []
        self.stats = SimpleNamespace(stats=SimpleNamespace(data=[]))

    def pedantic(self, target, setup=None, rounds=1, iterations=1, warmup_rounds=0):
        self.calls.append({"rounds": rounds, "iterations": iterations, "warmup_rounds": warmup_rounds})
        for _ in range(rounds):
            args, kwargs = setup() if setup else ((), {})  # untimed, like pytest-benchmark
            t0 = self.clock.perf_counter()
            target(*args, **kwargs)
            self.stats.stats.data.append(self.clock.perf_counter() - t0)  # seconds


def _workload(clock, log, tag, ms):
    def run(x):
        log.append((tag, x))
        clock.advance(ms / 1e3)
    return run


# Stop warming up after the minimum 10 calls (the fake timings are flat from the start), and a
# small floor so that the rounds rule, not the floor, decides most counts below.
FAST = dict(warmup_time_s=0.0, warmup_max_time_s=0.0, floor_samples=5)


@pytest.fixture
def clock(monkeypatch):
    c = _FakeClock()
    monkeypatch.setattr(measure, "time", c)
    return c


def _rounds(clock, spec, run_ms=2.0, ref_ms=4.0):
    bench = FakeBenchmark(clock)
    rec = measure_latency(bench, _workload(clock, [], "run", run_ms), [0, 1], lambda: None, spec,
                          reference=_workload(clock, [], "ref", ref_ms), ref_inputs=[0, 1])
    assert len(bench.calls) == 1 and len(rec["samples_ms"]) == bench.calls[0]["rounds"]
    return bench.calls[0]["rounds"]


def _runs(log):
    """Collapse a call log into (tag, count) runs: ref x3, ref x4, run x3 ... -> [("ref", 7), ...]."""
    out = []
    for tag, _ in log:
        if out and out[-1][0] == tag:
            out[-1][1] += 1
        else:
            out.append([tag, 1])
    return [tuple(r) for r in out]


def test_latency_alternates_blocks_of_reference_and_candidate_calls(clock):
    log, syncs = [], []
    bench = FakeBenchmark(clock)
    inputs = [("cand", i) for i in range(4)]
    ref_inputs = [("ref", i) for i in range(4)]
    spec = LatencySpec(min_samples=7, min_time_s=1.0, block=3, switch_calls=2, switch_time_s=0.0, **FAST)
    rec = measure_latency(bench, _workload(clock, log, "run", 2.0), inputs, lambda: syncs.append(1), spec,
                          reference=_workload(clock, log, "ref", 4.0), ref_inputs=ref_inputs)

    assert bench.calls == [{"rounds": 7, "iterations": 1, "warmup_rounds": 0}]
    # Warm-up settles each runtime on its own (10 calls each), then 7 rounds in blocks of 3:
    # per block, 2 untimed + 3 timed reference calls, 2 untimed candidate calls, then the block's
    # timed candidate calls (pedantic's rounds).
    assert _runs(log) == [("run", 10), ("ref", 10 + 2 + 3), ("run", 2 + 3), ("ref", 5), ("run", 2 + 3),
                          ("ref", 5), ("run", 2 + 1)]
    assert len({x for t, x in log if t == "run"}) == len(inputs)  # real images cycle, not one cached input
    assert len({x for t, x in log if t == "ref"}) == len(ref_inputs)

    assert len(rec["samples_ms"]) == 7 and len(rec["reference_samples_ms"]) == 9  # 3 whole blocks
    assert rec["samples_ms"] == [pytest.approx(2.0)] * 7  # seconds from the fixture, reported in ms
    assert rec["reference_samples_ms"] == [pytest.approx(4.0)] * 9
    assert rec["p50_ms"] == pytest.approx(2.0) and rec["reference_p50_ms"] == pytest.approx(4.0)
    assert rec["ratio_to_reference"] == pytest.approx(0.5)
    assert rec["warmup_settled_ms"] == pytest.approx(2.0)
    assert len(syncs) >= 7 + 9  # every timed call is synchronized (a no-op on CPU, essential on CUDA)


def test_switching_runtimes_waits_for_the_other_pool_to_go_quiet(clock):
    # switch_time_s is a floor on the untimed calls after a switch: 1/1024 s calls need 8 of them
    # to cover 8/1024 s, while 4 ms reference calls stop at switch_calls=2. (Binary fractions keep
    # the fake clock exact.)
    log = []
    spec = LatencySpec(min_samples=4, min_time_s=1.0, block=4, switch_calls=2, switch_time_s=8 / 1024,
                       warmup_time_s=0.0, warmup_max_time_s=0.0, floor_samples=4)
    measure_latency(FakeBenchmark(clock), _workload(clock, log, "run", 1000 / 1024), [0], lambda: None, spec,
                    reference=_workload(clock, log, "ref", 4.0), ref_inputs=[0])
    assert _runs(log) == [("run", 10), ("ref", 10 + 2 + 4), ("run", 8 + 4)]


def test_reference_block_takes_as_much_time_as_the_candidate_block(clock):
    # 1/1024 s candidate calls, 4/1024 s reference calls, blocks of 16, half the candidate's time:
    # 16 * 0.5 / 4 = 2 reference calls per block, not 16 (which would take 4x the candidate's time).
    log = []
    spec = LatencySpec(min_samples=32, min_time_s=1.0, block=16, min_ref_block=2, ref_share=0.5, switch_calls=1,
                       switch_time_s=0.0, **FAST)
    rec = measure_latency(FakeBenchmark(clock), _workload(clock, log, "run", 1000 / 1024), [0], lambda: None,
                          spec, reference=_workload(clock, log, "ref", 4000 / 1024), ref_inputs=[0])
    assert _runs(log) == [("run", 10), ("ref", 10 + 1 + 2), ("run", 1 + 16), ("ref", 1 + 2), ("run", 1 + 16)]
    assert rec["reference_block"] == 2 and len(rec["reference_samples_ms"]) == 4
    assert rec["ratio_to_reference"] == pytest.approx(1 / 4)


def test_reference_block_never_goes_below_its_floor_nor_above_the_block(clock):
    def ref_block(run_ms, ref_ms):
        spec = LatencySpec(min_samples=8, min_time_s=1.0, block=8, min_ref_block=3, ref_share=1.0, switch_calls=1,
                           switch_time_s=0.0, **FAST)
        return measure_latency(FakeBenchmark(clock), _workload(clock, [], "run", run_ms), [0], lambda: None, spec,
                               reference=_workload(clock, [], "ref", ref_ms), ref_inputs=[0])["reference_block"]
    assert ref_block(0.125, 64.0) == 3      # a very fast candidate: the floor
    assert ref_block(64.0, 16.0) == 8       # a candidate slower than the reference: a whole block
    assert ref_block(4.0, 8.0) == 4         # in between: proportional


def _after_switch_slow(clock, log, tag, ms, slow_ms, slow_calls):
    """A runtime whose first ``slow_calls`` calls after the other runtime ran are slow, like eager
    calls while ONNX Runtime's workers still spin."""
    state = {"since_other": 0}

    def run(x):
        if log and log[-1][0] != tag:
            state["since_other"] = 0
        state["since_other"] += 1
        log.append((tag, x))
        clock.advance((slow_ms if state["since_other"] <= slow_calls else ms) / 1e3)
    return run


def test_switching_waits_until_the_runtime_switched_to_is_back_to_its_settled_time(clock):
    # The reference's first 3 calls after candidate calls take 8x as long (spinning workers of the
    # other runtime); switch_calls=1 alone would time two of them.
    log = []
    spec = LatencySpec(min_samples=4, min_time_s=1.0, block=4, min_ref_block=4, switch_calls=1,
                       switch_time_s=0.0, **FAST)
    rec = measure_latency(FakeBenchmark(clock), _workload(clock, log, "run", 1.0), [0], lambda: None, spec,
                          reference=_after_switch_slow(clock, log, "ref", 4.0, 32.0, 3), ref_inputs=[0])
    # Warm-up settles the reference on 4 ms. 5 rounds (the floor), blocks at rounds 1 and 5: the
    # first switch follows reference calls (1 untimed call); the second runs 3 slow + 1 settled.
    assert _runs(log) == [("run", 10), ("ref", 10 + 1 + 4), ("run", 1 + 4), ("ref", 3 + 1 + 4), ("run", 1 + 1)]
    assert rec["reference_samples_ms"] == [pytest.approx(4.0)] * 8


def test_switching_gives_up_after_switch_max_time(clock):
    # A reference that never recovers: the switch stops after switch_max_time_s and times anyway.
    log = []
    spec = LatencySpec(min_samples=4, min_time_s=1.0, block=4, min_ref_block=4, switch_calls=1,
                       switch_time_s=0.0, switch_max_time_s=0.05, **FAST)
    calls = {"n": 0}

    def ref(x):
        calls["n"] += 1
        log.append(("ref", x))
        clock.advance((4.0 if calls["n"] <= 10 else 16.0) / 1e3)  # settles at 4 ms, then slows for good

    measure_latency(FakeBenchmark(clock), _workload(clock, log, "run", 1.0), [0], lambda: None, spec,
                    reference=ref, ref_inputs=[0])
    # After warm-up: 16 ms calls until 0.05 s have passed (4 calls = 64 ms), then 4 timed.
    assert _runs(log)[1] == ("ref", 10 + 4 + 4)


# The rule (LatencySpec): sample until min_samples or min_time_s of *candidate* time, whichever
# comes first, never fewer than floor_samples and never more than max_samples.
def test_latency_rounds_stop_at_min_samples_when_time_is_not_reached_first(clock):
    # 2 ms per call: 1 s would take 500 rounds; 20 samples come first.
    assert _rounds(clock, LatencySpec(min_samples=20, min_time_s=1.0, **FAST)) == 20


def test_latency_rounds_stop_at_min_time_when_it_comes_first(clock):
    # 0.125 s of 1/512 s candidate calls is 64 rounds; the reference's time does not count.
    # (Binary fractions keep the fake clock exact: 2 ms steps would round to 50 or 51.)
    spec = LatencySpec(min_samples=100, min_time_s=0.125, **FAST)
    assert _rounds(clock, spec, run_ms=1000 / 512, ref_ms=1000 / 128) == 64


def test_latency_rounds_never_go_below_the_floor(clock):
    spec = LatencySpec(min_samples=3, min_time_s=0.0, warmup_time_s=0.0, warmup_max_time_s=0.0, floor_samples=12)
    assert _rounds(clock, spec) == 12


def test_latency_rounds_respect_the_cap(clock):
    spec = LatencySpec(min_samples=5000, min_time_s=100.0, max_samples=60, **FAST)
    assert _rounds(clock, spec) == 60


def test_latency_without_reference_has_no_reference_fields(clock):
    log = []
    bench = FakeBenchmark(clock)
    spec = LatencySpec(min_samples=5, min_time_s=1.0, **FAST)
    rec = measure_latency(bench, _workload(clock, log, "run", 3.0), [10, 11, 12], lambda: None, spec)
    assert "ratio_to_reference" not in rec and "reference_samples_ms" not in rec
    assert [t for t, _ in log].count("ref") == 0
    assert rec["p50_ms"] == pytest.approx(3.0)


def test_latency_record_fits_the_results_schema(clock):
    bench = FakeBenchmark(clock)
    spec = LatencySpec(min_samples=5, min_time_s=1.0, **FAST)
    rec = measure_latency(bench, _workload(clock, [], "run", 1.5), [0], lambda: None, spec,
                          reference=_workload(clock, [], "ref", 3.0), ref_inputs=[0])
    entry = {"input_size": [32, 32], "batch_size": 1, **rec, "reference_id": "fp32-eager-x86"}
    check_value(entry, RESULTS_FIELDS["items"].item.fields["latency"].item, "latency[0]", "test", "fix")
    assert all(math.isfinite(v) for v in rec["samples_ms"])


def test_latency_is_still_measured_when_pytest_benchmark_is_disabled(clock):
    # --benchmark-disable (and xdist) turn pedantic() into a single untimed call with no stats:
    # the harness then times the same interleaved rounds itself instead of crashing.
    class Disabled(FakeBenchmark):
        disabled = True

        def pedantic(self, *a, **k):
            raise AssertionError("pedantic() of a disabled fixture records nothing")

    log = []
    spec = LatencySpec(min_samples=6, min_time_s=1.0, block=3, switch_calls=1, switch_time_s=0.0, **FAST)
    rec = measure_latency(Disabled(clock), _workload(clock, log, "run", 2.0), [0, 1], lambda: None, spec,
                          reference=_workload(clock, log, "ref", 4.0), ref_inputs=[0, 1])
    assert rec["samples_ms"] == [pytest.approx(2.0)] * 6
    assert rec["ratio_to_reference"] == pytest.approx(0.5)
    assert _runs(log) == [("run", 10), ("ref", 10 + 1 + 3), ("run", 1 + 3), ("ref", 4), ("run", 1 + 3)]


def test_warm_up_runs_until_timings_settle(clock):
    # The first calls are slow and speeding up (cold caches, autotuning): warm-up keeps going until
    # the last 5 calls' median is within 5% of the 5 before, and reports the settled value.
    durations = iter([20.0 - i for i in range(15)] + [2.0] * 100)
    log = []

    def run():
        log.append(1)
        clock.advance(next(durations) / 1e3)

    settled = measure.warm_up([run], lambda: None, LatencySpec(warmup_time_s=0.0, warmup_max_time_s=60.0))
    assert settled == [pytest.approx(2.0)]
    # Not before the slow calls have left the median of both windows, and no later than two
    # full windows of fast calls.
    assert 15 + 5 < len(log) <= 15 + 10


def test_warm_up_gives_up_after_max_time(clock):
    # Timings that never settle (alternating windows) still end at warmup_max_time_s.
    durations = iter(([1.0] * 5 + [3.0] * 5) * 100)
    settled = measure.warm_up([lambda: clock.advance(next(durations) / 1e3)], lambda: None,
                              LatencySpec(warmup_time_s=0.0, warmup_max_time_s=0.1))
    assert len(settled) == 1 and settled[0] in (pytest.approx(1.0), pytest.approx(3.0))


def _logits_with_preds(preds, n_classes=10):
    out = np.zeros((len(preds), n_classes), dtype=np.float32)
    out[np.arange(len(preds)), preds] = 1.0
    return out


def test_requantized_int8_is_judged_against_the_float_model_both_started_from():
    # ONNX Runtime re-quantizes the float model itself: 98.4% agreement with the PyTorch int8 model
    # is expected, as long as it is at least as faithful to the float model as PyTorch's int8 is.
    rng = np.random.default_rng(0)
    float_preds = rng.integers(0, 10, 1000)
    eager_int8 = float_preds.copy()
    eager_int8[:14] = (eager_int8[:14] + 1) % 10  # 98.6% agreement with float
    ort_int8 = float_preds.copy()
    ort_int8[20:29] = (ort_int8[20:29] + 1) % 10  # 99.1% with float, ~97.7% with eager int8
    rec = measure.equivalence_record(_logits_with_preds(ort_int8), _logits_with_preds(eager_int8), "int8",
                                     "int8-static-eager-x86",
                                     (_logits_with_preds(float_preds), _logits_with_preds(eager_int8), "fp32-eager-x86"))
    assert rec["top1_agreement"] < 0.99 and rec["float_agreement"] == 0.991 and rec["passed"]


def test_requantized_int8_fails_when_it_drifts_from_the_float_model():
    rng = np.random.default_rng(1)
    float_preds = rng.integers(0, 10, 1000)
    eager_int8 = float_preds.copy()
    eager_int8[:5] = (eager_int8[:5] + 1) % 10  # 99.5% with float: the floor becomes 0.99
    ort_int8 = float_preds.copy()
    ort_int8[100:125] = (ort_int8[100:125] + 1) % 10  # 97.5% with float
    rec = measure.equivalence_record(_logits_with_preds(ort_int8), _logits_with_preds(eager_int8), "int8",
                                     "int8-static-eager-x86",
                                     (_logits_with_preds(float_preds), _logits_with_preds(eager_int8), "fp32-eager-x86"))
    assert not rec["passed"] and "0.9900" in rec["rule"]
