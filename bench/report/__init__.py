"""Markdown + PNG reports from results JSON files (docs/results-schema.md).

Two steps, kept apart so the numbers can be unit-tested without parsing markdown:
  data:   results dict -> DataFrames / small records (pure functions, numeric columns)
  render: DataFrames -> markdown text and PNG bytes (formatting only, no decisions)

Every number printed comes from the results file (a measurement of that run), from the
gate's findings stored in it, or from claims.toml (labelled as claims, never mixed with
measurements). The rules that turn numbers into words ("good for", the recommendation, the
claim explanations) are stated in the report and live in one module each:

  frames.py    results -> DataFrames (items, latency, throughput, gate findings, ...)
  rules.py     accuracy budget, "good for" tags, the recommendation, the Pareto front
  markdown.py  formatting and the single-run report (render_markdown, render_report)
  plots.py     the PNG plots
  merging.py   several runs -> one document (merge)
  claims.py    the tutorial's claims (claims.toml) against the measurements
"""
from .claims import claim_explanations
from .frames import best_runtime_frame, gate_frame, latency_frame, runtime_wins_frame
from .markdown import render_markdown, render_report
from .merging import merge, run_labels
from .rules import DEFAULT_BUDGET_PP, accuracy_budget, good_for, pareto_front, recommend, summary_frame

__all__ = [
    "DEFAULT_BUDGET_PP",
    "accuracy_budget",
    "best_runtime_frame",
    "runtime_wins_frame",
    "claim_explanations",
    "gate_frame",
    "good_for",
    "latency_frame",
    "merge",
    "pareto_front",
    "recommend",
    "render_markdown",
    "render_report",
    "run_labels",
    "summary_frame",
]
