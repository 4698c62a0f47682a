"""Change points in a series of runs: E-Divisive means (Matteson & James 2014), the method MongoDB's
signal-processing-algorithms and Apache Otava use to find performance steps in CI histories.

Pure functions on plain arrays. The statistic for a split of ``x`` into X = x[:t] and Y = x[t:] is

    Q(t) = t * (n - t) / n * (2 E|X - Y| - E|X - X'| - E|Y - Y'|)

(the energy distance between the two sides, scaled by their sizes; pairs within a side exclude a
point paired with itself). The best split is significant when Q at that split beats the best split
of at least (1 - alpha) of random reorderings of the same values (a permutation test: no
assumption about the noise's distribution, which for latency ratios is skewed and has outliers).
Binary segmentation then looks for further steps on each side. Seeded: the same series gives the
same answer, run after run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 0.01
DEFAULT_PERMUTATIONS = 499
# A step needs at least this many runs on each side before it can be told from one bad run.
DEFAULT_MIN_SIZE = 3


@dataclass(frozen=True)
class ChangePoint:
    index: int  # the first run of the new level
    p_value: float
    before_median: float  # median of the segment ending at index (back to the previous change point)
    after_median: float  # median of the segment starting at index (up to the next change point)

    @property
    def ratio(self) -> float:
        return self.after_median / self.before_median if self.before_median else float("inf")


def split_statistics(x: np.ndarray, min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
    """Q(t) for every split t in [min_size, n - min_size] (other entries -inf), in O(n^2)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    q = np.full(n + 1, -np.inf)
    if n < 2 * min_size:
        return q
    d = np.abs(x[:, None] - x[None, :])
    c = np.zeros((n + 1, n + 1))
    c[1:, 1:] = d.cumsum(0).cumsum(1)  # c[a, b] = sum of d[:a, :b]
    t = np.arange(min_size, n - min_size + 1)
    m = n - t
    within_x = c[t, t]  # both orders of each pair, diagonal zero
    between = c[t, n] - c[t, t]  # sum over i < t <= j of d[i, j]
    within_y = c[n, n] - 2 * between - within_x
    e = 2 * between / (t * m) - within_x / (t * (t - 1)) - within_y / (m * (m - 1))
    q[t] = t * m / n * e
    return q


def best_split(x: np.ndarray, min_size: int = DEFAULT_MIN_SIZE) -> tuple[int | None, float]:
    q = split_statistics(x, min_size)
    if not np.isfinite(q).any():
        return None, float("-inf")
    t = int(np.argmax(q))
    return t, float(q[t])


def split_p_value(x: np.ndarray, q_best: float, rng: np.random.Generator, permutations: int,
                  min_size: int = DEFAULT_MIN_SIZE) -> float:
    """The share of random reorderings whose best split is at least as strong (with the +1 that
    keeps a permutation p-value honest)."""
    hits = sum(best_split(rng.permutation(x), min_size)[1] >= q_best for _ in range(permutations))
    return (hits + 1) / (permutations + 1)


def e_divisive(x, alpha: float = DEFAULT_ALPHA, permutations: int = DEFAULT_PERMUTATIONS,
               min_size: int = DEFAULT_MIN_SIZE, seed: int = 0, log: bool = False) -> list[ChangePoint]:
    """Significant change points of ``x``, in order, with the medians of ``x`` on both sides.
    ``log``: detect on log(x), for multiplicative steps (a 10% slowdown is the same step at 2 ms
    and at 20 ms); ``x`` must then be positive."""
    raw = np.asarray(x, dtype=float)
    if log and (raw <= 0).any():
        raise ValueError("log=True needs positive values")
    x = np.log(raw) if log else raw
    rng = np.random.default_rng(seed)
    found: list[tuple[int, float]] = []
    segments = [(0, len(x))]
    while segments:
        lo, hi = segments.pop()
        t, q = best_split(x[lo:hi], min_size)
        if t is None:
            continue
        p = split_p_value(x[lo:hi], q, rng, permutations, min_size)
        if p <= alpha:
            found.append((lo + t, p))
            segments += [(lo, lo + t), (lo + t, hi)]
    found.sort()
    bounds = [0] + [i for i, _ in found] + [len(x)]
    return [ChangePoint(i, p, float(np.median(raw[bounds[k]:i])), float(np.median(raw[i:bounds[k + 2]])))
            for k, (i, p) in enumerate(found)]
