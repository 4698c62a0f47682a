"""Typed parsers for command-line values, shared by ``python -m compress`` and the pytest plugin:
a bad value is a usage error naming the value, raised before any work starts."""
from __future__ import annotations

import argparse


def fail(msg: str):
    raise argparse.ArgumentTypeError(msg)


def _int_at_least(s: str, minimum: int, expected: str) -> int:
    try:
        v = int(s)
    except ValueError:
        fail(f"expected {expected}, got {s!r}")
    if v < minimum:
        fail(f"expected {expected}, got {v}")
    return v


def positive_int(s: str) -> int:
    return _int_at_least(s, 1, "a positive integer")


def nonneg_int(s: str) -> int:
    return _int_at_least(s, 0, "an integer >= 0")


def nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        fail(f"expected a number, got {s!r}")
    if not (v >= 0 and v < float("inf")):
        fail(f"expected a finite number >= 0, got {s}")
    return v


def nonneg_float_list(s: str) -> tuple[float, ...]:
    """"2,6" -> (2.0, 6.0): one or more numbers >= 0, comma-separated, sorted, duplicates dropped."""
    parts = [x.strip() for x in s.split(",")]
    if not s.strip() or not all(parts):
        fail(f"expected numbers >= 0 separated by commas, got {s!r}")
    return tuple(sorted({nonneg_float(x) for x in parts}))


def fraction(s: str) -> float:
    """A number strictly between 0 and 1 (a significance level, a relative change)."""
    try:
        v = float(s)
    except ValueError:
        fail(f"expected a number, got {s!r}")
    if not 0 < v < 1:
        fail(f"expected a number between 0 and 1, got {s}")
    return v


def positive_float(s: str) -> float:
    v = nonneg_float(s)
    if v <= 0:
        fail(f"expected a number > 0, got {s}")
    return v
