"""Statistics for the benchmark gate: pure functions on plain arrays, no torch.

Latency samples are right-skewed and occasionally hit by scheduler hiccups, so the gate
compares medians and uses rank-based or resampling tests; means and t-tests are reported for
context only.
"""
from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence

import numpy as np


def _as_samples(samples_ms: Sequence[float], name: str = "samples_ms") -> np.ndarray:
    arr = np.asarray(samples_ms, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """Summary of one latency series with the key names of the results schema.

    stdev is the sample standard deviation (ddof=1; 0 for a single sample) and cv = stdev/mean,
    the noise measure pyperf warns on.
    """
    arr = _as_samples(samples_ms)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    mean = float(arr.mean())
    stdev = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "min_ms": float(arr.min()),
        "mean_ms": mean,
        "stdev_ms": stdev,
        "cv": stdev / mean if mean > 0 else 0.0,
    }


def quantile_upper_bound(samples_ms: Sequence[float], q: float = 0.90, confidence: float = 0.99) -> float | None:
    """A distribution-free upper confidence bound on the q-th percentile, as MLPerf's early
    stopping states its tail latency: the k-th smallest sample, with k the smallest index such
    that at most k - 1 of n samples fall below the true percentile with probability >= confidence
    (the count below it is Binomial(n, q)). None when n is too small for any sample to be such a
    bound (99% on the 90th percentile needs n >= 44)."""
    from scipy.stats import binom  # lazy, see mcnemar_p

    arr = np.sort(_as_samples(samples_ms))
    n = arr.size
    k = int(binom.ppf(confidence, n, q)) + 1  # smallest k with P(Binomial(n, q) <= k - 1) >= confidence
    while k > 1 and binom.cdf(k - 2, n, q) >= confidence:  # ppf rounding guard
        k -= 1
    return float(arr[k - 1]) if k <= n else None


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n.

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at k=0 or k=n,
    which is exactly where a good model's accuracy sits. n=0 gives the uninformative (0, 1).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Exact ends: rounding would otherwise give 1e-17 or 0.9999999999 at the boundaries.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _bool_mask(mask, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D")
    if arr.dtype != bool:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean")
        arr = arr.astype(bool)
    return arr


def mcnemar_p(a_correct, b_correct) -> float:
    """Exact two-sided McNemar test on paired per-image correctness.

    Only the discordant images matter (a right and b wrong, or the reverse); under "same
    accuracy" each discordant image is a fair coin, so the p-value is an exact binomial test.
    No discordant pairs means no evidence of a difference: p = 1.
    """
    a = _bool_mask(a_correct, "a_correct")
    b = _bool_mask(b_correct, "b_correct")
    if a.shape != b.shape:
        raise ValueError(f"masks differ in length: {a.size} vs {b.size}")
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    n = only_a + only_b
    if n == 0:
        return 1.0
    from scipy.stats import binomtest  # lazy: scipy.stats costs ~0.7 s to import

    return float(min(1.0, binomtest(min(only_a, only_b), n, 0.5).pvalue))


def mann_whitney_p(a: Sequence[float], b: Sequence[float], alternative: str = "greater") -> float:
    """Mann-Whitney U p-value; alternative="greater" asks whether a tends to be larger (slower).

    Rank-based, so a few outliers from a noisy neighbour do not decide the verdict.
    """
    a_arr = _as_samples(a, "a")
    b_arr = _as_samples(b, "b")
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be greater, less or two-sided, got {alternative!r}")
    from scipy.stats import mannwhitneyu  # lazy, see mcnemar_p

    return float(mannwhitneyu(a_arr, b_arr, alternative=alternative).pvalue)


def pack_bits(mask) -> str:
    """Per-image correctness as base64 of numpy.packbits(bitorder="little").

    360 images -> 60 characters: small enough to keep in every results file.
    """
    arr = _bool_mask(mask, "mask")
    return base64.b64encode(np.packbits(arr, bitorder="little").tobytes()).decode("ascii")


def unpack_bits(s: str, n: int) -> np.ndarray:
    """Inverse of pack_bits; raises ValueError when ``s`` is not base64 of exactly n bits."""
    if not isinstance(s, str):
        raise TypeError("expected a base64 string")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as err:
        raise ValueError(f"not valid base64 ({err})") from None
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"holds {len(raw)} bytes, {n} bits need {(n + 7) // 8}")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    if bits[n:].any():
        raise ValueError("padding bits after the last image are set")
    return bits[:n].astype(bool)


def ratio_of_ratios(a_ms: Sequence[float], a_ref_ms: Sequence[float], b_ms: Sequence[float],
                    b_ref_ms: Sequence[float], n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """How much slower B is than A, each first divided by the reference it was interleaved with:
    (point, low, high) of (median(B)/median(B_ref)) / (median(A)/median(A_ref)).

    Items are timed one after the other, so their raw medians differ by the machine's drift too;
    each one's ratio to its interleaved reference cancels that drift. The interval is a
    percentile bootstrap over all four series (seeded: the same inputs give the same interval)."""
    a, ar, b, br = (_as_samples(s, n) for s, n in ((a_ms, "a_ms"), (a_ref_ms, "a_ref_ms"),
                                                    (b_ms, "b_ms"), (b_ref_ms, "b_ref_ms")))

    def rr(x, xr, y, yr):
        return (np.median(y, axis=-1) / np.median(yr, axis=-1)) / (np.median(x, axis=-1) / np.median(xr, axis=-1))

    point = float(rr(a, ar, b, br))
    rng = np.random.default_rng(seed)
    boots = rr(*(s[rng.integers(0, s.size, size=(n_boot, s.size))] for s in (a, ar, b, br)))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return point, float(lo), float(hi)


def prediction_p_value(history: Sequence[float], x: float) -> float:
    """One-sided p-value that ``x`` is larger than the next draw of the process that produced
    ``history`` would be: Student's t on the prediction error, (x - mean) / (sd * sqrt(1 + 1/n))
    with n - 1 degrees of freedom (a normal process of unknown mean and variance). Needs n >= 2
    and some spread; a history of identical values gives 1.0 for x at or below it and 0.0 above."""
    h = _as_samples(history, "history")
    if h.size < 2:
        raise ValueError("history needs at least 2 values")
    if not math.isfinite(x):
        raise ValueError("x must be finite")
    sd = float(h.std(ddof=1))
    if sd == 0:
        return 1.0 if x <= h[0] else 0.0
    from scipy.stats import t  # lazy, see mcnemar_p

    return float(t.sf((x - float(h.mean())) / (sd * math.sqrt(1 + 1 / h.size)), h.size - 1))


def detectable_shift(n: int, sd: float, alpha: float, power: float = 0.8) -> float:
    """The smallest upward shift of the next value that ``prediction_p_value`` on a history of
    ``n`` values with standard deviation ``sd`` flags at ``alpha`` with probability ``power``
    (the power statement: smaller real changes are more often missed than caught). Approximate:
    central t quantiles stand in for the noncentral t, close enough from n = 5 on."""
    if n < 2:
        raise ValueError("n must be at least 2")
    if sd < 0 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("need sd >= 0, 0 < alpha < 1 and 0 < power < 1")
    from scipy.stats import t  # lazy, see mcnemar_p

    return float((t.ppf(1 - alpha, n - 1) + t.ppf(power, n - 1)) * sd * math.sqrt(1 + 1 / n))
