"""Change points (bench/changepoints.py), the history of runs and its trend gate (bench/history.py,
`python -m bench history`).

The synthetic series have the noise of real ones: the in-run ratio of a quiet series moved by at
most 1.10x between unchanged-tree runs here (README, "Status of the latency gate"), i.e. a run-to-run
coefficient of variation of about 3-4%; lognormal, so skewed like timings. All seeded.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gate_fixtures import make_item, make_results

from bench.__main__ import EXIT_REGRESSION, EXIT_USER_ERROR, main
from bench.changepoints import e_divisive, split_statistics
from bench.history import build_series, find_changes, import_results, load_history, trend_failures

REPO = Path(__file__).resolve().parents[1]
RUN_CV = 0.035  # run-to-run noise of a quiet series' ratio


def _series(step: float, seed: int, n: int = 16, at: int = 10, cv: float = RUN_CV) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.4 * rng.lognormal(0.0, cv, n)
    x[at:] *= 1 + step
    return x


# --- the statistic ----------------------------------------------------------------------------------

def _q_brute_force(x: np.ndarray, t: int) -> float:
    a, b = x[:t], x[t:]
    m, k = len(a), len(b)
    between = np.abs(a[:, None] - b[None, :]).mean()
    within_a = np.abs(a[:, None] - a[None, :]).sum() / (m * (m - 1))
    within_b = np.abs(b[:, None] - b[None, :]).sum() / (k * (k - 1))
    return m * k / len(x) * (2 * between - within_a - within_b)


def test_the_prefix_sum_statistic_equals_the_definition():
    x = np.random.default_rng(0).normal(size=23)
    q = split_statistics(x, min_size=3)
    for t in range(3, 21):
        assert q[t] == pytest.approx(_q_brute_force(x, t), rel=1e-10)
    assert np.isneginf(q[:3]).all() and np.isneginf(q[21:]).all()


# --- detection on realistic series --------------------------------------------------------------------

SEEDS = range(30)


def _detected(step: float) -> list[list]:
    return [e_divisive(_series(step, seed), log=True, seed=seed) for seed in SEEDS]


def test_no_step_no_change_point():
    found = _detected(0.0)
    assert sum(bool(f) for f in found) <= 1  # alpha 0.01 over 30 series: at most one by chance


def test_a_20_percent_step_is_found_where_it_is_with_its_size():
    found = _detected(0.20)
    steps = [[c for c in cps if abs(c.index - 10) <= 1] for cps in found]  # a noisy run may blur it by one
    assert all(len(s) == 1 for s in steps), found
    assert sum(s[0].index == 10 for s in steps) >= 0.9 * len(SEEDS)
    assert all(s[0].ratio == pytest.approx(1.20, abs=0.08) for s in steps)
    # Binary segmentation tests each side again: a spurious second point is rare, not impossible.
    assert sum(len(cps) > 1 for cps in found) <= 1


def test_a_10_percent_step_is_found_in_most_series():
    found = _detected(0.10)
    hits = [cps for cps in found if any(abs(c.index - 10) <= 1 for c in cps)]
    assert len(hits) >= 0.8 * len(SEEDS)
    assert all(c.ratio == pytest.approx(1.10, abs=0.07) for cps in hits for c in cps if abs(c.index - 10) <= 1)


def test_a_5_percent_step_is_below_what_16_runs_at_this_noise_resolve_reliably():
    # Recorded, not hidden: at 3.5% run-to-run noise a 5% step is found only sometimes.
    found5, found10 = _detected(0.05), _detected(0.10)
    assert sum(bool(f) for f in found5) < sum(bool(f) for f in found10)


def test_a_step_needs_three_runs_on_its_new_level():
    x = _series(0.20, seed=1, n=12, at=10)  # only two runs after the step
    assert e_divisive(x, log=True) == []
    assert [c.index for c in e_divisive(np.append(x, x[-1]), log=True)] == [10]


def test_two_steps_are_both_found():
    x = _series(0.15, seed=2, n=24, at=8)
    x[16:] *= 1.2
    cps = e_divisive(x, log=True)
    assert [c.index for c in cps] == [8, 16]
    assert [round(c.ratio, 1) for c in cps] == [1.1, 1.2]  # each against its own neighbouring level


def test_a_step_undone_later_is_a_known_blind_spot():
    # Binary segmentation looks for one split first: a 20% bump over the middle third of 24 runs
    # (a regression and its fix) leaves no single split strong enough. Documented in the README.
    x = _series(0.20, seed=2, n=24, at=8)
    x[16:] /= 1.2
    assert e_divisive(x, log=True) == []


# --- the history of results files -----------------------------------------------------------------------

def _runs(n: int, step_at: int | None = None, step: float = 0.15, noisy: bool = False) -> list[dict]:
    """n results documents, one per run and commit, int8-static/ORT's ratio slowed from ``step_at``."""
    docs = []
    rng = np.random.default_rng(7)
    for i in range(n):
        slow = 1 + step if step_at is not None and i >= step_at else 1.0
        drift = rng.lognormal(0, 0.10)  # the machine: both sides of the ratio move together
        jitter = rng.lognormal(0, RUN_CV)
        items = [make_item("fp32", "eager", p50_ms=30.0 * drift, seed=i, shapes=((224, 224, 1),)),
                 make_item("int8-static", "onnxruntime", p50_ms=6.0 * drift * slow * jitter, seed=1000 + i,
                           cv=0.3 if noisy else 0.05, shapes=((224, 224, 1),))]
        docs.append(make_results(items, created_utc=f"2026-12-{1 + i // 24:02d}T{i % 24:02d}:00:00Z",
                                 commit=f"{i:02d}" + "c" * 38))
    return docs


def _store(tmp_path: Path, docs: list[dict]) -> Path:
    store = tmp_path / "store"
    store.mkdir(parents=True)
    for i, d in enumerate(docs):
        (store / f"run{i:03d}.json").write_text(json.dumps(d))
    return store


def test_series_per_item_and_shape_in_run_order(tmp_path):
    docs = load_history(_store(tmp_path, list(reversed(_runs(6)))))
    series = build_series(docs)
    assert [s.item_id for s in series] == ["fp32-eager-x86", "int8-static-onnxruntime-x86"]
    assert [r["commit"][:2] for r in series[1].runs] == ["00", "01", "02", "03", "04", "05"]
    assert all(r["ratio"] == 1.0 for r in series[0].runs)


def test_the_trend_gate_names_the_commit_range_of_a_recent_15_percent_slowdown(tmp_path):
    series = build_series(load_history(_store(tmp_path, _runs(13, step_at=10))))
    failures = trend_failures(find_changes(series))
    assert len(failures) == 1
    (f,) = failures
    assert f.series.item_id == "int8-static-onnxruntime-x86" and f.metric == "ratio" and f.point.index == 10
    text = f.describe()
    assert "1.1" in text and "slower" in text and f"between {'09' + 'c' * 10} " in text and f"and {'10' + 'c' * 10} " in text


def test_no_false_alarm_on_an_unchanged_history_with_machine_drift(tmp_path):
    series = build_series(load_history(_store(tmp_path, _runs(13))))
    assert trend_failures(find_changes(series)) == []


def test_an_old_step_or_a_noisy_series_does_not_fail_the_trend_gate(tmp_path):
    old = build_series(load_history(_store(tmp_path, _runs(16, step_at=4))))
    changes = find_changes(old)
    assert any(c.metric == "ratio" and c.point.index == 4 for c in changes)  # found and reported...
    assert trend_failures(changes, last_runs=5) == []  # ...but not recent: not the gate's
    noisy = build_series(load_history(_store(tmp_path / "n", _runs(13, step_at=10, noisy=True))))
    assert trend_failures(find_changes(noisy)) == []  # cv 0.3: not a quiet series


def test_cli_history_gate_exit_codes_and_report(tmp_path, capsys):
    store = _store(tmp_path, _runs(13, step_at=10))
    out = tmp_path / "out" / "history.md"
    assert main(["history", "--store", str(store)]) == 0  # without --gate it only reports
    assert main(["history", "--store", str(store), "--gate", "-o", str(out)]) == EXIT_REGRESSION
    printed = capsys.readouterr().out
    assert "FAIL int8-static-onnxruntime-x86 224x224/b1 [ratio]" in printed and "trend gate: 1 series" in printed
    md = out.read_text()
    assert "## Change points" in md and "| FAIL |" in md
    pngs = list((out.parent / "history-plots").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000
    quiet = _store(tmp_path / "q", _runs(13))
    assert main(["history", "--store", str(quiet), "--gate"]) == 0


def test_cli_history_import_validates_copies_and_skips_duplicates(tmp_path, capsys):
    src = tmp_path / "ci-artifact.json"
    src.write_text(json.dumps(_runs(1)[0]))
    store = tmp_path / "hist"
    assert main(["history", "import", str(src), "--store", str(store)]) == 0
    assert main(["history", "import", str(src), "--store", str(store)]) == 0
    assert len(list(store.glob("*.json"))) == 1 and "already in" in capsys.readouterr().out
    bad = tmp_path / "truncated.json"
    bad.write_text(src.read_text()[:100])
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_runs(2)[1]))
    assert main(["history", "import", str(other), str(bad), "--store", str(store)]) == EXIT_USER_ERROR
    assert "truncated.json" in capsys.readouterr().err
    assert len(list(store.glob("*.json"))) == 1  # nothing of that import was written


def test_cli_history_on_a_missing_store_is_one_clear_error(tmp_path, capsys):
    assert main(["history", "--store", str(tmp_path / "nope")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pytest bench/" in err and len(err.strip().splitlines()) == 1


def test_history_works_on_the_committed_results(tmp_path, capsys):
    files = [REPO / "reports" / "digits-x86.json", REPO / "reports" / "imagefolder-cifar10-jpeg-x86.json"]
    store = tmp_path / "hist"
    import_results(files, store)
    assert main(["history", "--store", str(store), "--gate"]) == 0  # one run per series: nothing to detect
    assert "2 runs" in capsys.readouterr().out
