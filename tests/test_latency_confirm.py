"""Confirming a slowdown below the ratio limit within one run (--latency-confirm): the ratio is
compared with the same series' earlier quiet runs in the history store; one that stands out is
measured again with more rounds and reported "slower" only if the re-measurement still stands out.

Pure parts (the prediction test, its power, RatioHistory, the gate check) on fixed numbers; the
plugin on real runs: the history is three real unchanged runs, and the slowdown is real, a sleep
in the victim's calls (tests/test_latency_retries.py), under a ratio limit too wide to catch it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from test_latency_retries import ARGS, SLEEP_S, VICTIM, _victim_latency, slow_victim  # noqa: F401  (fixture)
from test_plugin import HOST, _restore_torch_globals, bench_cache, bench_run  # noqa: F401  (fixtures)

from bench.config import GateConfig
from bench.gate import check_item, check_latency_confirm
from bench.history import RatioHistory, Series, ratio_history
from bench.results import load_results
from bench.stats import detectable_shift, prediction_p_value

pytest_plugins = ["pytester"]


# --- the statistics --------------------------------------------------------------------------------

def test_prediction_p_value_matches_students_t_on_the_prediction_error():
    h = [1.0, 1.1, 0.9, 1.05, 0.95]  # mean 1.0, sd 0.0790569
    x = 1.3
    t_stat = (x - 1.0) / (np.std(h, ddof=1) * math.sqrt(1 + 1 / 5))
    from scipy.stats import t

    assert prediction_p_value(h, x) == pytest.approx(t.sf(t_stat, 4))
    assert prediction_p_value(h, 1.0) == pytest.approx(0.5)
    assert prediction_p_value(h, 0.5) > 0.99


def test_prediction_p_value_edge_cases():
    assert prediction_p_value([2.0, 2.0, 2.0], 2.0) == 1.0
    assert prediction_p_value([2.0, 2.0, 2.0], 2.1) == 0.0
    with pytest.raises(ValueError):
        prediction_p_value([1.0], 2.0)
    with pytest.raises(ValueError):
        prediction_p_value([1.0, 2.0], float("nan"))


def test_detectable_shift_shrinks_with_more_runs_and_less_noise_and_is_caught_at_its_power():
    assert detectable_shift(5, 0.03, 0.001) > detectable_shift(20, 0.03, 0.001) > detectable_shift(20, 0.01, 0.001)
    assert detectable_shift(10, 0.0, 0.001) == 0.0
    # Simulated: a shift of exactly the detectable size is flagged about 80% of the time.
    rng = np.random.default_rng(0)
    n, sd, alpha = 10, 0.03, 0.01
    shift = detectable_shift(n, sd, alpha)
    hits = 0
    for _ in range(2000):
        h = rng.normal(0, sd, n)
        hits += prediction_p_value(h, rng.normal(shift, sd)) < alpha
    assert 0.72 < hits / 2000 < 0.88
    with pytest.raises(ValueError):
        detectable_shift(1, 0.03, 0.01)


def _series(ratios, cv=0.03) -> Series:
    runs = [{"created_utc": f"2026-12-01T00:{i:02d}:00Z", "commit": f"c{i}", "dirty": False, "versions": {},
             "ratio": r, "p50_ms": 10 * r, "cv": cv, "source": None} for i, r in enumerate(ratios)]
    return Series("fp", "ds", "ck", "int8-static-onnxruntime-x86", "224x224/b1", runs)


def test_ratio_history_needs_enough_quiet_runs():
    quiet = [0.20, 0.205, 0.198, 0.202, 0.199, 0.201]
    assert ratio_history(_series(quiet[:4]), min_runs=5) is None
    assert ratio_history(_series(quiet, cv=0.3), min_runs=5) is None  # noisy series: its spread predicts nothing
    h = ratio_history(_series(quiet), min_runs=5)
    assert h.n_runs == 6 and h.center == pytest.approx(0.2008, rel=1e-3)
    assert h.first_utc == "2026-12-01T00:00:00Z" and h.last_utc == "2026-12-01T00:05:00Z"


def test_ratio_history_keeps_only_the_runs_after_the_last_step():
    rng = np.random.default_rng(1)
    before = list(0.20 * np.exp(rng.normal(0, 0.01, 8)))
    after = list(0.26 * np.exp(rng.normal(0, 0.01, 8)))
    h = ratio_history(_series(before + after), min_runs=5)
    assert h.n_runs == 8 and h.center == pytest.approx(0.26, rel=0.02)


def test_ratio_history_uses_the_latest_runs_only():
    h = ratio_history(_series([0.2 + 0.001 * (i % 3) for i in range(30)]), min_runs=5, max_runs=12)
    assert h.n_runs == 12 and h.last_utc == "2026-12-01T00:29:00Z"


def test_suspicious_is_measured_in_between_run_sds():
    h = RatioHistory(tuple(math.log(r) for r in (0.20, 0.21, 0.19, 0.20, 0.20)), "a", "b")
    assert h.sd_log == pytest.approx(0.0354, abs=5e-4)
    assert not h.suspicious(0.21, 2.0)
    assert h.suspicious(0.22, 2.0)


# --- the gate check ------------------------------------------------------------------------------------

HISTORY = [0.200, 0.204, 0.197, 0.201, 0.199, 0.203, 0.198, 0.200]  # between-run sd ~1.1%


def _item(ratio: float, remeasured: bool, first_ratio: float | None = None) -> tuple[dict, dict]:
    lat = {"input_size": [224, 224], "batch_size": 1, "samples_ms": [5.0] * 40, "p50_ms": 5.0, "cv": 0.02,
           "reference_id": "fp32-eager-x86", "ratio_to_reference": ratio,
           "confirmation": {"history_ratios": HISTORY, "history_first_utc": "2026-12-01T00:00:00Z",
                            "history_last_utc": "2026-12-02T00:00:00Z", "remeasured": remeasured,
                            "rounds_factor": 3 if remeasured else 1, "first_ratio": first_ratio}}
    item = {"id": "int8-static-onnxruntime-x86", "variant": "int8-static", "runtime": "onnxruntime",
            "device": "x86", "status": "ok", "latency": [lat]}
    return item, lat


def test_a_confirmed_12_percent_slowdown_is_slower_and_names_the_power():
    item, lat = _item(0.224, remeasured=True, first_ratio=0.226)
    f = check_latency_confirm(item, lat, GateConfig())
    assert f.verdict == "slower" and f.check == "latency_confirm" and f.p_value < 0.001
    assert "1.12x slower" in f.message and "measured again with 3x the rounds (first read 0.226)" in f.message
    assert "one run confirms" in f.message and "80% power" in f.message
    assert f.baseline == pytest.approx(0.2003, rel=1e-3)


def test_within_the_history_is_ok_and_states_what_one_run_can_confirm():
    item, lat = _item(0.202, remeasured=False)
    f = check_latency_confirm(item, lat, GateConfig())
    assert f.verdict == "ok"
    mde = RatioHistory(tuple(math.log(r) for r in HISTORY), "a", "b").detectable_change(GateConfig.confirm_alpha)
    assert 0.03 < mde < 0.08 and f"one run confirms {mde:.0%} or more here" in f.message


def test_a_remeasured_ratio_that_came_back_is_not_significant_not_slower():
    item, lat = _item(0.203, remeasured=True, first_ratio=0.23)
    assert check_latency_confirm(item, lat, GateConfig()).verdict == "not significant"


def test_significant_but_below_the_minimum_change_is_not_slower():
    tight = GateConfig(confirm_min_change=0.20)
    item, lat = _item(0.224, remeasured=True, first_ratio=0.226)
    assert check_latency_confirm(item, lat, tight).verdict == "not significant"


def test_no_history_no_finding_and_check_item_includes_it_without_a_baseline():
    item, lat = _item(0.224, remeasured=True, first_ratio=0.226)
    found = check_item(item, {"items": [item]}, None, None, GateConfig())
    assert [f.verdict for f in found if f.check == "latency_confirm"] == ["slower"]
    del lat["confirmation"]
    assert check_latency_confirm(item, lat, GateConfig()) is None


# --- the plugin, on real runs ----------------------------------------------------------------------------

# Limits wide enough that the 60 ms sleep is no regression, so it reaches the confirmation step;
# alpha 1% since three history runs of a 1-thread 32x32 model on a busy machine can spread by
# 15%: the 60x slowdown still stands ~7 sds out, and a burst that came back does not.
GATE = """
[tool.resnet18-bench.gate]
min_effect = 1000.0
ratio_tolerance = 1000.0
noisy_ratio_tolerance = 1000.0
cv_warn = 10.0
confirm_min_runs = 3
confirm_alpha = 0.01
"""


def test_a_real_slowdown_under_the_ratio_limit_is_confirmed_and_a_burst_is_not(bench_run, pytester, slow_victim):  # noqa: F811
    gate = pytester.makepyprojecttoml(GATE)
    args = [*ARGS, "--gate-config", str(gate)]
    store = bench_run.out / "reports" / "results"
    r = bench_run(*args, "--update-baselines")
    assert r.ret == pytest.ExitCode.OK, "\n".join(r.outlines + r.errlines)[-3000:]
    for _ in range(2):  # three unchanged runs in the history store
        r = bench_run(*args)
        assert r.ret == pytest.ExitCode.OK, "\n".join(r.outlines + r.errlines)[-3000:]
    assert "confirmation" not in _victim_latency(bench_run.out)  # two earlier runs: fewer than confirm_min_runs
    side = ["--report-dir", str(bench_run.out / "side"), "--history-store", str(store)]  # keep the store unchanged

    def victim(out_name: str = "side") -> dict:
        results = load_results(bench_run.out / out_name / f"digits-{HOST}.json")
        (item,) = [it for it in results["items"] if it["id"] == VICTIM]
        (lat,) = item["latency"]
        (f,) = [f for f in results["gate"]["findings"] if f["id"] == VICTIM and f["check"] == "latency_confirm"]
        return {"lat": lat, "finding": f}

    # A burst: only the first measurement is slow. Measured again, it comes back: not "slower".
    slow_victim(1)
    r = bench_run(*args, *side)
    text = "\n".join(r.outlines + r.errlines)
    assert r.ret == pytest.ExitCode.OK, text[-4000:]
    assert "between-run sds above its last 3 runs" in text and "measured again with 3x the rounds" in text
    v = victim()
    assert v["lat"]["confirmation"]["remeasured"] and v["lat"]["confirmation"]["first_ratio"] > 2 * v["lat"]["ratio_to_reference"]
    assert v["finding"]["verdict"] in ("ok", "not significant"), v["finding"]
    assert len(v["lat"]["discarded_attempts"]) == 1

    # A slowdown that persists through the re-measurement: "slower", reported, passes by default...
    slow_victim(2)
    r = bench_run(*args, *side)
    text = "\n".join(r.outlines + r.errlines)
    assert r.ret == pytest.ExitCode.OK, text[-4000:]
    v = victim()
    assert v["finding"]["verdict"] == "slower" and v["lat"]["p50_ms"] > 1e3 * SLEEP_S
    assert "confirmed slower than its history" in text
    report = next((bench_run.out / "side").glob(f"digits-{HOST}*.md")).read_text()
    section = report.split("## Against this machine's history")[1].split("\n## ")[0]
    assert VICTIM in section and "slower" in section and "yes" in section

    # ...and fails its item with --latency-confirm fail.
    slow_victim(2)
    r = bench_run(*args, *side, "--latency-confirm", "fail")
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    failed = [ln for ln in r.outlines if ln.startswith("FAILED")]
    assert len(failed) == 1 and f"test_latency[{VICTIM}-32x32]" in failed[0], failed

    # --latency-confirm off: no history read, nothing measured again.
    r = bench_run(*args, *side, "--latency-confirm", "off")
    assert r.ret == pytest.ExitCode.OK
    results = load_results(bench_run.out / "side" / f"digits-{HOST}.json")
    assert not any("confirmation" in lat for it in results["items"] for lat in it["latency"])
    assert not any(f["check"] == "latency_confirm" for f in results["gate"]["findings"])


def test_an_unreadable_history_file_is_skipped_and_named(bench_run, pytester):  # noqa: F811
    store = bench_run.out / "reports" / "results"
    store.mkdir(parents=True)
    (store / "broken.json").write_text("{not json")
    r = bench_run(*ARGS, "--baseline-missing", "skip")
    text = "\n".join(r.outlines + r.errlines)
    assert r.ret == pytest.ExitCode.OK, text[-3000:]
    assert "history: skipped" in text and "broken.json" in text
