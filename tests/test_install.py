"""The gate reads the thresholds of the project it gates, from any copy of this package.

Which file configured a run is in its results (``gate.config_source``); these tests read it back.

- The rule (pytester, in-process): thresholds come from the pyproject.toml at pytest's rootdir, or
  ``--gate-config``, else the built-in defaults; reports/ and baselines/ default to the rootdir.
- The copy this interpreter imports, run the way an installed copy is run:
  ``pytest --pyargs bench.test_bench -c pyproject.toml`` collects the items from the same copy as
  the plugin (``pytest bench/`` in a checkout beside a non-editable install would mix two copies:
  ImportPathMismatchError), in another project (a child process, as users start it) and in this
  checkout. In the editable .venv that copy is the checkout; under ``tox -e unit`` and
  ``scripts/check-installed.sh`` it is a built package in site-packages, and
  RESNET18_BENCH_REQUIRE_INSTALLED=1 makes a copy imported from the checkout a failure.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_plugin import _restore_torch_globals, bench_cache  # noqa: F401  (fixtures, pre-imports)

import bench
from bench.config import GateConfig, load_gate_config
from bench.devices import host_arch
from bench.results import load_results

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
HOST = host_arch()
BENCH_DIR = Path(bench.__file__).resolve().parent  # the copy under test
FROM_CHECKOUT = BENCH_DIR == REPO / "bench"
REQUIRE_INSTALLED = os.environ.get("RESNET18_BENCH_REQUIRE_INSTALLED") == "1"

# Values no default has: finding them in the results proves which file was read.
PROJECT_GATE = """\
[project]
name = "someone-elses-model"

[tool.resnet18-bench.gate]
cv_warn = 0.37
accuracy_budget_pp = 3.25
"""
EXPLICIT_GATE = """\
[tool.resnet18-bench.gate]
cv_warn = 0.21
accuracy_budget_pp = 1.75
"""
# One gated item (the size of fp32 on eager) on the shared test checkpoint: seconds, not minutes.
TINY = ("--device", "cpu", "--variant", "fp32", "--runtime", "eager", "--input-size", "native",
        "--batch-size", "1", "--eval-samples", "50", "--threads", "1", "-p", "no:cacheprovider")


def _same(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _gate_of(results_path: Path) -> dict:
    return load_results(results_path)["gate"]


def _copy_model(checkpoint: Path, folder: Path) -> Path:
    """The test checkpoint and its card (same name, .json) copied into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in (checkpoint, checkpoint.with_suffix(".json")):
        shutil.copyfile(src, folder / src.name)
    return folder / checkpoint.name


# ---------------------------------------------------------------- the rule, in-process
@pytest.fixture
def gate_run(pytester, monkeypatch, bench_cache, checkpoint):  # noqa: F811
    """``gate_run(*args)``: the size item of a copy of bench/test_bench.py, run in pytester.path,
    with no --report-dir or --baseline-dir: they default to pytest's rootdir."""
    monkeypatch.setenv("RESNET18_BENCH_CACHE", str(bench_cache))
    pytester.makepyfile(test_bench=(REPO / "bench" / "test_bench.py").read_text(encoding="utf-8"))
    # The model lives in the project: pytest derives its rootdir from every existing path on the
    # command line, option values included (pytest-dev/pytest#8846), so one outside would move it.
    model = _copy_model(checkpoint, pytester.path / "models")

    def run(*args: str):
        r = pytester.runpytest("test_bench.py::test_size", *TINY, "--checkpoint", str(model), *args)
        assert r.ret == pytest.ExitCode.OK, "\n".join(r.outlines + r.errlines)[-3000:]
        return r

    return run


@pytest.mark.parametrize("where", ["rootdir pyproject", "--gate-config", "no pyproject"])
def test_the_gate_reads_the_measured_projects_thresholds(gate_run, pytester, tmp_path, where):
    root = pytester.path
    args = ["--baseline-missing", "record"]
    if where != "no pyproject":
        pytester.makepyprojecttoml(PROJECT_GATE)
    if where == "--gate-config":
        explicit = tmp_path / "elsewhere" / "gate.toml"
        explicit.parent.mkdir()
        explicit.write_text(EXPLICIT_GATE)
        args += ["--gate-config", str(explicit)]
    gate_run(*args)

    # Reports and baselines land in the project at pytest's rootdir.
    gate = _gate_of(root / "reports" / f"digits-{HOST}.json")
    assert list((root / "baselines").rglob("*.json"))
    if where == "rootdir pyproject":
        assert _same(gate["config_source"], root / "pyproject.toml")
        assert (gate["cv_warn"], gate["accuracy_budget_pp"]) == (0.37, 3.25)
    elif where == "--gate-config":  # named on the command line: it wins over the rootdir's file
        assert _same(gate["config_source"], explicit)
        assert (gate["cv_warn"], gate["accuracy_budget_pp"]) == (0.21, 1.75)
    else:
        assert gate["config_source"] == "built-in defaults"
        assert (gate["cv_warn"], gate["accuracy_budget_pp"]) == (GateConfig().cv_warn, GateConfig().accuracy_budget_pp)


# ---------------------------------------------------------------- an installed copy, as users run it
# pytest's console script puts its own folder first on sys.path, not the current directory
# (`python -m pytest` would put the checkout first and import its bench instead): the same here.
RUNNER = """\
import sys

import pytest

code = pytest.main()
import bench

print("bench imported from", bench.__file__)
sys.exit(code)
"""


@pytest.fixture
def run_pytest(tmp_path):
    """``run_pytest(args, cwd)``: pytest in a child process of this interpreter, as its console script runs."""
    runner = tmp_path / "runner" / "pytest_main.py"
    runner.parent.mkdir()
    runner.write_text(RUNNER)

    def run(args, cwd: Path) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, str(runner), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                           timeout=600)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-4000:]
        assert "ImportPathMismatchError" not in out
        used = Path(next(ln for ln in r.stdout.splitlines() if ln.startswith("bench imported from"))
                    .split(" from ", 1)[1]).resolve().parent
        assert used == BENCH_DIR, f"the run imported bench from {used}, this test process from {BENCH_DIR}"
        return r

    return run


def test_the_copy_under_test_is_installed_where_that_is_required():
    if REQUIRE_INSTALLED:
        assert not FROM_CHECKOUT, (f"RESNET18_BENCH_REQUIRE_INSTALLED=1 but bench is imported from the checkout "
                                   f"({BENCH_DIR}): install the package without -e")
    # The plugin is registered by the distribution's metadata, wherever the code lies.
    eps = importlib.metadata.entry_points(group="pytest11")
    assert any(ep.name == "resnet18_bench" and ep.value == "bench.plugin" for ep in eps)


def test_an_installed_copy_gates_the_project_it_runs_in(run_pytest, tmp_path, checkpoint):
    # Someone else's repository: no bench/ folder, its own pyproject.toml, its model kept
    # elsewhere. -c pins pytest's rootdir to the project: without it, the existing path given to
    # --checkpoint would decide the rootdir (pytest-dev/pytest#8846).
    project = tmp_path / "someone-elses-model"
    project.mkdir()
    (project / "pyproject.toml").write_text(PROJECT_GATE)
    run_pytest(["--pyargs", "bench.test_bench::test_size", "bench.test_bench::test_accuracy", "-c", "pyproject.toml",
                *TINY, "--checkpoint", checkpoint, "--baseline-missing", "record"], cwd=project)
    results_file = project / "reports" / f"digits-{HOST}.json"
    gate = _gate_of(results_file)
    assert _same(gate["config_source"], project / "pyproject.toml")
    assert (gate["cv_warn"], gate["accuracy_budget_pp"]) == (0.37, 3.25)
    assert list((project / "baselines").rglob("*.json"))  # the project's baselines/, recorded there

    # The command-line tools of the same copy, run outside any checkout (`python -m` puts the
    # current directory first on sys.path). merge --claims reads claims.toml, package data.
    listed = subprocess.run([sys.executable, "-m", "compress", "list"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert any(ln.split()[:1] == ["fp32"] for ln in listed.stdout.splitlines()), listed.stdout
    merged = tmp_path / "RESULTS.md"
    m = subprocess.run([sys.executable, "-m", "bench", "report", "merge", str(results_file), "-o", str(merged),
                        "--claims"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert m.returncode == 0, m.stderr[-2000:]
    assert "fp32" in merged.read_text()


def test_the_same_command_in_this_checkout_reads_the_repositorys_thresholds(pytester, monkeypatch, bench_cache,  # noqa: F811
                                                                             tmp_path, checkpoint):
    # In-process (a second child process would cost a torch import): the copy this process
    # imports, started in the checkout; the outputs go to tmp_path so the repository's reports/
    # and baselines/ stay untouched.
    monkeypatch.setenv("RESNET18_BENCH_CACHE", str(bench_cache))
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    r = pytester.runpytest("--pyargs", "bench.test_bench::test_size", "-c", "pyproject.toml", *TINY,
                           "--checkpoint", str(checkpoint), "--report-dir", str(out / "reports"),
                           "--baseline-dir", str(out / "baselines"), "--baseline-missing", "skip")
    assert r.ret == pytest.ExitCode.OK, "\n".join(r.outlines + r.errlines)[-3000:]
    gate = _gate_of(out / "reports" / f"digits-{HOST}.json")
    assert _same(gate["config_source"], REPO / "pyproject.toml")
    repo = load_gate_config(REPO / "pyproject.toml")
    assert (gate["cv_warn"], gate["accuracy_budget_pp"]) == (repo.cv_warn, repo.accuracy_budget_pp)


# ---------------------------------------------------------------- what the package ships
def test_the_installed_package_ships_every_file_of_the_source_tree():
    if FROM_CHECKOUT:
        if REQUIRE_INSTALLED:
            pytest.fail(f"RESNET18_BENCH_REQUIRE_INSTALLED=1 but bench is imported from the checkout ({BENCH_DIR})")
        pytest.skip("bench is the checkout (editable install): scripts/check-installed.sh and tox -e unit "
                    "check a built package")
    shipped = {f.as_posix() for f in importlib.metadata.distribution("resnet18-bench").files or ()}
    source = {p.relative_to(REPO).as_posix() for pkg in ("bench", "compress") for p in (REPO / pkg).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and not p.name.startswith(".")}
    assert "bench/report/claims.toml" in source
    assert source - shipped == set(), "in the source tree but not in the installed package"
