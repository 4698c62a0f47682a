"""Command line: ``python -m bench report render|merge|combine ...`` and ``python -m bench gate``.

    python -m bench report render reports/cifar10-x86.json [-o reports/]
    python -m bench report merge a.json b.json -o docs/RESULTS.md [--claims] [--allow-mixed]
    python -m bench report combine shard1.json shard2.json ... -o results.json
    python -m bench report html a.json [b.json ...] -o site/
    python -m bench gate results.json [--baseline-dir baselines/] [--gate-config pyproject.toml]
    python -m bench compare A.json B.json [C.json ...] [--format text|md] [--fail-on slower,worse]
    python -m bench history [--store reports/results] [-o reports/history.md] [--gate]
    python -m bench history import FILE... [--store reports/results]
    python -m bench search [--checkpoint ... --data-root ...] --runtime openvino --budget-pp 1.0 [-o recipe.json]

Bad input (missing file, invalid JSON, results that must not be merged) prints
``error: <message>`` on stderr and exits 2, with nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compress.argtypes import fraction, positive_int
from compress.errors import UserError
from compress.fsutil import atomic_write_bytes

EXIT_USER_ERROR = 2  # the same code argparse uses for a bad command line
EXIT_REGRESSION = 1  # what pytest returns when a gate item fails
DEFAULT_GATE_CONFIG = Path("pyproject.toml")


def _load(path: Path) -> dict:
    from bench.results import load_results  # lazy: `--help` should not need numpy/scipy

    return load_results(path)


def _render(args: argparse.Namespace) -> None:
    from bench.report import render_report

    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise UserError(f"{args.out_dir}: is a file; -o takes a folder for the report and its plots")
    results = _load(args.results)
    md_path = _writing(args.out_dir, lambda: render_report(results, args.out_dir))
    print(md_path)


def _merge(args: argparse.Namespace) -> None:
    from bench.report import merge

    # Load everything before writing: a bad third file must not leave a half-updated document.
    results = [_load(p) for p in args.results]
    text = merge(results, claims=args.claims, allow_mixed=args.allow_mixed, sources=[str(p) for p in args.results])
    if args.output.is_dir():
        raise UserError(f"{args.output}: is a folder; -o takes the markdown file to write, e.g. docs/RESULTS.md")
    _writing(args.output, lambda: atomic_write_bytes(args.output, text.encode("utf-8")))
    print(args.output)


def _html(args: argparse.Namespace) -> None:
    from bench.report.html import write_html

    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise UserError(f"{args.out_dir}: is a file; -o takes a folder for index.html")
    results = [_load(p) for p in args.results]  # every file checked before anything is written
    history = None
    if args.history is not None:
        from bench.history import analyse, load_history

        history = analyse(load_history(args.history))
    print(_writing(args.out_dir, lambda: write_html(results, args.out_dir, [str(p) for p in args.results], history)))


def _combine(args: argparse.Namespace) -> None:
    from bench.shards import combine_shards
    from compress.fsutil import atomic_write_json

    combined = combine_shards([_load(p) for p in args.results], [str(p) for p in args.results])
    _writing(args.output, lambda: atomic_write_json(args.output, combined))
    print(args.output)


def gate_exit_code(findings: list[dict], latency_gate: str = "fail", baseline_missing: str = "fail") -> int:
    """Pure: the exit status the gate's findings give, by the same rules as the pytest items: a
    regression fails (latency ones only under --latency-gate fail), an item with no baseline fails
    under --baseline-missing fail."""
    for f in findings:
        if f["verdict"] == "regression" and (latency_gate == "fail" or "latency" not in str(f.get("check"))):
            return EXIT_REGRESSION
        if f["verdict"] == "new" and baseline_missing == "fail":
            return EXIT_REGRESSION
    return 0


def _gate(args: argparse.Namespace) -> int:
    from bench.baselines import BaselineStore
    from bench.config import load_gate_config
    from bench.gate import format_summary, run_gate

    results = _load(args.results)
    config = load_gate_config(args.gate_config, required=args.gate_config != DEFAULT_GATE_CONFIG)
    store = BaselineStore(args.baseline_dir)
    store.load(results["dataset"]["id"], results["device"])  # a damaged baselines file: one line, now
    gate = run_gate(results, store, config)
    print(f"baseline: {gate['baseline_file']} (fingerprint {'match' if gate['fingerprint_match'] else 'differs: ratio checks only'}); "
          f"thresholds: {gate['config_source']}")
    print(format_summary(gate["findings"]))
    return gate_exit_code(gate["findings"], args.latency_gate, args.baseline_missing)


def _compare(args: argparse.Namespace) -> int:
    from bench.compare import compare, failing, machines_note, render

    if len(args.results) < 2:
        raise UserError("compare needs two results files or more: A.json B.json [C.json ...]")
    docs = [_load(p) for p in args.results]  # every file checked before anything is printed
    status = 0
    for path, other in zip(args.results[1:], docs[1:]):
        rows = compare(docs[0], other, allow_mixed=args.allow_mixed, alpha=args.alpha)
        a, b = args.results[0].name, path.name
        title = f"B = {path} vs A = {args.results[0]}"
        note = machines_note(docs[0], other)
        print(f"## {title}\n" if args.format == "md" else f"{title}\n")
        if note:
            print(f"Note: {note}.\n")
        print(render(rows, a, b, args.format))
        bad = failing(rows, args.fail_on)
        counts = {v: sum(r["verdict"] == v for r in rows) for v in ("slower", "faster", "worse", "better")}
        print("\n" + ", ".join(f"{n} {v}" for v, n in counts.items()) + (f"; failing on {len(bad)}" if bad else "") + "\n")
        status = status or (EXIT_REGRESSION if bad else 0)
    return status


def _history(args: argparse.Namespace) -> int:
    from bench.changepoints import DEFAULT_MIN_SIZE
    from bench.history import analyse, load_history
    from bench.report.history import render_markdown, render_text
    from bench.results import DEFAULT_CV_WARN

    docs = load_history(args.store)
    if args.match:
        docs = [d for d in docs if any(args.match in x for x in (d["dataset"]["id"], d["fingerprint"]))]
    if not docs:
        raise UserError(f"{args.store}: no results files" + (f" matching {args.match!r}" if args.match else "")
                        + "; run `pytest bench/` or import results with `python -m bench history import`")
    series, changes, failures = analyse(docs, args.alpha, args.permutations, args.min_change, args.last_runs)
    print(render_text(series, changes, failures))
    if args.output is not None:
        settings = {"alpha": args.alpha, "permutations": args.permutations, "min_size": DEFAULT_MIN_SIZE,
                    "min_change": args.min_change, "last_runs": args.last_runs, "cv_limit": DEFAULT_CV_WARN}
        print(_writing(args.output, lambda: render_markdown(series, changes, failures, args.output, settings)))
    if args.gate and failures:
        print(f"trend gate: {len(failures)} series slowed by {args.min_change:.0%} or more in the last "
              f"{args.last_runs} runs")
        return EXIT_REGRESSION
    return 0


def _history_import(args: argparse.Namespace) -> int:
    from bench.history import import_results

    for src, dst in import_results(args.results, args.store):
        print(f"{src} -> {dst}" if dst else f"{src}: already in {args.store}")
    return 0


def _fail_on(text: str) -> set[str]:
    allowed = {"slower", "worse", "unmatched"}
    chosen = {t.strip() for t in text.split(",") if t.strip()}
    if not chosen <= allowed:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(sorted(allowed))}, comma-separated")
    return chosen


def _writing(target: Path, write):
    """Run ``write``; a full disk or a read-only folder is the user's to fix, not a traceback."""
    try:
        return write()
    except OSError as err:
        raise UserError(f"{target}: cannot write ({err.strerror or err}); check the path and permissions") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="ResNet18 compression benchmark tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = commands.add_parser("report", help="markdown reports from results JSON files")
    report_commands = report.add_subparsers(dest="report_command", required=True, metavar="ACTION")

    render = report_commands.add_parser(
        "render", help="one run -> <out>/<dataset>-<device>.md with PNG plots beside it")
    render.add_argument("results", type=Path, help="results JSON written by `pytest bench/`")
    render.add_argument("-o", "--out-dir", type=Path, default=Path("reports"),
                        help="folder for the markdown and its plots folder (default: reports/)")
    render.set_defaults(func=_render)

    merge = report_commands.add_parser(
        "merge", help="several runs (one per machine) -> one markdown document, a column per run")
    merge.add_argument("results", type=Path, nargs="+", help="results JSON files, one per machine/run")
    merge.add_argument("-o", "--output", type=Path, required=True, help="markdown file to write, e.g. docs/RESULTS.md")
    merge.add_argument("--claims", action="store_true",
                       help="add the tutorial's claimed figures (labelled CLAIM) beside our measurements")
    merge.add_argument("--allow-mixed", action="store_true",
                       help="merge runs on different datasets/checkpoints into separate sections instead of refusing")
    merge.set_defaults(func=_merge)

    page = report_commands.add_parser(
        "html", help="one or more runs -> <out>/index.html: one self-contained page (no server, no network) with a "
                     "sortable, filterable table and an accuracy-vs-latency chart that names each point on hover")
    page.add_argument("results", type=Path, nargs="+", help="results JSON files")
    page.add_argument("-o", "--out-dir", type=Path, default=Path("site"), help="folder for index.html (default: site/)")
    page.add_argument("--history", type=Path, default=None,
                      help="also show the change points and series of this history store (e.g. reports/results)")
    page.set_defaults(func=_html)

    combine = report_commands.add_parser(
        "combine", help="the shards of one run (pytest bench/ --shard K/N) -> one results JSON file")
    combine.add_argument("results", type=Path, nargs="+", help="every shard's results JSON file, once each")
    combine.add_argument("-o", "--output", type=Path, required=True, help="results JSON file to write")
    combine.set_defaults(func=_combine)

    gate = commands.add_parser(
        "gate", help="the gate on a stored results file (CI artifacts, other machines): same findings and exit "
                     "codes as in pytest (0 pass, 1 regression or missing baseline, 2 bad input)")
    gate.add_argument("results", type=Path, help="results JSON written by `pytest bench/`")
    gate.add_argument("--baseline-dir", type=Path, default=Path("baselines"), help="default: baselines/")
    gate.add_argument("--gate-config", type=Path, default=DEFAULT_GATE_CONFIG,
                      help="the pyproject.toml whose [tool.resnet18-bench.gate] sets the thresholds "
                           "(default: ./pyproject.toml; built-in defaults when it is absent)")
    gate.add_argument("--latency-gate", choices=("fail", "report"), default="fail",
                      help="report: latency regressions are printed but fail nothing")
    gate.add_argument("--baseline-missing", choices=("fail", "skip"), default="fail",
                      help="an item with no baseline fails (default) or is only reported")
    gate.set_defaults(func=_gate)

    cmp = commands.add_parser(
        "compare", help="matched items of two or more results files side by side, each against the first: "
                        "'1.23x slower (...)' or 'not significant' after a statistical test")
    cmp.add_argument("results", type=Path, nargs="+", help="A.json B.json [C.json ...]: B, C... compared with A")
    cmp.add_argument("--format", choices=("text", "md"), default="text")
    cmp.add_argument("--fail-on", type=_fail_on, default=set(),
                     help="exit 1 when a row is slower, worse (top-1) or unmatched (comma list; default: never)")
    cmp.add_argument("--allow-mixed", action="store_true",
                     help="compare files of different datasets or checkpoints (latency only)")
    cmp.add_argument("--alpha", type=float, default=0.01, help="significance level (default: the gate's 0.01)")
    cmp.set_defaults(func=_compare)

    from bench.changepoints import DEFAULT_ALPHA, DEFAULT_PERMUTATIONS
    from bench.history import DEFAULT_LAST_RUNS, DEFAULT_MIN_CHANGE, DEFAULT_STORE

    hist = commands.add_parser(
        "history", help="every stored run as series per machine, data, item and shape; change points "
                        "(E-Divisive means) and a trend gate (--gate: exit 1 on a recent slowdown)")
    hist.add_argument("--store", type=Path, default=DEFAULT_STORE,
                      help=f"folder of results files (default: {DEFAULT_STORE}/, where every run writes its copy)")
    hist.add_argument("-o", "--output", type=Path, default=None,
                      help="also write a markdown report here, with one PNG per changed series beside it")
    hist.add_argument("--match", default=None, help="only runs whose dataset id or fingerprint contains this text")
    hist.add_argument("--alpha", type=fraction, default=DEFAULT_ALPHA, help="significance of a step (default 0.01)")
    hist.add_argument("--permutations", type=positive_int, default=DEFAULT_PERMUTATIONS,
                      help=f"reorderings in the permutation test (default {DEFAULT_PERMUTATIONS})")
    hist.add_argument("--gate", action="store_true",
                      help="exit 1 when a quiet series' in-run ratio got slower by --min-change within --last-runs")
    hist.add_argument("--min-change", type=fraction, default=DEFAULT_MIN_CHANGE,
                      help=f"smallest slowdown the trend gate fails on (default {DEFAULT_MIN_CHANGE:g})")
    hist.add_argument("--last-runs", type=positive_int, default=DEFAULT_LAST_RUNS,
                      help=f"a step must start within this many latest runs of its series (default {DEFAULT_LAST_RUNS})")
    hist.set_defaults(func=_history)
    hist_commands = hist.add_subparsers(dest="history_command", metavar="ACTION")
    imp = hist_commands.add_parser("import", help="copy validated results files (CI artifacts, other machines) "
                                                  "into the store; files already there are skipped")
    imp.add_argument("results", type=Path, nargs="+")
    imp.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"default: {DEFAULT_STORE}/")
    imp.set_defaults(func=_history_import)

    from bench.search import add_search_parser

    add_search_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
