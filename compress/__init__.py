"""Compression core: build ResNet18 variants (pruned, quantized) from one trained checkpoint."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resnet18-bench")
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0+unknown"
