"""One benchmark run: plans the (variant, runtime, device) matrix, builds and loads what the items
need (lazily, once), measures, and assembles the results document.

Knows nothing of pytest; ``plugin.py`` is the glue. Measuring lives here and in measure.py,
comparing in gate.py, rendering in bench/report/: each reads only the results document.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from compress.build import Artifact, build_variant, library_versions, peak_rss_bytes
from compress.context import open_context
from compress.errors import UserError
from compress.evaluate import batch_size_for
from compress.registry import Recipe, get_recipe, list_variants

from . import TORCH_PRELOADED, __version__, measure
from .config import GateConfig, load_gate_config
from .devices import Device, fingerprint, machine_info
from .options import BenchOptions
from .results import REFERENCE, SCHEMA_VERSION, in_shard, shape_key
from .runtimes import Handle, LoadRequest, get_runtime, runtimes

EVAL_BATCH = 256
LATENCY_INPUTS = 16  # distinct real images cycled through during latency timing
SLOW_LOAD_S = 5.0  # a handle that took longer to load is reported as progress


@dataclass(frozen=True)
class Case:
    variant: str
    runtime: str
    device: str

    @property
    def id(self) -> str:
        return f"{self.variant}-{self.runtime}-{self.device}"


@dataclass(frozen=True)
class PlannedCase:
    case: Case
    skip_reason: str | None


def own_module_per_shape(case: Case) -> bool:
    """Whether each timed input shape of ``case`` loads a module of its own (see handle())."""
    runtime = get_runtime(case.runtime)
    return runtime.static_shapes or (get_recipe(case.variant).kind.quantized and runtime.int8_module_per_shape)


class BenchSession:
    def __init__(self, opts: BenchOptions, device: Device, root: Path, native_size: tuple[int, int]):
        self.opts, self.device, self.root = opts, device, root
        self.native_size = native_size
        self.shapes = self._shapes()
        self.ctx = None
        self._artifacts: dict[str, Artifact] = {}
        self._models: dict[str, torch.nn.Module] = {}
        self._handles: dict[str, Handle] = {}
        self._logits: dict[str, np.ndarray] = {}
        self._inputs: dict[tuple, torch.Tensor] = {}  # normalized eval images per (size, batch, count)
        self.items: dict[str, dict] = {}
        self.skipped: list[dict] = []
        self.summary_lines: list[str] = []
        # Progress of long work (builds, fine-tunes, compiles); the plugin routes it to pytest's
        # terminal, which shows it even while test output is captured.
        self.log: Callable[[str], None] = lambda line: print(line, flush=True)
        self._baseline: tuple | None = None
        self._header: dict | None = None
        self._history: dict[tuple, object] | None = None  # (item id, shape) -> history.Series of this machine
        self.history_notes: list[str] = []
        self.gate_config = self._load_gate_config()  # thresholds parse at start-up: a typo fails before any build
        self.started_utc = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        torch.set_num_threads(opts.threads)

    def _load_gate_config(self) -> GateConfig:
        """``--gate-config`` if given (must exist), else the measured project's pyproject.toml."""
        if self.opts.gate_config is not None:
            return load_gate_config(self.opts.gate_config)
        if self.opts.project_root is not None:
            return load_gate_config(self.opts.project_root / "pyproject.toml", required=False)
        return GateConfig()

    # ------------------------------------------------------------ planning (collection time)
    def _shapes(self) -> list[tuple[int, int]]:
        out = []
        for s in self.opts.input_sizes:
            size = self.native_size if s == "native" else (s, s)
            if size not in out:
                out.append(size)
        return out

    def runtime_names(self) -> list[str]:
        if self.opts.runtimes is None:
            return list(runtimes())
        for name in self.opts.runtimes:
            get_runtime(name)  # an unknown name is a usage error listing the known ones
        return list(self.opts.runtimes)

    def plan(self) -> list[PlannedCase]:
        pairs = [(v, r) for v in list_variants(list(self.opts.variants)) for r in self.runtime_names()]
        # The in-run reference is always measured: every ratio and accuracy budget needs it.
        if REFERENCE not in pairs:
            pairs.insert(0, REFERENCE)
        pairs = [p for p in pairs if in_shard(p, self.opts.shard)]
        return [PlannedCase(Case(v, r, self.device.kind), self.skip_reason(get_recipe(v), r)) for v, r in pairs]

    def skip_reason(self, recipe: Recipe, runtime: str) -> str | None:
        rt = get_runtime(runtime)
        return (recipe.off_target_reason(self.device.kind) or rt.unavailable_reason(self.device)
                or rt.unsupported_reason(recipe, self.device))

    def record_skip(self, case: Case, reason: str) -> None:
        if not any(s["id"] == case.id for s in self.skipped):
            self.skipped.append({"id": case.id, "variant": case.variant, "runtime": case.runtime,
                                 "device": case.device, "reason": reason})

    # ------------------------------------------------------------ building and loading (lazy)
    def open(self) -> None:
        if self.ctx is not None:
            return
        o = self.opts
        self.ctx = open_context(o.dataset, o.data_root, o.checkpoint, o.card, o.cache_dir, o.artifact_dir,
                                o.eval_samples, o.calib_samples, o.finetune_epochs, o.download,
                                train_device="cuda" if self.device.kind == "cuda" else "cpu",
                                log=self.log, finetune_samples=o.finetune_samples,
                                finetune_minutes=o.finetune_minutes, eval_split=o.eval_split,
                                cache_max_gb=o.cache_max_gb, validation_samples=o.validation_samples)
        self.eval = self.ctx.dataset.eval_split(o.eval_samples)
        if o.gate:
            from .baselines import BaselineStore

            # A damaged baselines file is reported now, in one line, before anything is built.
            BaselineStore(o.baseline_dir).load(self.ctx.dataset.id, self.device.kind)

    def artifact(self, variant: str) -> Artifact:
        if variant not in self._artifacts:
            self.open()
            self._artifacts[variant] = build_variant(variant, self.ctx, _models=self._models)
        return self._artifacts[variant]

    def model(self, variant: str) -> torch.nn.Module:
        key = f"model:{variant}"
        if key not in self._models:
            self._models[key] = self.artifact(variant).load_model(self.ctx.card)
        return self._models[key]

    def handle(self, case: Case, shape: tuple[int, ...] | None = None) -> Handle:
        """The loaded (variant, runtime). With ``shape``: a handle of its own for timing at that
        input shape, where the runtime needs one: PyTorch int8 modules first used for the batched
        accuracy pass ran batch 1 at 32x32 in 5.8 ms instead of 1.0 ms (Runtime.int8_module_per_shape).
        A deployment serves one shape per model, so each timed shape loads its own from the artifact."""
        own = shape is not None and own_module_per_shape(case)
        key = (case.id, shape) if own else case.id
        if key not in self._handles:
            art = self.artifact(case.variant)
            recipe = get_recipe(case.variant)
            model = art.load_model(self.ctx.card) if own else self.model(case.variant)
            float_model = self.model(recipe.parent) if recipe.kind.quantized else model
            req = LoadRequest(art, recipe, model, float_model, self.ctx.card, self.device, self.opts.threads,
                              self.ctx.calibration_split(), options=dict(self.opts.runtime_options.get(case.runtime, {})),
                              shape=shape if own else None)
            t0 = time.perf_counter()
            self._handles[key] = get_runtime(case.runtime).load(req)
            if time.perf_counter() - t0 > SLOW_LOAD_S:  # a compile or quantization the user waited for
                where = f" for {shape[0]}x{shape[1]} batch {shape[2]}" if own else ""
                self.log(f"loaded {case.id}{where} in {time.perf_counter() - t0:.0f}s (compiled or quantized; cached now)")
        return self._handles[key]

    def item(self, case: Case) -> dict:
        if case.id not in self.items:
            self.items[case.id] = {"id": case.id, "variant": case.variant, "runtime": case.runtime,
                                   "device": case.device, "status": "ok", "reason": None, "runtime_info": {},
                                   "size_bytes": None, "equivalence": None, "accuracy": None,
                                   "latency": [], "throughput": []}
        return self.items[case.id]

    # ------------------------------------------------------------ measurements
    def logits(self, case: Case) -> np.ndarray:
        """Logits of the whole eval split through this runtime (native input size)."""
        if case.id not in self._logits:
            h = self.handle(case)
            out = []
            t0 = time.perf_counter()
            batch = batch_size_for(self.ctx.card.input_size, EVAL_BATCH)
            for i in range(0, len(self.eval), batch):
                x = self.ctx.card.normalize(self.eval.images[i:i + batch])
                out.append(h.logits(x))
            seconds = time.perf_counter() - t0
            self._logits[case.id] = np.concatenate(out)
            # Images per second through the whole evaluation pass: reading (or decoding), normalizing
            # and the batched forward; shown so a slow data path is visible next to the model's cost.
            self.item(case)["eval_img_s"] = round(len(self.eval) / seconds, 1) if seconds > 0 else None
        return self._logits[case.id]

    def measure_size(self, case: Case) -> dict:
        h = self.handle(case)
        item = self.item(case)
        item["runtime_info"] = h.info
        item["size_bytes"] = h.size_bytes
        m = self.artifact(case.variant).manifest
        item["artifact"] = {"weights_bytes": m["size_bytes"], "weights_gzip_bytes": m["size_gzip_bytes"],
                            "parameters": m["parameters"], "nonzero_parameters": m["nonzero_parameters"],
                            "macs": m["macs"], "file": h.path.name if h.path else None}
        return item

    def measure_equivalence(self, case: Case) -> dict:
        eager = Case(case.variant, "eager", case.device)
        recipe = get_recipe(case.variant)
        requantized = None
        if recipe.kind.quantized and get_runtime(case.runtime).requantizes_int8:
            parent = Case(recipe.parent, "eager", case.device)
            requantized = (self.logits(parent), self.logits(eager), parent.id)
        rec = measure.equivalence_record(self.logits(case), self.logits(eager), recipe.kind, eager.id, requantized)
        self.item(case)["equivalence"] = rec
        return rec

    def measure_accuracy(self, case: Case) -> dict:
        logits = self.logits(case)
        if not np.isfinite(logits).all():
            raise AssertionError(f"{case.id}: non-finite outputs (NaN or inf) on the eval set")
        ref = Case(*REFERENCE, case.device)
        fp32_preds = self.logits(ref).argmax(1)
        rec = measure.accuracy_record(logits.argmax(1), self.eval.labels.numpy(), fp32_preds, self.ctx.dataset.classes)
        self.item(case)["accuracy"] = rec
        return rec

    def latency_inputs(self, case: Case, size: tuple[int, int], batch: int = 1,
                       count: int = LATENCY_INPUTS) -> list:
        """``count`` distinct batches of real eval images at ``size``, in the runtime's input form."""
        h = self.handle(case)
        n = min(count, len(self.eval) // batch) or 1
        key = (tuple(size), batch, n)
        if key not in self._inputs:  # resizing to 224x224 is costly; every item of a shape shares it
            self._inputs[key] = self.ctx.card.normalize(self.eval.images[: n * batch], size)
        x = self._inputs[key]
        return [h.prepare(x[i * batch:(i + 1) * batch]) for i in range(n)]

    def measure_latency(self, case: Case, size: tuple[int, int], benchmark=None,
                        discard_why: str | None = None, rounds_factor: int = 1) -> dict:
        """Time ``case`` at ``size``, batch 1, interleaved with the fp32 eager reference. With
        ``benchmark`` (pytest-benchmark's fixture, usable once per item) its pedantic mode does the
        timing; without it, the same loop is timed here (a confirmation after a regression).
        ``discard_why``: this replaces an earlier measurement of the shape, which is kept, with the
        reason, under ``discarded_attempts``. ``rounds_factor``: that many times the samples and
        time (confirming a suspicious ratio), recorded under ``confirmation``."""
        h = self.handle(case, shape=(*size, 1))
        ref_case = Case(*REFERENCE, case.device)
        is_ref = case == ref_case
        ref_h = None if is_ref else self.handle(ref_case)
        spec = measure.LatencySpec(min_samples=self.opts.min_samples * rounds_factor,
                                   min_time_s=self.opts.min_time_s * rounds_factor,
                                   floor_samples=min(30, self.opts.min_samples) * rounds_factor,
                                   max_samples=measure.LatencySpec.max_samples * rounds_factor)
        rec = measure.measure_latency(
            benchmark if benchmark is not None else measure.SELF_TIMED, h.run,
            self.latency_inputs(case, size), self.device.sync, spec,
            reference=None if is_ref else ref_h.run,
            ref_inputs=None if is_ref else self.latency_inputs(ref_case, size))
        rec = {"input_size": list(size), "batch_size": 1, **rec, "reference_id": None if is_ref else ref_case.id}
        if is_ref:
            rec.update(reference_samples_ms=None, reference_p50_ms=rec["p50_ms"], ratio_to_reference=1.0)
        item = self.item(case)
        old_entry = next((e for e in item["latency"] if e["input_size"] == list(size)), None)
        hist = None if is_ref else self.ratio_history(case, size)
        if hist is not None:
            rec["confirmation"] = hist.confirmation(rounds_factor, (old_entry or {}).get("ratio_to_reference"))
        if discard_why is not None:
            for old in (e for e in item["latency"] if e["input_size"] == list(size)):
                rec["discarded_attempts"] = [*(old.get("discarded_attempts") or []), {
                    "p50_ms": old["p50_ms"], "cv": old["cv"], "reference_p50_ms": old.get("reference_p50_ms"),
                    "ratio_to_reference": old.get("ratio_to_reference"), "why": discard_why}]
        item["latency"] = [e for e in item["latency"] if e["input_size"] != list(size)] + [rec]
        return rec

    def ratio_history(self, case: Case, size: tuple[int, int]):
        """This (item, shape)'s quiet history.RatioHistory on this machine, data and checkpoint in
        ``--history-store`` (read once per run), or None: too few quiet runs, no store, no gate."""
        if not self.opts.gate or self.opts.latency_confirm == "off" or self.opts.update_baselines:
            return None
        from . import history

        if self._history is None:
            head = self.header()
            self._history, notes = history.machine_series(
                self.opts.history_store, head["fingerprint"], head["dataset"]["id"], head["checkpoint"]["sha256"])
            self.history_notes += notes
        series = self._history.get((case.id, shape_key({"input_size": size, "batch_size": 1})))
        return series and history.ratio_history(series, self.gate_config.confirm_min_runs, cv_limit=self.gate_config.cv_warn)

    def wait_until_quiet(self, case: Case, size: tuple[int, int]) -> dict | None:
        """Before measuring ``case`` again: wait until the fp32 eager reference runs about as fast
        as it did when it was measured in this run (None: it has not been measured at ``size``)."""
        ref_case = Case(*REFERENCE, case.device)
        ref_item = self.items.get(ref_case.id) or {}
        ref = next((e for e in ref_item.get("latency") or [] if e["input_size"] == list(size)), None)
        if ref is None:
            return None
        h, inputs = self.handle(ref_case), self.latency_inputs(ref_case, size)
        state = {"i": 0}

        def call() -> None:
            state["i"] += 1
            h.run(inputs[state["i"] % len(inputs)])

        return measure.wait_until_quiet(call, self.device.sync, ref["p50_ms"])

    def measure_throughput(self, case: Case, size: tuple[int, int]) -> dict:
        bs = max(self.opts.batch_sizes)
        h = self.handle(case, shape=(*size, bs))
        batch = self.latency_inputs(case, size, batch=bs, count=1)[0]
        rec = {"input_size": list(size), **measure.measure_throughput(h.run, batch, bs, self.device.sync)}
        item = self.item(case)
        item["throughput"] = [e for e in item["throughput"] if e["input_size"] != list(size)] + [rec]
        return rec

    # ------------------------------------------------------------ the results document
    def header(self) -> dict:
        """The results header; computed once per run (py-cpuinfo and git are not cheap) once the
        build context is open, since the dataset and checkpoint are part of it."""
        if self._header is not None:
            return self._header
        info = machine_info(self.device, self.opts.threads)
        ds = self.ctx.dataset if self.ctx else None
        header = {
            "schema_version": SCHEMA_VERSION,
            "kind": "resnet-bench-results",
            "created_utc": self.started_utc,
            "machine_info": info,
            "fingerprint": fingerprint(self.device, info),
            "versions": self.versions(),
            "commit_info": _commit_info(self.root),
            "device": self.device.kind,
            "dataset": {"id": ds.id if ds else None, "name": self.dataset_label(),
                        "eval_samples": len(self.eval) if ds else None,
                        "input_size": list(self.native_size), "source": ds.source if ds else None},
            "checkpoint": {"sha256": self.ctx.checkpoint_sha256 if self.ctx else None,
                           "source": self.ctx.checkpoint_label if self.ctx else None},
            "options": {"threads": self.opts.threads, "batch_sizes": list(self.opts.batch_sizes),
                        "input_sizes": [list(s) for s in self.shapes], "runtimes": self.runtime_names(),
                        "variants": list(self.opts.variants), "min_samples": self.opts.min_samples,
                        "runtime_notes": {n: rt.note for n, rt in runtimes().items()
                                          if rt.note and n in self.runtime_names()},
                        "min_time_s": self.opts.min_time_s, "calib_samples": self.opts.calib_samples,
                        **self.opts.flat_runtime_options(),
                        # Thread-pool behaviour that latencies depend on (bench/__init__.py).
                        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
                        "torch_imported_before_bench": TORCH_PRELOADED,
                        "latency_block": measure.LatencySpec.block,
                        "latency_retries": self.opts.latency_retries,
                        "latency_confirm": self.opts.latency_confirm,
                        "finetune_samples": self.opts.finetune_samples,
                        "finetune_minutes": self.opts.finetune_minutes, "cache_max_gb": self.opts.cache_max_gb,
                        "shard": list(self.opts.shard) if self.opts.shard else None},
        }
        if self.ctx is not None:
            self._header = header
        return header

    def versions(self) -> dict:
        v = {**library_versions(), "numpy": np.__version__, "bench": __version__}
        for rt in runtimes().values():
            v.update(rt.versions())
        return v

    def dataset_label(self) -> str:
        """Names the report files: digits, cifar10, or imagefolder-<root folder name>."""
        if self.opts.dataset == "imagefolder" and self.opts.data_root is not None:
            # A label for people and file names: any character a file name could trip on becomes "-".
            name = re.sub(r"[^A-Za-z0-9._+-]+", "-", Path(self.opts.data_root).resolve().name).strip("-.")
            return f"imagefolder-{name or 'data'}"
        return self.opts.dataset

    def results(self) -> dict:
        return {**self.header(), "resources": resources(), "items": list(self.items.values()),
                "skipped": list(self.skipped)}

    # ------------------------------------------------------------ gate and output
    def baseline_lookup(self, results: dict) -> tuple[dict | None, dict | None, str | None]:
        """(entry for this fingerprint, entry from another machine, why none fits); read once per run."""
        if self._baseline is None:
            from .baselines import BaselineStore

            same, other, notes = BaselineStore(self.opts.baseline_dir).lookup_with_notes(results)
            self._baseline = (same, other, "; ".join(notes) or None)
        return self._baseline

    def cli_args(self) -> str:
        o = self.opts
        parts = [f"--device {o.device}"]
        if o.dataset != "digits":
            parts.append(f"--dataset {o.dataset}")
        for flag, val in (("--data-root", o.data_root), ("--checkpoint", o.checkpoint), ("--card", o.card),
                          ("--eval-samples", o.eval_samples), ("--eval-split", o.eval_split),
                          ("--validation-samples", o.validation_samples)):
            if val is not None:
                parts.append(f"{flag} {val}")
        if o.threads != (os.cpu_count() or 1):
            parts.append(f"--threads {o.threads}")
        return " ".join(parts)

    def finish(self) -> dict:
        """Write the results document (unique name + stable name), the gate block, baselines, report."""
        from compress.fsutil import atomic_write_json

        from .baselines import BaselineStore
        from .gate import format_summary, run_gate
        from .results import validate_results

        results = self.results()
        store = BaselineStore(self.opts.baseline_dir)
        gate_error = None
        if self.opts.gate:
            try:
                results["gate"] = run_gate(results, store, self.gate_config)
            except UserError as e:  # the measurements are still written; the gate's problem is said
                gate_error = str(e)
        results = validate_results(results, "this run's results")
        unique, stable = result_paths(self.opts.report_dir, self.dataset_label(), self.device.kind, self.opts.shard)
        try:
            atomic_write_json(unique, results)
            atomic_write_json(stable, results)
        except OSError as e:
            # A full disk or a read-only folder: the stable name must not keep an older run's
            # results looking like this run's.
            with contextlib.suppress(OSError):
                stable.unlink(missing_ok=True)
            raise UserError(f"cannot write {e.filename or unique} ({e.strerror or e}); free space or fix the "
                            f"permissions of {self.opts.report_dir}, or pass --report-dir elsewhere") from None
        lines = [f"results: {stable} (this run: {unique})", *self.history_notes]
        if gate_error is not None:
            self.summary_lines = [*lines, f"error: the gate could not run: {gate_error}"]
            raise GateNotApplied(gate_error)
        if self.opts.gate:
            lines += format_summary(results["gate"]["findings"]).splitlines()
            if self.opts.latency_gate == "report":
                lines.append("latency findings are report-only in this run (--latency-gate report): "
                             "they did not fail any item")
        record_new = self.opts.baseline_missing == "record" and self.opts.gate and any(
            f["verdict"] == "new" for f in results["gate"]["findings"])
        if self.opts.update_baselines or record_new:
            changes = store.update(results)  # locked, atomic; an OSError there is a UserError
            lines.append(f"baselines: {store.path_for_results(results)}: "
                         f"{len(changes)} change{'s' if len(changes) != 1 else ''}")
            lines += [f"  {c}" for c in changes]
        try:
            from .report import render_report

            lines.append(f"report: {render_report(results, self.opts.report_dir)}")
        except UserError as e:
            lines.append(f"report not written: {e}")
        except OSError as e:
            lines.append(f"report not written: cannot write in {self.opts.report_dir} ({e.strerror or e})")
        self.summary_lines = lines
        return results


class GateNotApplied(UserError):
    """The results were written, but the gate could not judge them (e.g. a damaged baselines file)."""


def resources() -> dict:
    """What the run has cost so far: its peak resident memory (children excluded)."""
    return {"peak_rss_bytes": peak_rss_bytes()}


def _commit_info(root: Path) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"id": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"id": None, "dirty": None}


def result_paths(report_dir: Path, dataset: str, device: str,
                 shard: tuple[int, int] | None = None) -> tuple[Path, Path]:
    """(unique per-run file, stable name): two runs at once never write the same file; each
    shard of a sharded run has its own."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{dataset}-{device}" + (f"-shard{shard[0]}of{shard[1]}" if shard else "")
    unique = report_dir / "results" / f"{name}-{stamp}-{os.getpid()}.json"
    return unique, report_dir / f"{name}.json"


__all__ = ["BenchSession", "Case", "PlannedCase", "result_paths"]
