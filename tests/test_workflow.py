"""The CI workflow users copy (.github/workflows/bench.yml) cannot run here: parse it and check
that every command it runs exists in this project and that its options parse."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from _pytest.config.argparsing import Parser

from bench.__main__ import build_parser
from bench.devices import DEVICE_CHOICES
from bench.options import add_options

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "bench.yml"
PYTEST_FLAGS = {"-q", "-rs"}  # pytest's own flags the workflow may pass


@pytest.fixture(scope="module")
def wf() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _matrix(wf) -> list[dict]:
    return wf["jobs"]["bench"]["strategy"]["matrix"]["include"]


def _expand(text: str, entry: dict) -> str:
    text = re.sub(r"\$\{\{\s*matrix\.([\w-]+)\s*\}\}", lambda m: str(entry[m.group(1)]), text)
    assert "${{" not in text, f"unexpanded expression in {text!r}"
    return text


def _commands(wf) -> list[tuple[str, list[str]]]:
    """(job/step, argv) for every run: line, once per matrix entry that the job runs for."""
    out = []
    for job_name, job in wf["jobs"].items():
        entries = _matrix(wf) if "strategy" in job else [{}]
        for entry in entries:
            for step in job["steps"]:
                if "run" in step:
                    for line in step["run"].strip().splitlines():
                        out.append((f"{job_name}/{step.get('name')}", shlex.split(_expand(line, entry))))
    return out


def _bench_parser() -> Parser:
    parser = Parser(_ispytest=True)
    add_options(parser)
    return parser


def test_matrix_covers_x86_in_shards_arm_and_a_self_hosted_gpu(wf):
    by_name = {e["name"]: e for e in _matrix(wf)}
    assert set(by_name) == {"x86-shard1", "x86-shard2", "arm"}
    assert {by_name[n]["shard"] for n in ("x86-shard1", "x86-shard2")} == {"1/2", "2/2"}
    assert by_name["x86-shard1"]["runs-on"] == "ubuntu-24.04" and by_name["arm"]["runs-on"] == "ubuntu-24.04-arm"
    assert all(e["device"] in DEVICE_CHOICES for e in _matrix(wf))
    assert wf["jobs"]["bench"]["strategy"]["fail-fast"] is False
    cuda = wf["jobs"]["bench-cuda"]
    assert "self-hosted" in cuda["runs-on"]


def test_fork_pull_requests_never_reach_the_self_hosted_runner(wf):
    # The self-hosted runner keeps its disk: code from a fork's pull request must not run there.
    guard = wf["jobs"]["bench-cuda"]["if"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in guard
    assert "github.event_name != 'pull_request'" in guard
    hosted = [j for j in wf["jobs"].values() if "self-hosted" not in str(j["runs-on"])]
    assert all("self-hosted" not in str(e["runs-on"]) for e in _matrix(wf)) and len(hosted) == 2
    # No job keeps the checkout's token where later steps (running the PR's code) could read it.
    for job in wf["jobs"].values():
        for step in job["steps"]:
            if "actions/checkout" in step.get("uses", ""):
                assert step.get("with", {}).get("persist-credentials") is False


def test_extras_named_by_the_matrix_exist(wf):
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for e in _matrix(wf):
        assert set(e["extras"].split(",")) <= set(extras), e


def test_every_command_exists_and_its_options_parse(wf):
    seen = set()
    for where, argv in _commands(wf):
        if argv[:1] == ["bash"]:
            assert (REPO / argv[1]).is_file(), f"{where}: {argv[1]} is not in the repository"
            seen.add("setup")
        elif argv[:3] == [".venv/bin/python", "-m", "pytest"]:
            target, *args = argv[3:]
            assert (REPO / target).is_dir(), f"{where}: pytest target {target} does not exist"
            if target.rstrip("/") == "bench":
                # Unknown options and bad values raise a UsageError here, as they would there.
                _bench_parser().parse([a for a in args if a not in PYTEST_FLAGS])
                seen.add("bench")
            else:
                assert set(args) <= PYTEST_FLAGS, f"{where}: {args}"
        elif argv[:3] == [".venv/bin/python", "-m", "bench"]:
            build_parser().parse_args(argv[3:])  # argparse exits (SystemExit) on anything it does not know
            seen.add("merge")
        else:
            pytest.fail(f"{where}: unexpected command {argv}")
    assert seen == {"setup", "bench", "merge"}


def test_a_misspelled_option_would_be_caught():
    with pytest.raises(pytest.UsageError):
        _bench_parser().parse(["--device", "arm", "--baselines-missing", "skip"])
    with pytest.raises(pytest.UsageError):
        _bench_parser().parse(["--device", "tpu"])


def test_merge_downloads_what_the_device_jobs_upload(wf):
    uploads = [s["with"]["name"] for job in ("bench", "bench-cuda") for s in wf["jobs"][job]["steps"]
               if "upload-artifact" in s.get("uses", "")]
    (download,) = [s for s in wf["jobs"]["merge"]["steps"] if "download-artifact" in s.get("uses", "")]
    pattern = download["with"]["pattern"]
    assert any(re.fullmatch(pattern.replace("*", r".*"), re.sub(r"\$\{\{.*?\}\}", "x86", u)) for u in uploads)
    merge = [argv for where, argv in _commands(wf) if where.startswith("merge/") and "merge" in argv]
    assert merge and any(a.startswith(download["with"]["path"]) for a in merge[0])
    # Each job writes its reports outside the checkout's committed reports/, so stale files stay out.
    gate = [argv for _, argv in _commands(wf) if "bench/" in argv]
    assert all(argv[argv.index("--report-dir") + 1] == "bench-out" for argv in gate)


# ---------------------------------------------------------------- exactly one ONNX Runtime package per job
ORT_EXTRAS = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}  # pyproject's extras and what each installs


def _setup_default_extras() -> str:
    m = re.search(r"PROJECT_EXTRAS:-([\w,]+)\}", (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8"))
    assert m, "scripts/setup.sh no longer reads ${PROJECT_EXTRAS:-default}"
    return m.group(1)


def _installs(wf) -> list[tuple[str, dict, str]]:
    """(job, matrix entry, PROJECT_EXTRAS in force) for every step that runs scripts/setup.sh."""
    out = []
    for job_name, job in wf["jobs"].items():
        for entry in _matrix(wf) if "strategy" in job else [{}]:
            for step in job["steps"]:
                if "scripts/setup.sh" in step.get("run", ""):
                    env = {**job.get("env", {}), **step.get("env", {})}
                    extras = _expand(str(env["PROJECT_EXTRAS"]), entry) if "PROJECT_EXTRAS" in env \
                        else _setup_default_extras()
                    out.append((job_name, entry, extras))
    return out


def test_every_job_installs_exactly_one_onnxruntime_extra(wf):
    installs = _installs(wf)
    assert {job for job, _, _ in installs} == set(wf["jobs"]), "every job installs the project"
    for job, entry, extras in installs:
        ort = [e for e in extras.split(",") if e in ORT_EXTRAS]
        assert len(ort) == 1, f"{job} {entry.get('name', '')}: PROJECT_EXTRAS={extras} installs {len(ort)} ONNX Runtime packages"
        if entry:  # a device job on a CPU runner gets the CPU build
            assert ort == ["cpu"], (job, entry["name"], extras)
        elif job == "bench-cuda":  # the CUDA runner gets the GPU build
            assert ort == ["gpu"], (job, extras)


def test_setup_defaults_to_the_cpu_build():
    assert _setup_default_extras().split(",") == ["dev", "cpu", "openvino", "pt2"]


def test_onnxruntime_is_only_in_the_cpu_and_gpu_extras():
    # Any ONNX Runtime package in the base dependencies would be installed beside the gpu extra's
    # onnxruntime-gpu, and the two share one module.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def ort_names(reqs):
        return [re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in reqs
                if re.match(r"onnxruntime([-_.][a-z]+)?(\[|[<>=!~ ;]|$)", r, re.I)]

    assert ort_names(project["dependencies"]) == []
    extras = project["optional-dependencies"]
    for name, reqs in extras.items():
        assert ort_names(reqs) == ([ORT_EXTRAS[name]] if name in ORT_EXTRAS else []), name
