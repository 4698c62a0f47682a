"""`python -m bench gate RESULTS.json`: the gate on a stored results file gives the same findings and
exit codes as the pytest items, on real results files and baselines."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from test_plugin import _restore_torch_globals, bench_cache, bench_run  # noqa: F401  (fixtures)

from bench.__main__ import EXIT_REGRESSION, EXIT_USER_ERROR, gate_exit_code, main
from bench.baselines import BaselineStore
from bench.config import load_gate_config
from bench.gate import run_gate

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "reports" / "digits-x86.json"  # written by the gate run that produced the committed report


@pytest.fixture
def results() -> dict:
    return json.loads(RESULTS.read_text())


def write(tmp_path: Path, doc: dict, name: str = "results.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def gate_args(path: Path, *more: str) -> list[str]:
    return ["gate", str(path), "--baseline-dir", str(REPO / "baselines"),
            "--gate-config", str(REPO / "pyproject.toml"), *more]


def test_the_committed_results_pass_their_gate_offline(results, tmp_path, capsys):
    assert main(gate_args(write(tmp_path, results))) == 0
    assert "no regressions" in capsys.readouterr().out


def test_offline_findings_are_the_ones_the_pytest_run_recorded(bench_run, pytester, monkeypatch, capsys):
    # A real run records baselines, a second one is gated by pytest; `bench gate` on the second
    # run's results file, with the same baselines and thresholds, finds exactly what pytest found.
    args = ("--variant", "fp32,int8-dynamic", "--runtime", "eager,onnxruntime", "--input-size", "native",
            "--min-samples", "30", "--min-time", "0.2")
    assert bench_run(*args, "--update-baselines").ret == 0
    second = bench_run(*args)
    out = bench_run.out
    path = next((out / "reports").glob("digits-*.json"))
    recorded = json.loads(path.read_text())["gate"]
    monkeypatch.chdir(pytester.path)  # pytest's rootdir: where both look for pyproject.toml
    code = main(["gate", str(path), "--baseline-dir", str(out / "baselines")])
    again = run_gate(json.loads(path.read_text()), BaselineStore(out / "baselines"),
                     load_gate_config(pytester.path / "pyproject.toml", required=False))
    key = lambda f: (f["id"], f["check"], str(f["shape"]), f["verdict"], f["message"])  # noqa: E731
    assert sorted(map(key, again["findings"])) == sorted(map(key, recorded["findings"]))
    assert code == (0 if second.ret == 0 else EXIT_REGRESSION)
    assert "baseline:" in capsys.readouterr().out


def _slowed(results: dict, item_id: str, factor: float) -> dict:
    doc = copy.deepcopy(results)
    doc.pop("gate", None)
    item = next(it for it in doc["items"] if it["id"] == item_id)
    for lat in item["latency"]:
        lat["samples_ms"] = [s * factor for s in lat["samples_ms"]]
        for k in ("p50_ms", "p90_ms", "p99_ms", "min_ms", "mean_ms", "stdev_ms"):
            lat[k] *= factor
        lat["ratio_to_reference"] *= factor
    return doc


def test_a_slowed_item_fails_with_its_message(results, tmp_path, capsys):
    victim = next(it for it in results["items"] if it["runtime"] == "onnxruntime" and it["latency"])
    path = write(tmp_path, _slowed(results, victim["id"], 3.0))
    assert main(gate_args(path)) == EXIT_REGRESSION
    out = capsys.readouterr().out
    # Three times the recorded samples against the baseline: about 3x slower, whatever the run.
    assert re.search(rf"{re.escape(victim['variant'])}/onnxruntime/\S+ latency .* [2-4]\.\d\dx slower", out)
    assert main(gate_args(path, "--latency-gate", "report")) == 0  # printed, fails nothing


def test_an_item_without_baseline_fails_unless_told(results, tmp_path, capsys):
    empty = tmp_path / "no-baselines"
    empty.mkdir()
    path = write(tmp_path, results)
    args = ["gate", str(path), "--baseline-dir", str(empty), "--gate-config", str(REPO / "pyproject.toml")]
    assert main(args) == EXIT_REGRESSION
    assert main([*args, "--baseline-missing", "skip"]) == 0


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(gate_args(bad)) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert main(gate_args(tmp_path / "absent.json")) == EXIT_USER_ERROR


def test_exit_code_rules():
    reg_lat = {"verdict": "regression", "check": "latency_ratio"}
    reg_acc = {"verdict": "regression", "check": "accuracy_budget"}
    new = {"verdict": "new", "check": "baseline"}
    ok = {"verdict": "ok", "check": "size"}
    assert gate_exit_code([ok]) == 0
    assert gate_exit_code([ok, reg_lat]) == EXIT_REGRESSION
    assert gate_exit_code([reg_lat], latency_gate="report") == 0
    assert gate_exit_code([reg_acc], latency_gate="report") == EXIT_REGRESSION
    assert gate_exit_code([new]) == EXIT_REGRESSION
    assert gate_exit_code([new], baseline_missing="skip") == 0
