"""Compression core: build ResNet18 variants (pruned, quantized) from one trained checkpoint."""

__version__ = "0.1.0"
