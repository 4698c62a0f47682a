"""Typed parsers for the plugin's options: a bad value fails at start-up with a usage error."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from .devices import DEVICE_CHOICES

BASELINE_MISSING = ("fail", "skip", "record")
ORT_OPT_LEVELS = ("all", "extended", "basic", "disabled")


def _fail(msg: str):
    raise argparse.ArgumentTypeError(msg)


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        _fail(f"expected a positive integer, got {s!r}")
    if v < 1:
        _fail(f"expected a positive integer, got {v}")
    return v


def nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        _fail(f"expected a number, got {s!r}")
    if not (v >= 0 and v < float("inf")):
        _fail(f"expected a finite number >= 0, got {s}")
    return v


# Throughput at the batch a deployment would use: 32 for a CPU box, 256 to fill a GPU.
DEFAULT_BATCH_SIZES = {"cpu": (1, 32), "cuda": (1, 256)}


def _csv(vals) -> str:
    return ",".join(map(str, vals))


def default_batch_sizes(device: str) -> tuple[int, ...]:
    return DEFAULT_BATCH_SIZES["cuda" if device == "cuda" else "cpu"]


def int_list(s: str) -> tuple[int, ...]:
    """``1,32`` -> (1, 32); 1 is always included (batch-1 latency is the headline number)."""
    vals = {positive_int(p.strip()) for p in s.split(",") if p.strip()}
    if not vals:
        _fail("expected a comma list of positive integers, e.g. 1,32")
    return tuple(sorted(vals | {1}))


def name_list(s: str) -> tuple[str, ...]:
    vals = tuple(dict.fromkeys(p.strip() for p in s.split(",") if p.strip()))
    if not vals:
        _fail("expected a comma list of names")
    return vals


def input_sizes(s: str) -> tuple[str | int, ...]:
    """``native,224`` -> ("native", 224): square sizes in pixels, or the card's native size."""
    out: list[str | int] = []
    for p in (p.strip() for p in s.split(",")):
        if not p:
            continue
        if p == "native":
            out.append(p)
            continue
        hw = p.split("x")
        p = hw[0] if len(hw) == 2 and hw[0] == hw[1] else p  # 224x224 -> 224; 224x224x224 stays an error
        try:
            v = int(p)
        except ValueError:
            _fail(f"input size {p!r}: expected 'native' or a square size in pixels such as 224 or 224x224")
        if not 8 <= v <= 1024:
            _fail(f"input size {v}: expected 8 to 1024 pixels")
        out.append(v)
    if not out:
        _fail("expected e.g. native,224")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class BenchOptions:
    device: str
    runtimes: tuple[str, ...] | None
    variants: tuple[str, ...]
    dataset: str
    data_root: Path | None
    checkpoint: Path | None
    card: Path | None
    cache_dir: Path | None
    artifact_dir: Path | None
    download: bool
    eval_samples: int | None
    calib_samples: int
    finetune_epochs: float | None
    threads: int
    batch_sizes: tuple[int, ...]
    input_sizes: tuple[str | int, ...]
    min_samples: int
    min_time_s: float
    report_dir: Path
    baseline_dir: Path
    update_baselines: bool
    baseline_missing: str
    gate: bool
    ort_opt_level: str
    latency_gate: str = "fail"
    ort_int8_format: str = "qdq"


def add_options(parser, root: Path) -> None:
    g = parser.getgroup("resnet18-bench", "compressed ResNet18 benchmark (pytest bench/)")
    g.addoption("--device", default="cpu", choices=DEVICE_CHOICES,
                help="cpu (this host's architecture), x86, arm or cuda; a device the host lacks is a usage error")
    g.addoption("--runtime", type=name_list, default=None,
                help="comma list of eager, torchscript, onnxruntime (default: every runtime available here)")
    g.addoption("--variant", type=name_list, default=("*",), help="comma list of variant names or glob patterns")
    g.addoption("--dataset", default="digits", choices=("digits", "imagefolder", "cifar10"),
                help="digits (embedded, offline default), imagefolder, cifar10")
    g.addoption("--data-root", type=Path, default=None, help="dataset root for imagefolder / cifar10")
    g.addoption("--checkpoint", type=Path, default=None, help="fp32 checkpoint; default: the embedded digits model")
    g.addoption("--card", type=Path, default=None, help="model card JSON (default: beside the checkpoint)")
    g.addoption("--cache-dir", type=Path, default=None, help="data and artifact cache (default: user cache dir)")
    g.addoption("--artifact-dir", type=Path, default=None, help="where variants are built")
    g.addoption("--download", action="store_true", help="cifar10: download when missing")
    g.addoption("--eval-samples", type=positive_int, default=None, help="fixed stratified test subset (default: all)")
    g.addoption("--calib-samples", type=positive_int, default=512, help="train images for int8 calibration")
    g.addoption("--finetune-epochs", type=nonneg_float, default=None, help="override pruned variants' fine-tune")
    g.addoption("--threads", type=positive_int, default=os.cpu_count() or 1, help="intra-op threads, every runtime")
    g.addoption("--batch-size", type=int_list, default=None,
                help="comma list; 1 always included; throughput at the largest "
                     f"(default {_csv(DEFAULT_BATCH_SIZES['cpu'])} on CPUs, {_csv(DEFAULT_BATCH_SIZES['cuda'])} on CUDA)")
    g.addoption("--input-size", type=input_sizes, default=("native", 224),
                help="latency shapes: 'native' (the card's) and square sizes (default native,224)")
    g.addoption("--min-samples", type=positive_int, default=100, help="latency samples per item, at least")
    g.addoption("--min-time", type=nonneg_float, default=2.0, help="seconds per latency item, at least")
    g.addoption("--report-dir", type=Path, default=root / "reports", help="markdown report and results JSON")
    g.addoption("--baseline-dir", type=Path, default=root / "baselines", help="stored baselines")
    g.addoption("--update-baselines", action="store_true", help="record or refresh baselines from this run")
    g.addoption("--baseline-missing", default="fail", choices=BASELINE_MISSING,
                help="where no baseline exists: fail (default), skip, or record it")
    g.addoption("--no-gate", action="store_true", help="measure and report only; compare nothing")
    g.addoption("--latency-gate", default="fail", choices=("fail", "report"),
                help="latency regressions fail their item (default) or are only reported")
    g.addoption("--ort-opt-level", default="all", choices=ORT_OPT_LEVELS,
                help="ONNX Runtime graph optimization level (recorded in the results)")
    g.addoption("--ort-int8-format", default="qdq", choices=("qdq", "qdq-s8s8", "qoperator"),
                help="ONNX Runtime static int8: qdq (QuantizeLinear/DequantizeLinear, uint8 activations, "
                     "int8 weights), qdq-s8s8 (int8 activations: slow kernels on x86) or qoperator "
                     "(QLinearConv, U8S8); recorded in the results")


def read_options(config) -> BenchOptions:
    o = config.getoption
    return BenchOptions(
        device=o("--device"), runtimes=o("--runtime"), variants=o("--variant"), dataset=o("--dataset"),
        data_root=o("--data-root"), checkpoint=o("--checkpoint"), card=o("--card"), cache_dir=o("--cache-dir"),
        artifact_dir=o("--artifact-dir"), download=o("--download"), eval_samples=o("--eval-samples"),
        calib_samples=o("--calib-samples"), finetune_epochs=o("--finetune-epochs"), threads=o("--threads"),
        batch_sizes=o("--batch-size") or default_batch_sizes(o("--device")), input_sizes=o("--input-size"), min_samples=o("--min-samples"),
        min_time_s=o("--min-time"), report_dir=o("--report-dir"), baseline_dir=o("--baseline-dir"),
        update_baselines=o("--update-baselines"), baseline_missing=o("--baseline-missing"),
        gate=not o("--no-gate"), ort_opt_level=o("--ort-opt-level"), latency_gate=o("--latency-gate"),
        ort_int8_format=o("--ort-int8-format"))
