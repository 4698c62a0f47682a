"""Typed parsers for command-line values, shared by ``python -m compress`` and the pytest plugin:
a bad value is a usage error naming the value, raised before any work starts."""
from __future__ import annotations

import argparse


def fail(msg: str):
    raise argparse.ArgumentTypeError(msg)


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        fail(f"expected a positive integer, got {s!r}")
    if v < 1:
        fail(f"expected a positive integer, got {v}")
    return v


def nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        fail(f"expected an integer >= 0, got {s!r}")
    if v < 0:
        fail(f"expected an integer >= 0, got {v}")
    return v


def nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        fail(f"expected a number, got {s!r}")
    if not (v >= 0 and v < float("inf")):
        fail(f"expected a finite number >= 0, got {s}")
    return v


def positive_float(s: str) -> float:
    v = nonneg_float(s)
    if v <= 0:
        fail(f"expected a number > 0, got {s}")
    return v
