"""Command line: ``python -m bench report render|merge ...``.

    python -m bench report render reports/cifar10-x86.json [-o reports/]
    python -m bench report merge a.json b.json -o docs/RESULTS.md [--claims] [--allow-mixed]
    python -m bench report combine shard1.json shard2.json ... -o results.json

Bad input (missing file, invalid JSON, results that must not be merged) prints
``error: <message>`` on stderr and exits 2, with nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compress.errors import UserError
from compress.fsutil import atomic_write_bytes

EXIT_USER_ERROR = 2  # the same code argparse uses for a bad command line


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


def _combine(args: argparse.Namespace) -> None:
    from bench.shards import combine_shards
    from compress.fsutil import atomic_write_json

    combined = combine_shards([_load(p) for p in args.results], [str(p) for p in args.results])
    _writing(args.output, lambda: atomic_write_json(args.output, combined))
    print(args.output)


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

    combine = report_commands.add_parser(
        "combine", help="the shards of one run (pytest bench/ --shard K/N) -> one results JSON file")
    combine.add_argument("results", type=Path, nargs="+", help="every shard's results JSON file, once each")
    combine.add_argument("-o", "--output", type=Path, required=True, help="results JSON file to write")
    combine.set_defaults(func=_combine)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
