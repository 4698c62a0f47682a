"""bench/changepoints.py against MongoDB's E-Divisive (signal-processing-algorithms), on series with
one clear step (both put the best split, and a change point, at the step) and on series with none.

signal-processing-algorithms pins numpy < 2 and an old setuptools, so it cannot live in the
project's environment: this file imports nothing but numpy and bench.changepoints, and runs in its
own environment with `tox -e changepoints-reference` (elsewhere it skips, saying so).
"""
from __future__ import annotations

import numpy as np
import pytest

from bench.changepoints import e_divisive, split_statistics

es = pytest.importorskip("signal_processing_algorithms.energy_statistics.energy_statistics",
                         reason="signal-processing-algorithms is not installed: run `tox -e changepoints-reference`")


def _series(step: float, seed: int, n: int, at: int, cv: float = 0.035) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.4 * rng.lognormal(0.0, cv, n)
    x[at:] *= 1 + step
    return x


def test_both_put_the_step_where_it_is():
    # MongoDB's statistic normalizes the within-sample terms its own way (its t-values are not our
    # Q), so the check is where the best split lands and what is found, not the statistic's value.
    # Their permutation test draws from numpy's global generator: seeded here.
    rng = np.random.default_rng(3)
    for k in range(40):
        n, step = int(rng.integers(14, 30)), float(rng.choice([0.2, -0.15, 0.25]))
        at = int(rng.integers(4, n - 4))
        x = np.log(_series(step, int(rng.integers(1 << 30)), n=n, at=at))
        their_t = es.calculate_t_values(es.calculate_distance_matrix(x))
        assert int(np.argmax(split_statistics(x, min_size=2))) == int(np.argmax(their_t)) == at
        np.random.seed(k)
        theirs = es.e_divisive(list(x), pvalue=0.01, permutations=199)
        ours = [c.index for c in e_divisive(x, alpha=0.01, permutations=199)]
        assert at in theirs and at in ours, (at, theirs, ours)


def test_as_few_false_alarms_as_mongodbs_on_step_free_series():
    ours = theirs = 0
    for seed in range(40):
        x = np.log(_series(0.0, seed, n=20, at=20))
        ours += bool(e_divisive(x, alpha=0.01, permutations=199, seed=seed))
        np.random.seed(seed)
        theirs += bool(es.e_divisive(list(x), pvalue=0.01, permutations=199))
    assert ours <= theirs + 1
