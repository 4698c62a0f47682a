"""Typed parsers for the plugin's options: a bad value fails at start-up with a usage error."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.argtypes import fail, nonneg_float, nonneg_int, positive_float, positive_int
from compress.data import DEFAULT_CACHE_MAX_GB

from .devices import DEVICE_CHOICES

BASELINE_MISSING = ("fail", "skip", "record")


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
        fail("expected a comma list of positive integers, e.g. 1,32")
    return tuple(sorted(vals | {1}))


def shard_spec(s: str) -> tuple[int, int]:
    """``2/3`` -> (2, 3): this machine measures the second of three shards of the matrix."""
    try:
        k, n = (int(p) for p in s.split("/"))
    except ValueError:
        fail(f"expected K/N such as 1/3, got {s!r}")
    if not 1 <= k <= n:
        fail(f"shard {s}: K must be from 1 to N")
    return k, n


def name_list(s: str) -> tuple[str, ...]:
    vals = tuple(dict.fromkeys(p.strip() for p in s.split(",") if p.strip()))
    if not vals:
        fail("expected a comma list of names")
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
            fail(f"input size {p!r}: expected 'native' or a square size in pixels such as 224 or 224x224")
        if not 8 <= v <= 1024:
            fail(f"input size {v}: expected 8 to 1024 pixels")
        out.append(v)
    if not out:
        fail("expected e.g. native,224")
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
    latency_gate: str = "fail"
    latency_retries: int = 2
    latency_confirm: str = "report"
    history_store: Path = Path("reports") / "results"
    gate_config: Path | None = None  # --gate-config: this file must exist
    project_root: Path | None = None  # pytest's rootdir: its pyproject.toml configures the gate if it has one
    # runtime name -> {option dest: value}: each runtime's own options (RuntimeOption)
    runtime_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    finetune_samples: int | None = None
    finetune_minutes: float | None = None
    eval_split: str | None = None
    validation_samples: int | None = None
    cache_max_gb: float = DEFAULT_CACHE_MAX_GB
    shard: tuple[int, int] | None = None

    def flat_runtime_options(self) -> dict[str, Any]:
        """Every runtime option by its dest (option names are unique across runtimes)."""
        return {k: v for opts in self.runtime_options.values() for k, v in opts.items()}


def add_options(parser) -> None:
    from .runtimes import runtimes

    g = parser.getgroup("resnet18-bench", "compressed ResNet18 benchmark (pytest bench/)")
    g.addoption("--device", default="cpu", choices=DEVICE_CHOICES,
                help="cpu (this host's architecture), x86, arm or cuda; a device the host lacks is a usage error")
    g.addoption("--runtime", type=name_list, default=None,
                help=f"comma list of {', '.join(runtimes())} (default: every runtime available here)")
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
    g.addoption("--finetune-samples", type=positive_int, default=None,
                help="fine-tune on a fixed stratified subset of this many train images (default: all)")
    g.addoption("--finetune-minutes", type=positive_float, default=None,
                help="stop each fine-tune after this many minutes (recorded; not reproducible across machines)")
    g.addoption("--eval-split", default=None,
                help="imagefolder: the evaluation folder (default: test/, else val/ as in ImageNet's layout)")
    g.addoption("--validation-samples", type=positive_int, default=None,
                help="score on this many train images held out (stratified), fine-tune and calibrate on the rest: "
                     "where choices are made (python -m bench search); the test split only reports")
    g.addoption("--cache-max-gb", type=nonneg_float, default=DEFAULT_CACHE_MAX_GB,
                help="imagefolder: decoded images kept in the cache per run; larger subsets are streamed "
                     f"(default {DEFAULT_CACHE_MAX_GB:g}; 0 streams everything)")
    g.addoption("--threads", type=positive_int, default=os.cpu_count() or 1, help="intra-op threads, every runtime")
    g.addoption("--batch-size", type=int_list, default=None,
                help="comma list; 1 always included; throughput at the largest "
                     f"(default {_csv(DEFAULT_BATCH_SIZES['cpu'])} on CPUs, {_csv(DEFAULT_BATCH_SIZES['cuda'])} on CUDA)")
    g.addoption("--input-size", type=input_sizes, default=("native", 224),
                help="latency shapes: 'native' (the card's) and square sizes (default native,224)")
    g.addoption("--min-samples", type=positive_int, default=100, help="latency samples per item, at least")
    g.addoption("--min-time", type=nonneg_float, default=2.0, help="seconds per latency item, at least")
    g.addoption("--report-dir", type=Path, default=None,
                help="markdown report and results JSON (default: reports/ at pytest's rootdir)")
    g.addoption("--baseline-dir", type=Path, default=None,
                help="stored baselines (default: baselines/ at pytest's rootdir)")
    g.addoption("--update-baselines", action="store_true", help="record or refresh baselines from this run")
    g.addoption("--baseline-missing", default="fail", choices=BASELINE_MISSING,
                help="where no baseline exists: fail (default), skip, or record it")
    g.addoption("--no-gate", action="store_true", help="measure and report only; compare nothing")
    g.addoption("--latency-gate", default="fail", choices=("fail", "report"),
                help="latency regressions fail their item (default) or are only reported")
    g.addoption("--latency-retries", type=nonneg_int, default=2,
                help="a latency item that regresses is measured again, up to this many times, and fails "
                     "only if the last measurement regresses too; every attempt is recorded (default 2, 0: never)")
    g.addoption("--latency-confirm", default="report", choices=("report", "fail", "off"),
                help="a latency ratio that stands out from the same series' earlier quiet runs in --history-store "
                     "is measured again with more rounds; a confirmed slowdown is reported as 'slower' (default), "
                     "fails its item (fail), or nothing is compared (off)")
    g.addoption("--history-store", type=Path, default=None,
                help="folder of earlier results files for --latency-confirm (default: REPORT_DIR/results, where "
                     "every run is kept)")
    g.addoption("--shard", type=shard_spec, default=None,
                help="K/N: measure only shard K of N of the (variant, runtime) matrix (fp32 eager in every "
                     "shard); each shard writes its own results file, `python -m bench report combine` joins them")
    g.addoption("--gate-config", type=Path, default=None,
                help="pyproject.toml whose [tool.resnet18-bench.gate] sets the thresholds "
                     "(default: the one at pytest's rootdir; built-in defaults where it has none)")
    for rt in runtimes().values():
        for opt in rt.options:
            g.addoption(opt.flag, default=opt.default, choices=opt.choices, type=opt.type,
                        help=f"[{rt.name}] {opt.help}")


def read_options(config) -> BenchOptions:
    """The typed options of this run. Paths not given default to the project being measured,
    pytest's rootdir (where its pyproject.toml is), never to where this package is installed."""
    from .runtimes import runtimes

    o = config.getoption
    root = Path(config.rootpath)
    return BenchOptions(
        device=o("--device"), runtimes=o("--runtime"), variants=o("--variant"), dataset=o("--dataset"),
        data_root=o("--data-root"), checkpoint=o("--checkpoint"), card=o("--card"), cache_dir=o("--cache-dir"),
        artifact_dir=o("--artifact-dir"), download=o("--download"), eval_samples=o("--eval-samples"),
        calib_samples=o("--calib-samples"), finetune_epochs=o("--finetune-epochs"), threads=o("--threads"),
        batch_sizes=o("--batch-size") or default_batch_sizes(o("--device")), input_sizes=o("--input-size"), min_samples=o("--min-samples"),
        min_time_s=o("--min-time"), report_dir=o("--report-dir") or root / "reports",
        baseline_dir=o("--baseline-dir") or root / "baselines",
        update_baselines=o("--update-baselines"), baseline_missing=o("--baseline-missing"),
        gate=not o("--no-gate"), latency_gate=o("--latency-gate"),
        latency_retries=o("--latency-retries"), gate_config=o("--gate-config"),
        latency_confirm=o("--latency-confirm"),
        history_store=o("--history-store") or (o("--report-dir") or root / "reports") / "results",
        project_root=root,
        runtime_options={rt.name: {opt.dest: o(opt.flag) for opt in rt.options} for rt in runtimes().values()},
        finetune_samples=o("--finetune-samples"), finetune_minutes=o("--finetune-minutes"),
        eval_split=o("--eval-split"), cache_max_gb=o("--cache-max-gb"), shard=o("--shard"),
        validation_samples=o("--validation-samples"))
