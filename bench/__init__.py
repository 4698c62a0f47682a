"""The benchmark harness (pytest plugin in bench.plugin).

Importing this package sets how long PyTorch's OpenMP threads spin after a parallel region, and
must therefore run before torch is first imported (the pytest11 entry point loads it early).
libgomp's default spins for ~300,000 iterations (about a millisecond) after every parallel region; with
two thread pools in one process (PyTorch and ONNX Runtime) on a 2-core machine those spinning
threads sat on the cores the other runtime needed and made its timings depend on what ran just
before. 10,000 keeps eager PyTorch at its stand-alone speed (docs/PERFORMANCE.md). An explicit
GOMP_SPINCOUNT in the environment wins; the value in force is recorded in every results file.
"""
import os
import sys
from importlib.metadata import PackageNotFoundError, version

OMP_SPINCOUNT_DEFAULT = "10000"
# Recorded in results: once libgomp is loaded it ignores later changes to the environment.
TORCH_PRELOADED = "torch" in sys.modules
if not TORCH_PRELOADED:
    os.environ.setdefault("GOMP_SPINCOUNT", OMP_SPINCOUNT_DEFAULT)

try:
    __version__ = version("resnet18-bench")  # recorded in every results file
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0+unknown"
