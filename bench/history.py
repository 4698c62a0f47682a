"""The history of runs: every results file, read together, as series per (machine, data, model,
item, shape), with the change points in each and a trend gate on the recent ones.

The store is a folder of results files, the ones ``pytest bench/`` already writes to
``reports/results/`` (one per run, never overwritten), plus any imported from elsewhere (CI
artifacts, other machines) with ``python -m bench history import``. A folder of the same JSON
rather than a database, as asv keeps its results: one schema and one validating loader
(bench/results.py) for both, files that copy, merge and diff like any other, and nothing to
migrate or serve.

A series is keyed by fingerprint, dataset id, checkpoint, item id and shape: only runs on one
machine class, with the same data and weights, form a trend. Its points are in run order
(``created_utc``). Two metrics:

- ``ratio``: the in-run ratio to the interleaved fp32-eager reference. Machine drift moves both
  sides of it, so it is what the trend gate judges.
- ``p50_ms``: shown and searched for steps too, never gated: on a shared VM an unchanged tree's
  p50 moves by 30% from one run to the next.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.errors import UserError

from .changepoints import DEFAULT_ALPHA, DEFAULT_MIN_SIZE, DEFAULT_PERMUTATIONS, ChangePoint, e_divisive
from .results import DEFAULT_CV_WARN, is_reference, load_results, shape_key
from .stats import detectable_shift, prediction_p_value

DEFAULT_STORE = Path("reports") / "results"
# The trend gate: a slowdown of at least this much (ratio of medians after/before the step)...
DEFAULT_MIN_CHANGE = 0.10
# ...that starts within the last this-many runs of a series.
DEFAULT_LAST_RUNS = 5
METRICS = ("ratio", "p50_ms")
# Confirming a suspicious ratio (RatioHistory) uses at most this many of a series' latest runs:
# enough for a stable spread, recent enough to be the machine and code of today.
CONFIRM_MAX_RUNS = 20


@dataclass
class Series:
    fingerprint: str
    dataset_id: str
    checkpoint: str  # sha256, first 12 hex digits
    item_id: str
    shape: str
    runs: list[dict] = field(default_factory=list)  # {created_utc, commit, dirty, versions, ratio, p50_ms, cv, source}

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return self.fingerprint, self.dataset_id, self.checkpoint, self.item_id, self.shape

    @property
    def name(self) -> str:
        return f"{self.item_id} {self.shape}"

    def values(self, metric: str) -> np.ndarray:
        return np.array([r[metric] for r in self.runs], dtype=float)

    def quiet(self, cv_limit: float = DEFAULT_CV_WARN) -> bool:
        """Most of its runs had cv within the noisy-sample threshold."""
        cvs = [r["cv"] for r in self.runs if r["cv"] is not None]
        return bool(cvs) and float(np.median(cvs)) <= cv_limit


@dataclass(frozen=True)
class Change:
    series: Series
    metric: str
    point: ChangePoint

    @property
    def first_after(self) -> dict:
        return self.series.runs[self.point.index]

    @property
    def last_before(self) -> dict:
        return self.series.runs[self.point.index - 1]

    @property
    def slower(self) -> bool:
        return self.point.ratio > 1

    def describe(self) -> str:
        """'1.12x slower (p 0.002) ... between commit a (date) and commit b (date)'."""
        r = self.point.ratio
        what = f"{r:.2f}x slower" if r >= 1 else f"{1 / r:.2f}x faster"
        b, a = self.last_before, self.first_after
        text = (f"{self.series.name} [{self.metric}]: {what} (median {self.point.before_median:.4g} -> "
                f"{self.point.after_median:.4g}, p {self.point.p_value:.3f}), starting between "
                f"{_commit(b)} ({b['created_utc']}) and {_commit(a)} ({a['created_utc']})")
        changed = version_changes(b.get("versions") or {}, a.get("versions") or {})
        return text + (f"; versions changed there: {changed}" if changed else "")


def _commit(run: dict) -> str:
    c = (run.get("commit") or "unknown")[:12]
    return c + ("+dirty" if run.get("dirty") else "")


def version_changes(before: dict, after: dict) -> str:
    keys = sorted(set(before) | set(after))
    return ", ".join(f"{k} {before.get(k)} -> {after.get(k)}" for k in keys if before.get(k) != after.get(k))


# --- the store -------------------------------------------------------------------------------------

def history_files(store: Path) -> list[Path]:
    if not store.exists():
        raise UserError(f"{store}: no such folder; run `pytest bench/` (it writes every run to reports/results/) "
                        "or import results with `python -m bench history import FILE... --store DIR`")
    if not store.is_dir():
        raise UserError(f"{store}: not a folder; --store takes the folder of results files")
    return sorted(p for p in store.glob("*.json") if p.is_file())


def load_history(store: Path) -> list[dict]:
    """Every results file of the store, validated (a corrupt one is an error naming it), oldest first."""
    docs = []
    for path in history_files(store):
        doc = load_results(path)
        doc["_source"] = str(path)
        docs.append(doc)
    return sorted(docs, key=lambda d: (d["created_utc"], d["_source"]))


def machine_series(store: Path, fingerprint: str, dataset_id: str, checkpoint_sha256: str | None
                   ) -> tuple[dict[tuple[str, str], Series], list[str]]:
    """The series of one machine, data set and checkpoint in ``store``, by (item id, shape), and
    a note for each file skipped. Unlike ``load_history`` (the history command, where a corrupt
    file is an error), a benchmark run only consults the store: it skips an unreadable file and
    names it rather than refusing to measure. No store: no series."""
    docs, notes = [], []
    for path in history_files(store) if store.is_dir() else []:
        try:
            doc = load_results(path)
        except UserError as e:
            notes.append(f"history: skipped {e}")
            continue
        doc["_source"] = str(path)
        docs.append(doc)
    docs.sort(key=lambda d: (d["created_utc"], d["_source"]))
    wanted = (fingerprint, dataset_id, (checkpoint_sha256 or "")[:12])
    return {(s.item_id, s.shape): s for s in build_series(docs)
            if (s.fingerprint, s.dataset_id, s.checkpoint) == wanted}, notes


def import_results(files: list[Path], store: Path) -> list[tuple[Path, Path | None]]:
    """Validate every file first, then copy each into ``store`` under a name from its dataset,
    device, start time and content hash: (source, written path or None when already there)."""
    from compress.fsutil import atomic_write_bytes

    loaded = []
    for path in files:
        load_results(path)  # refuse the whole import before writing anything
        loaded.append((path, path.read_bytes()))
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{store}: cannot create ({err.strerror or err})") from None
    present = {hashlib.sha256(p.read_bytes()).hexdigest() for p in history_files(store)}
    out = []
    for path, raw in loaded:
        digest = hashlib.sha256(raw).hexdigest()
        if digest in present:
            out.append((path, None))
            continue
        doc = json.loads(raw)
        stamp = doc["created_utc"].replace("-", "").replace(":", "")
        target = store / f"{doc['dataset']['id']}-{doc['device']}-{stamp}-{digest[:12]}.json"
        try:
            atomic_write_bytes(target, raw)
        except OSError as err:
            raise UserError(f"{target}: cannot write ({err.strerror or err})") from None
        present.add(digest)
        out.append((path, target))
    return out


# --- series and change points ----------------------------------------------------------------------

def build_series(docs: list[dict]) -> list[Series]:
    by_key: dict[tuple, Series] = {}
    for doc in docs:
        if (doc.get("machine_info") or {}).get("emulated"):
            continue  # emulated timings are not a trend of any machine
        commit = doc.get("commit_info") or {}
        for item in doc["items"]:
            if item["status"] != "ok":
                continue
            for lat in item.get("latency") or []:
                s = Series(doc["fingerprint"], doc["dataset"]["id"], doc["checkpoint"]["sha256"][:12],
                           item["id"], shape_key(lat))
                s = by_key.setdefault(s.key, s)
                ratio = 1.0 if is_reference(item) else lat.get("ratio_to_reference")
                s.runs.append({"created_utc": doc["created_utc"], "commit": commit.get("id"),
                               "dirty": commit.get("dirty"), "versions": doc.get("versions") or {},
                               "ratio": ratio, "p50_ms": lat["p50_ms"], "cv": lat.get("cv"),
                               "source": doc.get("_source")})
    return sorted(by_key.values(), key=lambda s: s.key)


def find_changes(series: list[Series], alpha: float = DEFAULT_ALPHA, permutations: int = DEFAULT_PERMUTATIONS,
                 min_size: int = DEFAULT_MIN_SIZE) -> list[Change]:
    out = []
    for s in series:
        for metric in METRICS:
            values = s.values(metric)
            if metric == "ratio" and all(r["ratio"] == 1.0 for r in s.runs):
                continue  # the reference: its ratio is 1 by definition
            if len(values) < 2 * min_size or not np.isfinite(values).all() or (values <= 0).any():
                continue
            for cp in e_divisive(values, alpha=alpha, permutations=permutations, min_size=min_size, log=True):
                out.append(Change(s, metric, cp))
    return out


def trend_failures(changes: list[Change], min_change: float = DEFAULT_MIN_CHANGE,
                   last_runs: int = DEFAULT_LAST_RUNS, cv_limit: float = DEFAULT_CV_WARN) -> list[Change]:
    """The changes the trend gate fails on: in-run ratios of quiet series that got slower by at
    least ``min_change``, with the step starting within the last ``last_runs`` runs."""
    return [c for c in changes
            if c.metric == "ratio" and c.series.quiet(cv_limit) and c.point.ratio >= 1 + min_change
            and c.point.index >= len(c.series.runs) - last_runs]


def analyse(docs: list[dict], alpha: float = DEFAULT_ALPHA, permutations: int = DEFAULT_PERMUTATIONS,
            min_change: float = DEFAULT_MIN_CHANGE, last_runs: int = DEFAULT_LAST_RUNS
            ) -> tuple[list[Series], list[Change], list[Change]]:
    """Series, their change points and the trend gate's failures: the one pipeline the history
    command and the HTML view both show."""
    series = build_series(docs)
    changes = find_changes(series, alpha=alpha, permutations=permutations)
    return series, changes, trend_failures(changes, min_change, last_runs)


# --- one series' noise, for confirming a suspicious ratio within a run -----------------------------

@dataclass(frozen=True)
class RatioHistory:
    """The in-run ratios of one quiet series in earlier runs, on the log scale (a ratio's noise
    is multiplicative): what the gate's confirmation step compares this run's ratio with."""
    log_ratios: tuple[float, ...]
    first_utc: str
    last_utc: str

    @property
    def n_runs(self) -> int:
        return len(self.log_ratios)

    @property
    def center(self) -> float:
        """The history's typical ratio: exp of the mean log ratio."""
        return float(np.exp(np.mean(self.log_ratios)))

    @property
    def sd_log(self) -> float:
        """Between-run standard deviation of the log ratio (~ the relative spread)."""
        return float(np.std(self.log_ratios, ddof=1))

    def suspicious(self, ratio: float, sds: float) -> bool:
        """More than ``sds`` between-run standard deviations above the history's mean."""
        return math.log(ratio) - float(np.mean(self.log_ratios)) > sds * self.sd_log

    def p_value(self, ratio: float) -> float:
        return prediction_p_value(self.log_ratios, math.log(ratio))

    def detectable_change(self, alpha: float, power: float = 0.8) -> float:
        """The smallest slowdown (0.12 = 1.12x) one run confirms at ``alpha`` with ``power``."""
        return math.expm1(detectable_shift(self.n_runs, self.sd_log, alpha, power))

    def confirmation(self, rounds_factor: int, first_ratio: float | None) -> dict:
        """The results' ``latency[].confirmation`` record of a measurement judged against this
        history; ``rounds_factor`` > 1: a re-measurement, of a shape that first read ``first_ratio``."""
        again = rounds_factor > 1
        return {"history_ratios": [round(math.exp(x), 6) for x in self.log_ratios],
                "history_first_utc": self.first_utc, "history_last_utc": self.last_utc, "remeasured": again,
                "rounds_factor": rounds_factor, "first_ratio": first_ratio if again else None}

    @classmethod
    def from_confirmation(cls, conf: dict) -> RatioHistory:
        return cls(tuple(math.log(r) for r in conf["history_ratios"]), conf["history_first_utc"],
                   conf["history_last_utc"])


def ratio_history(series: Series, min_runs: int, max_runs: int = CONFIRM_MAX_RUNS,
                  cv_limit: float = DEFAULT_CV_WARN) -> RatioHistory | None:
    """The last ``max_runs`` ratios of a quiet series, or None when it has fewer than
    ``min_runs`` or is not quiet (a noisy series' spread says nothing about the next run). Runs
    after the series' last change point only: a step in the window would inflate the spread and
    shift the mean, and the new level is the one to compare with."""
    runs = [r for r in series.runs if r["ratio"] is not None and r["ratio"] > 0][-max_runs:]
    if len(runs) < min_runs or not Series(*series.key, runs=runs).quiet(cv_limit):
        return None
    steps = [c.point.index for c in find_changes([Series(*series.key, runs=runs)]) if c.metric == "ratio"]
    if steps:
        runs = runs[max(steps):]
        if len(runs) < min_runs:
            return None
    return RatioHistory(tuple(math.log(r["ratio"]) for r in runs), runs[0]["created_utc"], runs[-1]["created_utc"])
