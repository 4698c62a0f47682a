"""The pytest plugin (bench/plugin.py) as users meet it: `pytest bench/ --device cpu ...`.

Each test runs pytest inside pytest (pytester, in-process: no second torch import) on a copy of
bench/test_bench.py, with the shared test checkpoint from tests/conftest.py (a card beside it),
so no run trains the embedded model. Every run writes reports and baselines to a temporary
directory: nothing lands in the repository.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

from bench.devices import host_arch
from bench.results import load_results

pytest_plugins = ["pytester"]

# An in-process pytester run forgets every module first imported during that run; importing a
# compiled extension (onnxruntime, onnx, scipy, ...) a second time later in this process aborts
# the interpreter. So everything a bench run imports lazily is imported here, once, up front.
for _name in ("onnx", "onnxruntime", "onnxruntime.quantization", "scipy.stats", "sklearn.datasets",
              "sklearn.model_selection", "matplotlib.figure", "matplotlib.ticker", "matplotlib.style", "pandas",
              "PIL.Image", "safetensors.torch", "torchvision", "torch_pruning", "cpuinfo", "filelock",
              "bench.session", "bench.report", "bench.gate", "bench.baselines", "compress.context"):
    try:
        importlib.import_module(_name)
    except ImportError:  # optional here; the tests that need it say so
        pass

REPO = Path(__file__).resolve().parents[1]
HOST = host_arch()
OTHER_ARCH = "arm" if HOST == "x86" else "x86"
OTHER_INT8 = "int8-static-arm" if HOST == "x86" else "int8-static"  # the static int8 this host cannot run
USAGE_ERROR = pytest.ExitCode.USAGE_ERROR  # 4
ID = re.compile(r"::(test_\w+)\[(.+)-(eager|torchscript|onnxruntime)-(x86|arm|cuda)(?:-(\d+x\d+))?\]$")


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """One cache (artifacts, datasets) for every inner run of the session."""
    return tmp_path_factory.mktemp("plugin-cache")


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    # An in-process run sets torch's thread count (--threads) and may switch the quantized engine;
    # the tests after it must not inherit either.
    threads, engine = torch.get_num_threads(), torch.backends.quantized.engine
    yield
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = engine


@pytest.fixture
def bench_run(pytester, monkeypatch, bench_cache, checkpoint, tmp_path):
    """Run pytest on a copy of bench/test_bench.py: ``bench_run(*args)`` -> RunResult, with
    ``bench_run.out`` the run's report and baseline directory. (Not named ``bench``: that is
    the plugin's own fixture.)"""
    monkeypatch.setenv("RESNET18_BENCH_CACHE", str(bench_cache))
    pytester.makepyfile(test_bench=(REPO / "bench" / "test_bench.py").read_text(encoding="utf-8"))
    out = tmp_path / "out"

    def run(*args: str, with_checkpoint: bool = True):
        base = ["-p", "no:cacheprovider", "--report-dir", str(out / "reports"),
                "--baseline-dir", str(out / "baselines")]
        if with_checkpoint:
            base += ["--checkpoint", str(checkpoint)]
        return pytester.runpytest(*base, *args)

    run.out = out
    return run


def usage_error(result) -> str:
    """Assert a clean usage error and return its one message line."""
    text = "\n".join(result.outlines + result.errlines)
    assert result.ret == USAGE_ERROR, f"expected a usage error (4), got {result.ret}:\n{text[-3000:]}"
    assert "Traceback" not in text and "INTERNALERROR" not in text, text[-3000:]
    # pytest prints "ERROR: <message>" for a UsageError, and argparse's "usage: ..." line followed
    # by "pytest: error: argument --x: <message>" for a value a type parser refused.
    lines = [ln for ln in result.errlines
             if (ln.startswith("ERROR:") and not ln.startswith("ERROR: usage:")) or ": error: " in ln]
    assert len(lines) == 1, f"expected one error line, got {lines}"
    return lines[0]


def collected_ids(result) -> list[str]:
    assert result.ret == pytest.ExitCode.OK, "\n".join(result.outlines + result.errlines)[-3000:]
    return [ln.strip() for ln in result.outlines if ID.search(ln.strip())]


def parse(node_id: str) -> tuple[str, str, str, str, str | None]:
    """'test_bench.py::test_latency[int8-static-onnxruntime-x86-224x224]' -> (test, variant, runtime, device, shape)"""
    return ID.search(node_id).groups()


def _cli_ids(cases):
    return [" ".join(args) for args, _ in cases]


# ---------------------------------------------------------------- bad options fail at start-up
BAD_VALUES = [
    (["--device", "gpu"], "invalid choice: 'gpu'"),
    (["--batch-size", "0"], "expected a positive integer, got 0"),
    (["--batch-size", "x"], "expected a positive integer, got 'x'"),
    (["--batch-size", ","], "comma list"),
    (["--threads", "0"], "expected a positive integer, got 0"),
    (["--eval-samples", "-1"], "expected a positive integer, got -1"),
    (["--min-time", "nan"], "expected a finite number >= 0"),
    (["--input-size", "5"], "input size 5: expected 8 to 1024 pixels"),
    (["--input-size", "224x160"], "square size"),
    (["--input-size", "224x224x224"], "square size"),
    (["--baseline-missing", "maybe"], "invalid choice: 'maybe'"),
    (["--dataset", "mnist"], "invalid choice: 'mnist'"),
    (["--ort-opt-level", "fast"], "invalid choice: 'fast'"),
    (["--ort-int8-format", "int4"], "invalid choice: 'int4'"),
]


@pytest.mark.parametrize("args,expect", BAD_VALUES, ids=_cli_ids(BAD_VALUES))
def test_option_parsers_reject_bad_values(bench_run, args, expect):
    line = usage_error(bench_run(*args))
    assert expect in line
    assert args[0] in line  # names the option


BAD_COMBINATIONS = [
    # Names the bad variant and where the list is.
    (["--variant", "nosuch"], ["unknown variant 'nosuch'", "python -m compress list"]),
    (["--variant", "nosuch-*"], ["no variant matches nosuch-*", "python -m compress list"]),
    (["--runtime", "tensorrt"], ["unknown runtime 'tensorrt'", "eager, torchscript, aotinductor, onnxruntime, openvino"]),
    (["--device", OTHER_ARCH], [f"--device {OTHER_ARCH}", f"this host is {HOST}"]),
    (["--update-baselines", "--no-gate"], ["contradict"]),
    (["--dataset", "imagefolder", "--data-root", "."], ["--dataset imagefolder needs --checkpoint"]),
]


@pytest.mark.parametrize("args,expect", BAD_COMBINATIONS, ids=_cli_ids(BAD_COMBINATIONS))
def test_bad_combinations_are_usage_errors(bench_run, args, expect):
    with_ckpt = "imagefolder" not in args
    line = usage_error(bench_run(*args, with_checkpoint=with_ckpt))
    for text in expect:
        assert text in line


def test_imagefolder_without_data_root_is_a_usage_error(bench_run):
    line = usage_error(bench_run("--dataset", "imagefolder"))
    assert "--dataset imagefolder needs --data-root" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA GPU")
def test_cuda_on_a_cpu_host_is_a_usage_error_not_a_green_run(bench_run):
    line = usage_error(bench_run("--device", "cuda"))
    assert "no CUDA GPU" in line and "--device cpu" in line


def test_missing_checkpoint_is_a_usage_error(bench_run):
    line = usage_error(bench_run("--checkpoint", "/nonexistent.pt", with_checkpoint=False))
    assert "checkpoint /nonexistent.pt not found" in line


def test_checkpoint_without_card_is_a_usage_error(bench_run, tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read: the card is missing first")
    line = usage_error(bench_run("--checkpoint", str(ckpt), with_checkpoint=False))
    assert "no model card" in line and "--card" in line


def test_missing_card_file_is_a_usage_error(bench_run, tmp_path):
    line = usage_error(bench_run("--card", str(tmp_path / "nope.json")))
    assert "model card" in line and "not found" in line


def test_corrupt_checkpoint_is_a_usage_error_at_collection(bench_run, tmp_path, checkpoint):
    # The card is fine (so start-up passes); the weights are read when collection opens the context.
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 64)
    bad.with_suffix(".json").write_text(checkpoint.with_suffix(".json").read_text())
    line = usage_error(bench_run("--checkpoint", str(bad), "--collect-only", "-q", with_checkpoint=False))
    assert str(bad) in line


def test_collect_only_still_validates_the_data_options(bench_run):
    # --eval-samples is checked against the real test split when collection opens the context.
    line = usage_error(bench_run("--eval-samples", "100000", "--collect-only", "-q"))
    assert "--eval-samples 100000 is out of range" in line


# ---------------------------------------------------------------- the matrix: ids, filters, skips
def test_ids_name_metric_variant_runtime_device_and_shape(bench_run):
    ids = collected_ids(bench_run("--collect-only", "-q"))
    short = {i.split("::", 1)[1] for i in ids}
    native = "32x32"  # the test checkpoint's card
    for expected in (f"test_size[fp32-eager-{HOST}]",
                     f"test_equivalence[int8-static-torchscript-{HOST}]",
                     f"test_accuracy[prune-l1-20-onnxruntime-{HOST}]",
                     f"test_latency[int8-static-onnxruntime-{HOST}-224x224]",
                     f"test_latency[fp32-eager-{HOST}-{native}]",
                     f"test_throughput[int8-dynamic-eager-{HOST}-224x224]"):
        assert expected in short
    parsed = [parse(i) for i in ids]
    # Shapes only on the timed metrics; every runtime and the host device in every id.
    assert all((shape is not None) == (test in ("test_latency", "test_throughput"))
               for test, _, _, _, shape in parsed)
    assert {dev for *_, dev, _ in parsed} == {HOST}
    assert {rt for _, _, rt, _, _ in parsed} == {"eager", "torchscript", "onnxruntime"}
    assert {shape for *_, shape in parsed if shape} == {native, "224x224"}
    # Each (variant, runtime) appears once per untimed metric: no duplicates across shapes.
    sizes = [(v, r) for t, v, r, _, _ in parsed if t == "test_size"]
    assert len(sizes) == len(set(sizes))


def test_input_sizes_become_latency_shapes_once_each(bench_run):
    ids = collected_ids(bench_run("--collect-only", "-q", "--variant", "fp32", "--runtime", "eager",
                              "--input-size", "native,64x64,64"))
    shapes = sorted(parse(i)[4] for i in ids if parse(i)[0] == "test_latency")
    assert shapes == ["32x32", "64x64"]  # 64x64 and 64 are the same shape: one item


def test_cuda_and_foreign_arch_variants_are_skipped_with_a_reason(bench_run):
    # Select by excluding: -k also matches parent names such as pytester's directory (named after
    # this test), so a positive keyword could select, and run, the whole matrix.
    r = bench_run("-rs", "--variant", f"fp16,{OTHER_INT8}", "-k", "not fp32")
    outcomes = r.parseoutcomes()
    assert outcomes.get("skipped", 0) > 0 and not any(outcomes.get(k) for k in ("passed", "failed", "errors"))
    reasons = [ln for ln in r.outlines if ln.startswith("SKIPPED")]
    fp16 = [ln for ln in reasons if "fp16" in ln]
    other = [ln for ln in reasons if OTHER_INT8 in ln]
    assert fp16 and all("CUDA" in ln for ln in fp16)
    assert other and all(OTHER_ARCH in ln and f"not {HOST}" in ln for ln in other)
    # Every skipped item is accounted for by one of the two reasons.
    counted = sum(int(re.search(r"SKIPPED \[(\d+)\]", ln).group(1)) for ln in reasons)
    assert counted == outcomes["skipped"]


def test_variant_glob_narrows_the_matrix_but_keeps_the_fp32_reference(bench_run):
    ids = collected_ids(bench_run("--collect-only", "-q", "--variant", "prune-*"))
    variants = {parse(i)[1] for i in ids}
    assert "fp32" in variants  # the in-run reference: every ratio and accuracy budget needs it
    assert variants - {"fp32"} and all(v.startswith("prune-") for v in variants - {"fp32"})
    assert not any(v.startswith(("int8-", "fp16")) for v in variants)


def test_runtime_eager_gives_only_eager_items(bench_run):
    ids = collected_ids(bench_run("--collect-only", "-q", "--runtime", "eager"))
    assert ids and {parse(i)[2] for i in ids} == {"eager"}


def test_filters_add_only_the_fp32_eager_reference(bench_run):
    # Asked for int8-static on onnxruntime: that case, plus the one in-run reference (fp32 on
    # eager) that every ratio and accuracy budget needs. Anything else (int8-static on eager,
    # fp32 on onnxruntime) would be built, measured and timed for nothing.
    ids = collected_ids(bench_run("--collect-only", "-q", "--runtime", "onnxruntime", "--variant", "int8-static"))
    cases = {(parse(i)[1], parse(i)[2]) for i in ids}
    assert cases == {("fp32", "eager"), ("int8-static", "onnxruntime")}


def test_missing_onnxruntime_skips_its_items_never_passes_them(bench_run, monkeypatch):
    # Simulate a machine without onnxruntime: `import onnxruntime` raises ImportError.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = bench_run("-rs", "--variant", "fp32,int8-static", "--runtime", "onnxruntime", "-k", "not eager")
    outcomes = r.parseoutcomes()
    assert outcomes.get("skipped", 0) > 0
    assert not any(outcomes.get(k) for k in ("passed", "failed", "errors")), outcomes
    reasons = [ln for ln in r.outlines if ln.startswith("SKIPPED")]
    assert reasons and all("onnxruntime is not installed" in ln for ln in reasons)


def test_a_plain_test_suite_is_left_alone(pytester, monkeypatch, bench_cache):
    # The plugin loads in every pytest run (entry point) but acts only on bench_case tests:
    # no context is opened, nothing is written.
    monkeypatch.setenv("RESNET18_BENCH_CACHE", str(bench_cache))
    pytester.makepyfile(test_plain="def test_one():\n    assert 1 + 1 == 2\n")
    r = pytester.runpytest("-p", "no:cacheprovider", "--report-dir", str(pytester.path / "reports"))
    r.assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists()
    assert not re.search(r"^=+ resnet18-bench =+$", r.stdout.str(), re.M)  # no summary section


# ---------------------------------------------------------------- a tiny real run, end to end
def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts}


def test_end_to_end_fp32_eager_run_writes_valid_results_and_a_report(bench_run, pytester):
    checkout_before = _tree(pytester.path)
    r = bench_run("--variant", "fp32", "--runtime", "eager", "--input-size", "native", "--batch-size", "1",
              "--min-samples", "5", "--min-time", "0", "--eval-samples", "50", "--baseline-missing", "skip",
              "--threads", "1", "-rs")
    text = "\n".join(r.outlines + r.errlines)
    outcomes = r.parseoutcomes()
    assert r.ret == pytest.ExitCode.OK, text[-4000:]
    assert outcomes.get("passed", 0) >= 3 and not outcomes.get("failed") and not outcomes.get("errors"), outcomes
    # No baseline yet and --baseline-missing skip: gated items say so instead of failing.
    assert all("update-baselines" in ln for ln in r.outlines if ln.startswith("SKIPPED"))

    reports = bench_run.out / "reports"
    results = load_results(reports / f"digits-{HOST}.json")  # validates against the schema
    assert results["device"] == HOST and results["dataset"]["eval_samples"] == 50
    assert results["machine_info"]["threads"] == 1 and "threads=1" in results["fingerprint"]
    # What latencies depend on is recorded: thread-pool spinning, the block schedule, ORT's format.
    opts = results["options"]
    assert opts["ort_int8_format"] == "qdq" and opts["latency_block"] == 20
    assert "gomp_spincount" in opts and isinstance(opts["torch_imported_before_bench"], bool)
    (item,) = results["items"]
    assert item["id"] == f"fp32-eager-{HOST}" and item["status"] == "ok"
    assert item["accuracy"]["n"] == 50 and item["size_bytes"] > 0
    assert item["equivalence"]["passed"] and item["equivalence"]["max_rel_error"] == 0
    (lat,) = item["latency"]
    assert lat["input_size"] == [32, 32] and len(lat["samples_ms"]) >= 5
    assert lat["ratio_to_reference"] == 1.0  # it is the reference
    assert [t["batch_size"] for t in item["throughput"]] == [1]
    # The unique per-run copy and the markdown report exist; the summary points at them.
    assert list((reports / "results").glob(f"digits-{HOST}-*.json"))
    assert list(reports.rglob("*.md")), sorted(p.name for p in reports.rglob("*"))
    assert "resnet18-bench" in r.stdout.str() and "results:" in r.stdout.str()
    # Nothing was recorded as a baseline (skip, not record), and nothing left in the repository.
    assert not list((bench_run.out / "baselines").rglob("*.json"))
    # A read-only checkout works: the run writes only to --report-dir and the cache (tests run
    # as root here, so chmod would not stop a write; the listing shows there was none).
    # pytest-benchmark makes an empty .benchmarks/ where it can and ignores the failure where it cannot.
    assert _tree(pytester.path) - {".benchmarks"} == checkout_before


@pytest.mark.parametrize("variant, runtime, own", [
    ("int8-static", "eager", True), ("int8-static", "torchscript", True),
    ("prune-struct-0.5+int8", "eager", True), ("int8-static", "onnxruntime", False),
    ("fp32", "eager", False), ("prune-struct-0.5", "torchscript", False),
])
def test_int8_torch_items_get_a_module_per_timed_shape(variant, runtime, own):
    # PyTorch int8 convs cache their kernel for the first input shape only (docs/PERFORMANCE.md).
    from bench.session import Case, own_module_per_shape

    assert own_module_per_shape(Case(variant, runtime, HOST)) is own


def test_an_item_that_crashes_errors_alone_and_the_rest_of_the_matrix_runs(bench_run, monkeypatch):
    def broken_export(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    r = bench_run("--variant", "fp32", "--runtime", "eager,onnxruntime", "--input-size", "native",
                  "--batch-size", "1", "--min-samples", "5", "--min-time", "0", "--eval-samples", "50",
                  "--baseline-missing", "skip", "--threads", "1")
    outcomes = r.parseoutcomes()
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes.get("passed", 0) >= 3 and outcomes.get("failed", 0) >= 3, outcomes
    results = load_results(bench_run.out / "reports" / f"digits-{HOST}.json")
    by_id = {i["id"]: i for i in results["items"]}
    assert by_id[f"fp32-eager-{HOST}"]["status"] == "ok"
    broken = by_id[f"fp32-onnxruntime-{HOST}"]
    assert broken["status"] == "error" and "RuntimeError: exporter exploded" in broken["reason"]
    report = next((bench_run.out / "reports").glob(f"digits-{HOST}.md")).read_text()
    assert "exporter exploded" in report
