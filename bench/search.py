"""``python -m bench search``: the fastest channel allocation within an accuracy budget, chosen on
a validation split of the user's own model and data and timed on the user's target runtime.

A candidate is a ``prune-stages-A-B-C-D`` variant (compress/recipes.py: A of the stem and layer1
channels removed, B, C, D of layers 2, 3, 4) at one fine-tune length, float and ``+int8``. Each one is measured by the
harness itself (``pytest bench/`` in a subprocess, ``--no-gate``), on the validation view
(``--validation-samples``: images held out of train, never fine-tuned or calibrated on), with
fp32 on the target runtime in the same run: its speedup is the ratio of the two in-run ratios to
the interleaved reference, so machine drift between candidates cancels. The test split is never
read. Intel Neural Compressor's and NNCF's accuracy-aware tuning stop at an accuracy criterion;
this also measures latency where the model will run.

Each candidate's results file is its cache: an interrupted search resumes where it stopped; a
damaged or foreign file is measured again, never trusted (it is validated like any results file
and must name this search's key). The chosen variant is written as a recipe file (data, no
code) that ``python -m compress build --recipe-file`` replays on the full train split.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from compress.errors import UserError
from compress.recipefile import RECIPE_FILE_KIND, RECIPE_FILE_VERSION

# Ratios tried per stage when --grid is not given: 2 x 2 x 1 x 1 = 4 candidates (x float/int8),
# about 40 s each on the embedded digits model; the CIFAR-10 search in docs/PERFORMANCE.md uses a
# wider grid. Stem/layer1 and layer2 decide most of the accuracy; layer4 most of the parameters.
DEFAULT_GRID = "0.3,0.5/0.3,0.5/0.5/0.65"
STAGES = ("stem+layer1", "layer2", "layer3", "layer4")
# A checkpoint trained on all of train has seen the validation images: fp32 scores 93.3% on them
# for the CIFAR-10 reference against 84.0% on test, and a pruned model fine-tuned off them keeps
# only part of that memory, so drops measured on them are larger than on unseen images (3.4-5.1 pp
# against about 1.6-1.7 pp on test for stage-wise int8 variants; docs/PERFORMANCE.md). The search
# says so when fp32's validation top-1 is this far above the test top-1 its card reports.
SEEN_GAP_PP = 2.0
EXIT_NO_CANDIDATE = 1


@dataclass(frozen=True)
class Budget:
    accuracy_pp: float  # largest allowed top-1 drop vs fp32 on the validation split, in points
    latency_ms: float | None = None  # p50 at batch 1 on the target runtime
    size_mb: float | None = None  # deployable file, MB = 10^6 bytes

    def misses(self, row: Row) -> list[str]:
        """How ``row`` falls outside the budget; empty when it is within."""
        out = []
        if row.drop_pp > self.accuracy_pp:
            out.append(f"drop {row.drop_pp:.2f} pp > {self.accuracy_pp:g}")
        if self.latency_ms is not None and row.latency_ms_p50 > self.latency_ms:
            out.append(f"p50 {row.latency_ms_p50:.2f} ms > {self.latency_ms:g}")
        if self.size_mb is not None and row.size_bytes / 1e6 > self.size_mb:
            out.append(f"size {row.size_bytes / 1e6:.2f} MB > {self.size_mb:g}")
        return out

    def distance(self, row: Row) -> float:
        """How far outside, as the sum of relative excesses (0 within): ranks the closest misses."""
        d = max(0.0, row.drop_pp - self.accuracy_pp) / max(self.accuracy_pp, 0.1)
        if self.latency_ms is not None:
            d += max(0.0, row.latency_ms_p50 / self.latency_ms - 1)
        if self.size_mb is not None:
            d += max(0.0, row.size_bytes / 1e6 / self.size_mb - 1)
        return d


@dataclass(frozen=True)
class Row:
    """One measured variant on the target runtime, from one candidate's harness run."""
    variant: str
    runtime: str
    top1: float  # on the validation split
    drop_pp: float  # fp32's top-1 on the same images minus this one, in points
    latency_ms_p50: float
    speedup: float  # fp32 on the same runtime in the same run, over this (ratio of in-run ratios)
    size_bytes: int
    finetune_epochs: float | None = None  # the candidate's fine-tune length; None: the recipe's own


def parse_grid(spec: str) -> list[tuple[float, ...]]:
    """"0.3,0.5/0.3/0.3/0.65" -> every combination of the ratios listed per stage (4 stages)."""
    stages = spec.split("/")
    if len(stages) != len(STAGES):
        raise UserError(f"--grid {spec!r}: give {len(STAGES)} '/'-separated lists, one per stage "
                        f"({', '.join(STAGES)}), e.g. {DEFAULT_GRID}")
    values = []
    for name, part in zip(STAGES, stages):
        try:
            ratios = sorted({round(float(x), 3) for x in part.split(",") if x.strip()})
        except ValueError:
            raise UserError(f"--grid {spec!r}: {name} has a value that is not a number ({part!r})") from None
        if not ratios or not all(0.0 <= r < 1.0 for r in ratios):
            raise UserError(f"--grid {spec!r}: {name} needs ratios from 0 to below 1 (the share of channels removed)")
        values.append(ratios)
    combos = [c for c in itertools.product(*values) if any(c)]
    if not combos:
        raise UserError(f"--grid {spec!r}: every combination removes nothing; give at least one ratio above 0")
    # Most pruned first: the fast end of the frontier is known early in a long search.
    return sorted(combos, key=lambda c: -sum(c))


def _ratio_text(r: float) -> str:
    text = f"{r:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def variant_name(ratios: Sequence[float]) -> str:
    """(0.3, 0.3, 0.3, 0.65) -> "prune-stages-0.3-0.3-0.3-0.65" (ratios to 3 decimals)."""
    return "prune-stages-" + "-".join(_ratio_text(r) for r in ratios)


def _top1(results: dict, variant: str, runtime: str) -> float:
    it = next((it for it in results["items"] if it["variant"] == variant and it["runtime"] == runtime
               and it["status"] == "ok" and it.get("accuracy")), None)
    if it is None:
        raise UserError(f"{variant} on {runtime} has no accuracy in this run; see its log")
    return it["accuracy"]["top1"]


def rows_from_results(results: dict, runtime: str, finetune_epochs: float | None = None) -> list[Row]:
    """The target runtime's rows of one candidate run: every non-fp32 item against fp32 there."""
    by_id = {it["id"]: it for it in results["items"] if it["status"] == "ok"}
    fp32 = next((it for it in by_id.values() if it["variant"] == "fp32" and it["runtime"] == runtime), None)
    if fp32 is None or not fp32.get("accuracy") or not fp32.get("latency"):
        raise UserError(f"fp32 on {runtime} was not measured in this candidate's run; see its log")
    fp32_ratio = fp32["latency"][0]["ratio_to_reference"]
    rows = []
    for it in by_id.values():
        if it["runtime"] != runtime or it["variant"] == "fp32" or not it.get("accuracy") or not it.get("latency"):
            continue
        lat = it["latency"][0]
        top1 = it["accuracy"]["top1"]
        rows.append(Row(it["variant"], runtime, top1, round(100 * (fp32["accuracy"]["top1"] - top1), 4),
                        lat["p50_ms"], fp32_ratio / lat["ratio_to_reference"], int(it["size_bytes"] or 0),
                        finetune_epochs))
    return rows


def pareto(rows: Sequence[Row]) -> list[Row]:
    """The rows no other row beats on all of speed, size and accuracy (and on one strictly).
    Speed is the speedup over fp32 in the row's own run, not the p50: candidates are timed in
    different runs, and the machine's drift between them cancels only in the in-run ratio."""
    def beats(a: Row, b: Row) -> bool:
        no_worse = a.speedup >= b.speedup and a.size_bytes <= b.size_bytes and a.top1 >= b.top1
        return no_worse and (a.speedup, a.size_bytes, a.top1) != (b.speedup, b.size_bytes, b.top1)
    front = [r for r in rows if not any(beats(o, r) for o in rows)]
    return sorted(front, key=lambda r: -r.speedup)


def choose(rows: Sequence[Row], budget: Budget) -> tuple[Row | None, list[Row]]:
    """(fastest row within the budget, by speedup over fp32, or None; the three closest misses when none is)."""
    within = [r for r in rows if not budget.misses(r)]
    if within:
        return max(within, key=lambda r: r.speedup), []
    return None, sorted(rows, key=lambda r: (budget.distance(r), -r.speedup))[:3]


# --- running the candidates ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchSpec:
    """Everything that decides what one candidate run measures: its key (the resume check)."""
    harness_args: tuple[str, ...]  # source options passed to pytest bench/ (dataset, checkpoint, ...)
    runtime: str
    input_size: int
    validation_samples: int
    finetune_epochs: float | None  # one candidate run's fine-tune length (run_search varies it)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def candidate_args(spec: SearchSpec, variant: str, report_dir: Path) -> list[str]:
    """The harness run of one candidate: float and int8 beside fp32, on the validation view."""
    args = ["-p", "no:cacheprovider", "-q", "--no-gate", *spec.harness_args, "--runtime", spec.runtime,
            "--variant", f"fp32,{variant},{variant}+int8", "--input-size", str(spec.input_size),
            "--batch-size", "1", "--validation-samples", str(spec.validation_samples),
            "--report-dir", str(report_dir), "-k", "test_accuracy or test_latency or test_size"]
    if spec.finetune_epochs is not None:
        args += ["--finetune-epochs", str(spec.finetune_epochs)]
    return args


def run_harness(args: list[str], log_path: Path) -> int:
    """pytest bench/ in a subprocess (its own process: the harness pins threads and engines)."""
    bench_dir = Path(__file__).resolve().parent
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.run([sys.executable, "-m", "pytest", str(bench_dir), "--rootdir", str(bench_dir), *args],
                              stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def _cached(folder: Path, key: str) -> dict | None:
    """The results of an earlier harness run in ``folder``, or None: missing, damaged or from
    another search (a file in the cache is checked like any input)."""
    from .results import load_results

    marker = folder / "search-key.txt"
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not marker.is_file() or marker.read_text(encoding="utf-8").strip() != key or len(files) != 1:
        return None
    try:
        return load_results(files[0])
    except UserError:
        return None


def _measured(spec: SearchSpec, variant: str, work_dir: Path, runner, log, what: str, label: str = "") -> dict:
    """One harness run's results, from the cache or measured now."""
    from compress.fsutil import atomic_write_bytes

    from .results import load_results

    key = spec.key()
    folder = work_dir / f"{variant}-{key[:8]}"
    found = _cached(folder, key)
    if found is not None:
        log(f"{what} {variant}{label}: reused from {folder}")
        return found
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()  # a damaged or foreign result is replaced, never read
    log(f"{what} {variant}{label}: measuring")
    rc = runner(candidate_args(spec, variant, folder), folder / "harness.log")
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if rc != 0 or len(files) != 1:
        raise UserError(f"{variant}: the harness run failed (exit {rc}); its log: {folder / 'harness.log'}")
    results = load_results(files[0])
    atomic_write_bytes(folder / "search-key.txt", f"{key}\n".encode())
    return results


def run_search(spec: SearchSpec, candidates: list[tuple[float, ...]], work_dir: Path, budget: Budget,
               log: Callable[[str], None] = print, runner: Callable[[list[str], Path], int] = run_harness,
               finetune_lengths: Sequence[float | None] | None = None) -> tuple[list[Row], dict]:
    """Measure every candidate, each allocation at each fine-tune length (default: the spec's
    one), reusing finished runs and logging progress. Returns all rows and fp32's top-1 on the
    validation images."""
    lengths = list(finetune_lengths) if finetune_lengths else [spec.finetune_epochs]
    runs = [(ratios, epochs) for ratios in candidates for epochs in lengths]
    t0 = time.monotonic()
    rows: list[Row] = []
    fp32_top1 = None
    for i, (ratios, epochs) in enumerate(runs, 1):
        one = replace(spec, finetune_epochs=epochs)  # its own key: each length is its own cached run
        label = f" at {epochs:g} fine-tune epochs" if len(lengths) > 1 else ""
        results = _measured(one, variant_name(ratios), work_dir, runner, log,
                            f"candidate {i}/{len(runs)} (elapsed {time.monotonic() - t0:.0f}s)", label)
        rows += rows_from_results(results, spec.runtime, epochs)
        fp32_top1 = _top1(results, "fp32", spec.runtime)
        best, _ = choose(rows, budget)
        log(f"  elapsed {time.monotonic() - t0:.0f}s; best within budget so far: "
            + (f"{best.variant}{_epochs_text(best)} {best.latency_ms_p50:.2f} ms ({best.speedup:.2f}x fp32), "
               f"drop {best.drop_pp:.2f} pp"
               if best else "none"))
    return rows, fp32_top1


def _epochs_text(row: Row) -> str:
    return "" if row.finetune_epochs is None else f" ({row.finetune_epochs:g} ep)"


def seen_warning(fp32_val_top1: float | None, card_metrics: dict) -> str | None:
    """A warning when fp32 scores far higher on the validation images than the test top-1 its
    card reports (``top1_*`` metrics): the checkpoint was trained on them."""
    reported = [v for k, v in card_metrics.items() if k.startswith("top1") and isinstance(v, (int, float))]
    if fp32_val_top1 is None or not reported:
        return None
    gap = 100 * (fp32_val_top1 - max(reported))
    if gap <= SEEN_GAP_PP:
        return None
    return (f"warning: fp32 scores {fp32_val_top1:.2%} on the validation images and {max(reported):.2%} on the test "
            f"split its card reports: it was trained on them ({gap:.1f} pp above), so the drops below are larger "
            f"than on unseen images; the budget is applied to them as measured (conservative). A checkpoint "
            f"trained without the held-out images removes the bias.")


def table(rows: Sequence[Row], budget: Budget, chosen: Row | None = None) -> str:
    from tabulate import tabulate

    out = [[("* " if r == chosen else "") + r.variant, r.runtime,
            "recipe's" if r.finetune_epochs is None else f"{r.finetune_epochs:g}", f"{100 * r.top1:.2f}", f"{r.drop_pp:+.2f}",
            f"{r.latency_ms_p50:.2f}", f"{r.speedup:.2f}x", f"{r.size_bytes / 1e6:.2f}",
            "; ".join(budget.misses(r)) or "within"] for r in rows]
    return tabulate(out, ["variant", "runtime", "fine-tune ep", "top-1 val %", "drop pp", "p50 ms", "vs fp32", "size MB", "budget"],
                    disable_numparse=True)


def recipe_document(chosen: Row, spec: SearchSpec, budget: Budget, rows: Sequence[Row], front: Sequence[Row],
                    fp32_top1: float | None) -> dict:
    return {"kind": RECIPE_FILE_KIND, "version": RECIPE_FILE_VERSION, "variant": chosen.variant,
            "finetune_epochs": chosen.finetune_epochs,
            "chosen_on": {"split": "validation", "validation_samples": spec.validation_samples,
                          "harness_args": list(spec.harness_args), "runtime": spec.runtime,
                          "input_size": spec.input_size, "budget": asdict(budget), "fp32_top1": fp32_top1},
            "measured": asdict(chosen), "pareto": [asdict(r) for r in front], "candidates": [asdict(r) for r in rows]}


# --- the command ---------------------------------------------------------------------------------------

def add_search_parser(commands) -> None:
    from compress.argtypes import nonneg_float, nonneg_float_list, positive_float, positive_int
    from compress.data import DATASETS

    p = commands.add_parser(
        "search", help="fastest channel allocation (float and int8) within an accuracy budget, chosen on a "
                       "validation split of your data and timed on your target runtime; writes a recipe file")
    p.add_argument("--dataset", default="digits", choices=DATASETS)
    p.add_argument("--data-root", type=Path)
    p.add_argument("--checkpoint", type=Path, help="fp32 checkpoint (default: the embedded digits model)")
    p.add_argument("--card", type=Path)
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--threads", type=positive_int, default=None, help="intra-op threads (default: every core)")
    p.add_argument("--runtime", default="onnxruntime", help="target runtime (default onnxruntime)")
    p.add_argument("--input-size", type=positive_int, default=224, help="square deployment input size (default 224)")
    p.add_argument("--validation-samples", type=positive_int, default=None,
                   help="train images held out for scoring (default: a tenth of train, at most 5000)")
    p.add_argument("--grid", default=DEFAULT_GRID,
                   help=f"ratios of channels removed per stage, stem+layer1/layer2/layer3/layer4 (default {DEFAULT_GRID})")
    p.add_argument("--finetune-epochs", type=nonneg_float_list, default=None,
                   help="fine-tune lengths to try, comma-separated, each with every allocation (e.g. 2,6; "
                        "default: the pruned recipes' own)")
    p.add_argument("--budget-pp", type=nonneg_float, default=1.0, help="largest top-1 drop vs fp32, points (default 1)")
    p.add_argument("--max-latency-ms", type=positive_float, default=None, help="p50 at batch 1 on the target runtime")
    p.add_argument("--max-size-mb", type=positive_float, default=None, help="deployable file size, MB = 10^6 bytes")
    p.add_argument("--work-dir", type=Path, default=Path("reports") / "search",
                   help="each candidate's harness run and log; rerunning resumes from it (default reports/search)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="the chosen recipe file (default WORK_DIR/chosen-recipe.json)")
    p.set_defaults(func=main_search)


def _source_args(args) -> tuple[str, ...]:
    out = ["--device", "cpu", "--dataset", args.dataset]
    for flag, value in (("--data-root", args.data_root), ("--checkpoint", args.checkpoint), ("--card", args.card),
                        ("--cache-dir", args.cache_dir), ("--threads", args.threads)):
        if value is not None:
            out += [flag, str(Path(value).resolve()) if isinstance(value, Path) else str(value)]
    return tuple(out)


def main_search(args) -> int:
    from compress.context import open_context
    from compress.fsutil import atomic_write_json

    from .runtimes import runtimes

    # Everything is checked before the first candidate: grid, runtime, data, checkpoint, split size.
    candidates = parse_grid(args.grid)
    if args.runtime not in runtimes():
        raise UserError(f"unknown runtime {args.runtime!r}; choose from {', '.join(runtimes())}")
    ctx = open_context(args.dataset, args.data_root, args.checkpoint, args.card, args.cache_dir,
                       log=lambda s: print(s, file=sys.stderr, flush=True))
    n_val = args.validation_samples or min(5000, max(1, len(ctx.dataset.train) // 10))
    from compress.data import validation_view

    validation_view(ctx.dataset, n_val)  # range check
    budget = Budget(args.budget_pp, args.max_latency_ms, args.max_size_mb)
    lengths = args.finetune_epochs or (None,)
    spec = SearchSpec(_source_args(args), args.runtime, args.input_size, n_val, lengths[0])
    output = args.output or args.work_dir / "chosen-recipe.json"
    if output.is_dir():
        raise UserError(f"{output}: is a folder; -o takes the recipe file to write")
    print(f"search: {len(candidates) * len(lengths)} candidates ({len(candidates)} allocations x {len(lengths)} fine-tune "
          f"length{'s' if len(lengths) > 1 else ''}) x (float, int8) on {args.runtime} at {args.input_size}x{args.input_size}, "
          f"scored on {n_val} train images held out (never fine-tuned on); the test split is not read", flush=True)
    rows, fp32_top1 = run_search(spec, candidates, args.work_dir, budget, log=lambda s: print(s, flush=True),
                                 runner=run_harness, finetune_lengths=lengths)
    seen = seen_warning(fp32_top1, ctx.card.metrics)
    if seen:
        print(seen)
    front = pareto(rows)
    chosen, closest = choose(rows, budget)
    print(f"\nevery candidate ({len(rows)} rows):")
    print(table(sorted(rows, key=lambda r: -r.speedup), budget, chosen))
    print("\nPareto front (speedup over fp32, size, validation top-1):")
    print(table(front, budget, chosen))
    if chosen is None:
        print("\nno candidate meets the budget; the closest:")
        print(table(closest, budget))
        print(f"\nnothing written: widen the budget (--budget-pp, --max-latency-ms, --max-size-mb) or try "
              f"less pruned stages (--grid, now {args.grid}) or longer fine-tunes (--finetune-epochs)")
        return EXIT_NO_CANDIDATE
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output, recipe_document(chosen, spec, budget, rows, front, fp32_top1))
    except OSError as e:
        raise UserError(f"{output}: cannot write ({e.strerror or e})") from None
    print(f"\nchosen: {chosen.variant}{_epochs_text(chosen)} on {chosen.runtime}: {chosen.speedup:.2f}x fp32, drop {chosen.drop_pp:.2f} pp "
          f"(validation), {chosen.size_bytes / 1e6:.2f} MB -> {output}")
    source = [a for a in spec.harness_args if a not in ("--device", "cpu")]
    if "--threads" in source:
        i = source.index("--threads")
        del source[i:i + 2]  # compress build has no --threads
    print(f"build it on the full train split: python -m compress build --recipe-file {output} {' '.join(source)}")
    print(f"measure it on the test split: pytest bench/ --variant fp32,{chosen.variant} "
          f"--runtime {chosen.runtime} {' '.join(spec.harness_args)}")
    return 0
