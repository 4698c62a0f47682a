import json
import os

import numpy as np
import pytest
from gate_fixtures import (
    CHECKPOINT_SHA,
    DATASET_ID,
    OTHER_FINGERPRINT,
    make_item,
    make_results,
    skipped_item,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.baselines import (
    BASELINE_KIND,
    MAX_STORED_SAMPLES,
    BaselineStore,
    validate_baseline,
)
from compress.errors import UserError
from compress.fsutil import dumps_json


def later_run(p50_int8=2.0, **kw):
    items = [make_item("fp32", "eager", p50_ms=5.0, seed=11),
             make_item("int8-static", "onnxruntime", p50_ms=p50_int8, seed=12, n_correct=344)]
    return make_results(items, created_utc="2026-12-01T00:00:00Z", commit="def456", **kw)


@pytest.fixture
def store(tmp_path):
    return BaselineStore(tmp_path / "baselines")


def test_update_creates_a_pretty_sorted_versioned_file(store):
    results = make_results()
    changes = store.update(results)
    path = store.path_for_results(results)
    assert path == store.root / DATASET_ID / "x86.json"
    text = path.read_text()
    doc = json.loads(text)
    assert text == dumps_json(doc)  # indent 2, sorted keys, trailing newline
    assert doc["schema_version"] == 1 and doc["kind"] == BASELINE_KIND
    entry = doc["entries"][results["fingerprint"]]
    assert entry["checkpoint_sha256"] == CHECKPOINT_SHA
    assert entry["commit"] == "abc123" and entry["recorded_utc"] == results["created_utc"]
    item = entry["items"]["int8-static-onnxruntime-x86"]
    assert item["accuracy"] == {"top1": round(344 / 360, 6), "correct": 344, "n": 360}
    assert set(item["latency"]) == {"32x32/b1", "224x224/b1"}
    lat = item["latency"]["32x32/b1"]
    assert set(lat) == {"p50_ms", "samples_ms", "cv", "ratio_to_reference", "reference_id"}
    assert lat["reference_id"] == "fp32-eager-x86"
    assert item["throughput"] == {"224x224/b32": {"img_s": 800.0}}
    assert changes[0] == f"new fingerprint: {results['fingerprint']} in {path}"
    assert changes[1].startswith("new: fp32-eager-x86 (top1 96.11%, size 11.30 MB, p50 ")
    assert changes[2].startswith("new: int8-static-onnxruntime-x86 ")


def test_update_is_stable(store):
    results = make_results()
    store.update(results)
    path = store.path_for_results(results)
    first = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert store.update(results) == []
    assert path.read_bytes() == first
    assert path.stat().st_mtime_ns == mtime  # unchanged content is not rewritten


def test_update_reports_changes(store):
    store.update(make_results())
    changes = store.update(later_run(p50_int8=2.6))
    assert "int8-static-onnxruntime-x86 latency 32x32/b1 p50 1.99 -> 2.62 ms" in changes
    assert any(c.startswith("int8-static-onnxruntime-x86 throughput 224x224/b32 800.0 -> ")
               for c in changes)
    assert not any("accuracy" in c or "size" in c for c in changes)


def test_crash_during_write_leaves_old_file_byte_identical(store, monkeypatch):
    store.update(make_results())
    path = store.path_for_results(make_results())
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(UserError, match="cannot write baseline .* previous baseline is unchanged"):
        store.update(later_run(p50_int8=3.0))
    assert path.read_bytes() == before
    # No temp files left (the lock file stays: removing it would race another update's lock).
    assert sorted(p.name for p in path.parent.iterdir()) == ["x86.json", "x86.json.lock"]


def test_samples_are_sorted_and_capped(store):
    results = make_results([make_item("fp32", "eager", n_samples=1000, seed=3)])
    store.update(results)
    same, _ = store.lookup_with_notes(results)[:2]
    samples = same["items"]["fp32-eager-x86"]["latency"]["32x32/b1"]["samples_ms"]
    assert len(samples) == MAX_STORED_SAMPLES
    assert samples == sorted(samples)
    full = results["items"][0]["latency"][0]["samples_ms"]
    assert np.median(samples) == pytest.approx(np.median(full), rel=0.01)
    assert samples[0] == round(min(full), 4) and samples[-1] == round(max(full), 4)


def test_lookup_same_and_other_fingerprint(store):
    results = make_results()
    assert store.lookup_with_notes(results)[:2] == (None, None)
    store.update(results)
    same, other = store.lookup_with_notes(results)[:2]
    assert other is None
    assert same["fingerprint"] == results["fingerprint"]
    assert set(same["items"]) == {"fp32-eager-x86", "int8-static-onnxruntime-x86"}

    elsewhere = make_results(fingerprint=OTHER_FINGERPRINT)
    same, other = store.lookup_with_notes(elsewhere)[:2]
    assert same is None
    assert other["fingerprint"] == results["fingerprint"]


def test_lookup_prefers_the_newest_other_fingerprint(store):
    store.update(make_results(fingerprint="x86_64|Old CPU|threads=2",
                              created_utc="2026-01-01T00:00:00Z"))
    store.update(make_results(fingerprint="x86_64|New CPU|threads=2",
                              created_utc="2026-06-01T00:00:00Z"))
    _, other = store.lookup_with_notes(make_results(fingerprint=OTHER_FINGERPRINT))[:2]
    assert other["fingerprint"] == "x86_64|New CPU|threads=2"


def test_checkpoint_mismatch_is_not_comparable(store):
    store.update(make_results())
    retrained = make_results(checkpoint_sha="9a1c" + "f" * 60)
    same, other, notes = store.lookup_with_notes(retrained)
    assert (same, other) == (None, None)
    assert len(notes) == 1
    assert "recorded with checkpoint d5b700000000, this run used 9a1cffffffff" in notes[0]
    assert "not comparable" in notes[0]

    changes = store.update(retrained)
    assert changes[0].startswith("checkpoint changed d5b700000000 -> 9a1cffffffff")
    same, _ = store.lookup_with_notes(retrained)[:2]
    assert same["checkpoint_sha256"] == "9a1c" + "f" * 60


def test_baselines_for_other_content_of_the_same_source_are_named(store):
    """The usual cause of "no baseline at all": the data differ from what was recorded."""
    store.update(make_results())
    moved = make_results(dataset_id="digits-test0002")
    same, other, notes = store.lookup_with_notes(moved)
    assert (same, other) == (None, None)
    assert notes == [f"baselines exist for {DATASET_ID} but this run's data have id digits-test0002: "
                     "the image files differ from the ones those were recorded on"]
    assert store.lookup_with_notes(make_results(dataset_id="cifar-test0002"))[2] == []


def test_partial_update_keeps_other_items_and_shapes(store):
    store.update(make_results())
    only_small = make_results([make_item("fp32", "eager", seed=4, shapes=((32, 32, 1),))],
                              created_utc="2026-12-02T00:00:00Z")
    store.update(only_small)
    same, _ = store.lookup_with_notes(only_small)[:2]
    assert set(same["items"]) == {"fp32-eager-x86", "int8-static-onnxruntime-x86"}
    assert set(same["items"]["fp32-eager-x86"]["latency"]) == {"32x32/b1", "224x224/b1"}


def test_update_selected_items(store):
    results = make_results()
    changes = store.update(results, items=["int8-static-onnxruntime-x86"])
    same, _ = store.lookup_with_notes(results)[:2]
    assert set(same["items"]) == {"int8-static-onnxruntime-x86"}
    assert any(c.startswith("new: int8-static-onnxruntime-x86") for c in changes)
    with pytest.raises(UserError, match="cannot record 'nope': not in this run's results"):
        store.update(results, items=["nope"])


def test_skipped_items_are_not_recorded(store):
    results = make_results([make_item("fp32", "eager"), skipped_item("fp16", "eager")])
    store.update(results)
    same, _ = store.lookup_with_notes(results)[:2]
    assert set(same["items"]) == {"fp32-eager-x86"}
    with pytest.raises(UserError, match="cannot record 'fp16-eager-x86': its status is skipped"):
        store.update(results, items=["fp16-eager-x86"])


def test_nothing_to_record_writes_nothing(store):
    assert store.update(make_results([skipped_item("fp16", "eager")])) == []
    assert not store.root.exists()


@pytest.mark.parametrize("dataset_id", ["../escape", "a/b", "", ".hidden"])
def test_unsafe_names_are_refused(store, dataset_id):
    with pytest.raises(UserError, match="cannot be used as a file name"):
        store.update(make_results(dataset_id=dataset_id))


def _write_doc(store, doc):
    path = store.path_for(DATASET_ID, "x86")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def _valid_doc(store):
    store.update(make_results())
    return json.loads(store.path_for(DATASET_ID, "x86").read_text())


def test_loader_rejects_future_schema(store):
    doc = _valid_doc(store)
    doc["schema_version"] = 2
    path = _write_doc(store, doc)
    with pytest.raises(UserError) as err:
        store.lookup_with_notes(make_results())[:2]
    assert str(err.value) == (f"{path}: schema_version 2 is newer than this tool understands (1); "
                              "upgrade resnet18-bench or re-record the baseline")


def test_loader_rejects_corrupt_json(store):
    path = _write_doc(store, '{"schema_version": 1, "entries": {')
    with pytest.raises(UserError, match=f"{path}: baseline is not valid JSON"):
        store.lookup_with_notes(make_results())[:2]


def test_loader_names_the_bad_field(store):
    doc = _valid_doc(store)
    fp = next(iter(doc["entries"]))
    doc["entries"][fp]["items"]["fp32-eager-x86"]["latency"]["32x32/b1"]["p50_ms"] = "slow"
    path = _write_doc(store, doc)
    with pytest.raises(UserError) as err:
        store.lookup_with_notes(make_results())[:2]
    assert str(err.value).startswith(
        f"{path}: entries.{fp}.items.fp32-eager-x86.latency.32x32/b1.p50_ms must be a finite "
        "number, got 'slow'")


def test_loader_rejects_a_file_stored_for_another_device(store):
    doc = _valid_doc(store)
    doc["device"] = "cuda"
    _write_doc(store, doc)
    with pytest.raises(UserError, match="device is 'cuda' but the file is stored for 'x86'"):
        store.lookup_with_notes(make_results())[:2]


def test_update_refuses_to_overwrite_a_corrupt_baseline(store):
    path = _write_doc(store, "")
    with pytest.raises(UserError, match="baseline file is empty"):
        store.update(make_results())
    assert path.read_text() == ""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_arbitrary_baseline_documents_raise_only_user_error(value):
    try:
        validate_baseline(value, "b.json", DATASET_ID, "x86")
    except UserError as err:
        assert str(err).startswith("b.json: ")


@settings(max_examples=200, deadline=None)  # disk writes: timing varies
@given(st.sampled_from(["entries", "items", "latency", "accuracy", "schema_version", "kind"]),
       json_values)
def test_mutated_baseline_files_raise_only_user_error(tmp_path_factory, where, value):
    store = BaselineStore(tmp_path_factory.mktemp("b"))
    results = make_results([make_item("fp32", "eager", n_samples=30, shapes=((32, 32, 1),))])
    store.update(results)
    path = store.path_for_results(results)
    doc = json.loads(path.read_text())
    entry = doc["entries"][results["fingerprint"]]
    item = entry["items"]["fp32-eager-x86"]
    target = {"entries": (doc, "entries"), "items": (entry, "items"),
              "latency": (item, "latency"), "accuracy": (item, "accuracy"),
              "schema_version": (doc, "schema_version"), "kind": (doc, "kind")}[where]
    target[0][target[1]] = value
    path.write_text(json.dumps(doc))
    try:
        store.lookup_with_notes(results)[:2]
        store.update(results)
    except UserError as err:
        assert str(path) in str(err)


_KILLED_WRITER = """
import os, signal, sys, time
# A shell that starts jobs in the background (nohup, CI runners) makes them ignore SIGINT, and
# Python then installs no KeyboardInterrupt handler: restore what an interactive Ctrl-C gets.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
from gate_fixtures import make_item, make_results
from bench.baselines import BaselineStore

def stall(fd):  # the temporary file is written: wait here to be killed mid-update
    print("READY", flush=True)
    time.sleep(60)

os.fsync = stall
items = [make_item("fp32", "eager", p50_ms=9.0, seed=5)]
BaselineStore({root!r}).update(make_results(items, created_utc="2026-12-02T00:00:00Z", commit="killed"))
"""


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_update_killed_mid_write_leaves_baselines_as_they_were(store, tmp_path, sig):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    store.update(make_results())
    path = store.path_for_results(make_results())
    before = path.read_bytes()
    code = _KILLED_WRITER.format(tests=str(Path(__file__).parent), root=str(store.root))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parent.parent)
    try:
        assert proc.stdout.readline().strip() == "READY"
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert path.read_bytes() == before
    leftovers = sorted(p.name for p in path.parent.iterdir() if p.name not in ("x86.json", "x86.json.lock"))
    # SIGINT unwinds and removes its temporary; SIGKILL cannot, so the next update (which holds
    # the lock every writer of x86.json takes) sweeps it, however young it is.
    assert len(leftovers) == (1 if sig == "SIGKILL" else 0)
    assert store.update(later_run(p50_int8=2.6))  # the next run works
    assert sorted(p.name for p in path.parent.iterdir()) == ["x86.json", "x86.json.lock"]
    assert json.loads(path.read_text())["entries"]  # and the file is whole


def test_sweep_decides_by_age_not_by_process_id(tmp_path):
    """A pid says nothing about a writer in another container or on another host sharing the
    directory: a young temporary is kept whatever its pid, an old one removed whatever its pid."""
    import time

    from compress.fsutil import STALE_TEMP_SECONDS, sweep_stale_temps

    now = time.time()
    young_dead_pid = tmp_path / ".x86.json.999999999.abc123.tmp"  # another host's live writer
    old_live_pid = tmp_path / f".arm.json.{os.getpid()}.def456.tmp"  # pid reused by a live process
    other = tmp_path / ".notes.tmp"  # not one of ours: no pid in the name
    for p in (young_dead_pid, old_live_pid, other):
        p.write_text("partial")
    for p in (old_live_pid, other):
        os.utime(p, (now - STALE_TEMP_SECONDS - 60, now - STALE_TEMP_SECONDS - 60))
    assert sweep_stale_temps(tmp_path, now=now) == [old_live_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([young_dead_pid.name, other.name])
    # Holding x86.json's lock, its own temporaries are stale at any age; other files' are not.
    young_other = tmp_path / ".arm.json.1.abc.tmp"
    young_other.write_text("partial")
    assert sweep_stale_temps(tmp_path, locked="x86.json", now=now) == [young_dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([young_other.name, other.name])


_CONCURRENT_WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from gate_fixtures import make_item, make_results
from bench.baselines import BaselineStore

store = BaselineStore({root!r})
runs = [make_results([make_item("fp32", "eager", p50_ms=5.0, seed=1),
                      make_item("v{tag}%d" % i, "eager", p50_ms=3.0, seed=i)],
                     created_utc="2026-12-02T00:00:00Z", commit="{tag}") for i in range({n})]
print("READY", flush=True)
while time.time() < {start}:  # both processes start updating at the same moment
    pass
for i, results in enumerate(runs):
    store.update(results, items=["v{tag}%d-eager-x86" % i])
print("DONE", flush=True)
"""


def test_two_processes_updating_at_once_keep_each_others_entries(store):
    """Two --update-baselines runs at once (two CI jobs on one runner, two terminals): without a
    lock both read the same file, and the second write drops the first one's entries."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    n = 25
    start = time.time() + 6  # after both have imported numpy/scipy and built their results
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_WRITER.format(
        tests=str(Path(__file__).parent), root=str(store.root), tag=tag, n=n, start=start)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
        for tag in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert all(o[0].split() == ["READY", "DONE"] for o in outs)
    doc = store.load(DATASET_ID, "x86")
    (entry,) = doc["entries"].values()
    expected = {f"v{tag}{i}-eager-x86" for tag in "ab" for i in range(n)}
    assert expected - set(entry["items"]) == set(), "entries lost to a concurrent update"
    assert set(entry["items"]) == expected


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_baselines_still_gate_and_updates_fail_cleanly(store):
    results = make_results()
    store.update(results)
    path = store.path_for_results(results)
    (path.parent / "x86.json.lock").unlink()  # a fresh checkout has no lock file
    path.parent.chmod(0o555)
    try:
        assert store.load(DATASET_ID, "x86") is not None  # reading needs no lock
        assert store.lookup_with_notes(results)[0] is not None
        with pytest.raises(UserError, match="cannot write baseline"):
            store.update(later_run())
    finally:
        path.parent.chmod(0o755)
