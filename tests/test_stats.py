import base64
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from bench.stats import (
    latency_stats,
    mann_whitney_p,
    mcnemar_p,
    pack_bits,
    ratio_of_ratios,
    unpack_bits,
    wilson_interval,
)

# --- latency_stats ----------------------------------------------------------------------------


def test_latency_stats_known_values():
    s = latency_stats([1.0, 2.0, 3.0, 4.0, 5.0])
    assert set(s) == {"p50_ms", "p90_ms", "p99_ms", "min_ms", "mean_ms", "stdev_ms", "cv"}
    assert s["p50_ms"] == 3.0
    assert s["p90_ms"] == pytest.approx(4.6)  # linear interpolation between 4 and 5
    assert s["p99_ms"] == pytest.approx(4.96)
    assert s["min_ms"] == 1.0
    assert s["mean_ms"] == 3.0
    assert s["stdev_ms"] == pytest.approx(math.sqrt(2.5))  # sample stdev, ddof=1
    assert s["cv"] == pytest.approx(math.sqrt(2.5) / 3.0)
    assert all(type(v) is float for v in s.values())


def test_latency_stats_single_sample_has_zero_spread():
    s = latency_stats([4.2])
    assert s["p50_ms"] == s["p99_ms"] == s["min_ms"] == 4.2
    assert s["stdev_ms"] == 0.0 and s["cv"] == 0.0


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")], [[1.0, 2.0]]])
def test_latency_stats_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        latency_stats(bad)


# --- wilson_interval --------------------------------------------------------------------------


def test_wilson_known_value():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.7634, abs=1e-4)


def test_wilson_k_zero_and_k_n_are_exact_at_the_boundary():
    z2 = 1.96**2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0
    assert lo == pytest.approx(10 / (10 + z2))


def test_wilson_no_data_is_uninformative():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@given(st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_estimate_and_is_symmetric(kn):
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo2, hi2 = wilson_interval(n - k, n)
    assert lo == pytest.approx(1 - hi2, abs=1e-12)
    assert hi == pytest.approx(1 - lo2, abs=1e-12)


@pytest.mark.parametrize("k,n", [(-1, 5), (6, 5), (0, -1)])
def test_wilson_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError):
        wilson_interval(k, n)


# --- mcnemar_p --------------------------------------------------------------------------------


def test_mcnemar_no_discordant_pairs_is_p_one():
    a = np.array([True, False, True, True])
    assert mcnemar_p(a, a.copy()) == 1.0
    assert mcnemar_p(np.array([], bool), np.array([], bool)) == 1.0


def test_mcnemar_is_symmetric_in_its_arguments():
    rng = np.random.default_rng(0)
    a, b = rng.random(300) < 0.9, rng.random(300) < 0.8
    assert mcnemar_p(a, b) == mcnemar_p(b, a)


def test_mcnemar_exact_binomial_values():
    # 10 discordant, all one way: two-sided exact p = 2 * 0.5**10.
    a = np.array([True] * 10 + [True] * 50)
    b = np.array([False] * 10 + [True] * 50)
    assert mcnemar_p(a, b) == pytest.approx(2 * 0.5**10)
    # 8 vs 2 discordant: p = 2 * P(X <= 2 | n=10) = 2 * (1 + 10 + 45) / 1024.
    a = np.array([True] * 8 + [False] * 2)
    b = ~a
    assert mcnemar_p(a, b) == pytest.approx(2 * 56 / 1024)
    # Concordant images do not change the p-value.
    pad = np.ones(100, bool)
    assert mcnemar_p(np.r_[a, pad], np.r_[b, pad]) == pytest.approx(2 * 56 / 1024)


def test_mcnemar_balanced_disagreement_is_not_significant():
    a = np.array([True, False] * 20)
    assert mcnemar_p(a, ~a) == 1.0


def test_mcnemar_rejects_length_mismatch():
    with pytest.raises(ValueError):
        mcnemar_p(np.ones(3, bool), np.ones(4, bool))


# --- mann_whitney_p ---------------------------------------------------------------------------


def test_mann_whitney_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(0.1, 0.1, 80), rng.lognormal(0.0, 0.1, 90)
    expected = sps.mannwhitneyu(a, b, alternative="greater").pvalue
    assert mann_whitney_p(a, b) == pytest.approx(expected)
    assert mann_whitney_p(a, b) < 0.01 < mann_whitney_p(a, b, alternative="less")


def test_mann_whitney_identical_samples_is_not_significant():
    assert mann_whitney_p([1.0] * 10, [1.0] * 10) == pytest.approx(1.0)


def test_mann_whitney_rejects_unknown_alternative():
    with pytest.raises(ValueError):
        mann_whitney_p([1.0], [2.0], alternative="bigger")


# --- pack_bits / unpack_bits ------------------------------------------------------------------


def test_pack_bits_uses_little_bit_order():
    assert pack_bits([True] + [False] * 7) == base64.b64encode(b"\x01").decode()
    assert pack_bits([False] * 7 + [True]) == base64.b64encode(b"\x80").decode()


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 360, 361])
def test_pack_unpack_round_trip(n):
    mask = np.random.default_rng(n).random(n) < 0.7
    assert np.array_equal(unpack_bits(pack_bits(mask), n), mask)


@given(st.lists(st.booleans(), max_size=500))
def test_pack_unpack_round_trip_property(bits):
    mask = np.array(bits, dtype=bool)
    out = unpack_bits(pack_bits(mask), len(bits))
    assert out.dtype == bool and np.array_equal(out, mask)


@pytest.mark.parametrize("s,n", [
    ("AQ==", 9),        # one byte cannot hold 9 bits
    ("AQA=", 8),        # two bytes for 8 bits
    ("not base64!", 8),
    ("gA==", 7),        # bit 7 set but only 7 images: padding must be zero
])
def test_unpack_rejects_mismatched_input(s, n):
    with pytest.raises(ValueError):
        unpack_bits(s, n)


# --- ratio_of_ratios (which runtime wins) -----------------------------------------------------

def _series(center: float, n: int = 60, seed: int = 1) -> list[float]:
    return list(center * (1 + 0.02 * np.random.default_rng(seed).standard_normal(n)))


def test_ratio_of_ratios_cancels_drift_between_items():
    # B ran while the machine was 2x slower (its reference too): relative to their references,
    # A and B are equally fast, whatever their raw medians say.
    point, lo, hi = ratio_of_ratios(_series(5), _series(20, seed=2), _series(10, seed=3), _series(40, seed=4))
    assert point == pytest.approx(1.0, abs=0.02)
    assert lo < 1 < hi


def test_ratio_of_ratios_finds_a_real_margin_with_an_interval_around_it():
    point, lo, hi = ratio_of_ratios(_series(5), _series(20, seed=2), _series(7.5, seed=3), _series(20, seed=4))
    assert point == pytest.approx(1.5, rel=0.02)
    assert 1.4 < lo < point < hi < 1.6


def test_ratio_of_ratios_is_deterministic_and_rejects_bad_input():
    args = (_series(5), _series(20, seed=2), _series(6, seed=3), _series(20, seed=4))
    assert ratio_of_ratios(*args) == ratio_of_ratios(*args)
    with pytest.raises(ValueError):
        ratio_of_ratios([], *args[1:])


def test_p90_upper_bound_is_an_order_statistic_with_99_percent_coverage():
    from bench.stats import quantile_upper_bound

    assert quantile_upper_bound(np.arange(1.0, 44.0)) is None  # 43 samples: 0.9**43 > 1%, no sample bounds p90
    assert quantile_upper_bound(np.arange(1.0, 45.0)) == 44.0  # 0.9**44 < 1%: the largest of 44
    assert quantile_upper_bound(np.arange(1.0, 101.0)) == 97.0
    # Coverage, distribution-free: on skewed timings the bound is >= the true p90 in >= 99% of runs.
    rng = np.random.default_rng(0)
    true_p90 = float(np.exp(0.3 * 1.2815515655446004))  # lognormal(0, 0.3)
    covered = [quantile_upper_bound(rng.lognormal(0, 0.3, 100)) >= true_p90 for _ in range(2000)]
    assert np.mean(covered) >= 0.985
