"""Bad but legal input after the work is done, damaged baselines, full disks, read-only caches:
each ends in one line and a usage-error exit, with the measurements kept where they can be."""
from __future__ import annotations

import errno
import json

import pytest
from PIL import Image
from test_plugin import _restore_torch_globals, bench_cache, bench_run  # noqa: F401  (fixtures, pre-imports)

from bench.devices import host_arch
from bench.results import load_results
from compress.data import load_digits

pytest_plugins = ["pytester"]
HOST = host_arch()
QUICK = ("--variant", "fp32", "--runtime", "eager", "--input-size", "native", "--batch-size", "1",
         "--min-samples", "5", "--min-time", "0", "--eval-samples", "20", "--threads", "1")


def test_a_data_root_whose_name_has_a_space_measures_and_writes_results(bench_run, tmp_path):
    root = tmp_path / "my data, v2"
    for split, n in (("train", 3), ("test", 2)):
        for c in range(10):
            d = root / split / str(c)
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (20 * c, 10 * i, 99)).save(d / f"{i}.png")
    r = bench_run(*QUICK, "--dataset", "imagefolder", "--data-root", str(root), "--baseline-missing", "skip",
                  "-k", "size or accuracy")
    assert r.ret == pytest.ExitCode.OK, "\n".join(r.outlines[-30:])
    results = load_results(bench_run.out / "reports" / f"imagefolder-my-data-v2-{HOST}.json")
    assert results["dataset"]["id"].startswith("imagefolder-32px-")


@pytest.mark.parametrize("content, expected", [
    (b"", "baseline file is empty"),
    (b'{"dataset_id": "x", "entr', "baseline is not valid JSON"),
    (json.dumps({"schema_version": 99}).encode(), "schema"),
    (None, "non-finite number (NaN)"),
])
def test_a_damaged_baselines_file_stops_the_run_before_anything_is_built(bench_run, content, expected):
    ds_id = load_digits((32, 32)).id
    path = bench_run.out / "baselines" / ds_id / f"{HOST}.json"
    path.parent.mkdir(parents=True)
    if content is None:  # a real baseline with one latency replaced by NaN
        r0 = bench_run(*QUICK, "--update-baselines", "-k", "size or latency")
        assert r0.ret == pytest.ExitCode.OK
        text = path.read_text()
        content = text.replace('"p50_ms": ', '"p50_ms": NaN, "x": ', 1).encode()
    path.write_bytes(content)
    r = bench_run(*QUICK, "-k", "size")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in r.errlines if ln.startswith("ERROR")]
    assert len(errors) == 1 and str(path) in errors[0] and expected in errors[0], r.errlines


def test_a_full_disk_leaves_no_stale_results_under_the_stable_name(bench_run, monkeypatch):
    stable = bench_run.out / "reports" / f"digits-{HOST}.json"
    stable.parent.mkdir(parents=True)
    stable.write_text('{"an": "older run"}')
    import compress.fsutil

    real = compress.fsutil.atomic_write_json

    def full(path, obj):
        if "reports" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(compress.fsutil, "atomic_write_json", full)
    r = bench_run(*QUICK, "--baseline-missing", "skip", "-k", "size")
    text = "\n".join(r.outlines)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "error: results not written: cannot write" in text and "No space left on device" in text
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert not stable.exists()


def test_a_read_only_cache_that_holds_everything_is_used_as_it_is(bench_run, monkeypatch):
    assert bench_run(*QUICK, "--baseline-missing", "skip", "-k", "size").ret == pytest.ExitCode.OK
    import bench.runtimes.base
    import compress.build
    import compress.context

    for mod in (compress.build, bench.runtimes.base, compress.context):
        monkeypatch.setattr(mod, "writable", lambda path: False)
    again = bench_run(*QUICK, "--baseline-missing", "skip", "-k", "size", "--runtime", "eager,torchscript")
    text = "\n".join(again.outlines)
    # fp32/eager was cached: measured. fp32/torchscript was never built: one line says what to do.
    failed = [ln for ln in again.outlines if ln.startswith("FAILED")]
    assert len(failed) == 1 and "torchscript" in failed[0], failed
    assert "is read-only and does not hold a valid torchscript-" in text and "run once with a writable cache" in text
    assert "PermissionError" not in text and "filelock._error.Timeout" not in text
