import copy
import json
import math

import pytest
from gate_fixtures import make_item, make_results, skipped_item
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.results import SCHEMA_VERSION, load_results, validate_results
from bench.stats import pack_bits
from compress.errors import UserError
from compress.fsutil import atomic_write_json


def write_json(path, obj):
    # allow_nan: the point of some tests is a file that contains NaN.
    path.write_text(json.dumps(obj, allow_nan=True))
    return path


def test_fixture_is_valid_and_round_trips(tmp_path):
    results = make_results([make_item("fp32", "eager", seed=1),
                            skipped_item("fp16", "eager", reason="fp16 is for CUDA")])
    assert validate_results(results, "mem") is results
    path = atomic_write_json(tmp_path / "r.json", results)
    assert load_results(path) == json.loads(json.dumps(results))


def test_schema_version_constant():
    assert SCHEMA_VERSION == 1


def test_empty_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("")
    with pytest.raises(UserError, match=r"x\.json: file is empty"):
        load_results(path)


def test_truncated_json(tmp_path):
    text = json.dumps(make_results())
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(UserError, match=r"cut\.json: not valid JSON .*truncated"):
        load_results(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.json: no such results file"):
        load_results(tmp_path / "nope.json")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        load_results(tmp_path)


def test_future_schema_version(tmp_path):
    obj = make_results()
    obj["schema_version"] = 7
    path = write_json(tmp_path / "x.json", obj)
    with pytest.raises(UserError) as err:
        load_results(path)
    assert str(err.value) == (
        f"{path}: schema_version 7 is newer than this tool understands (1); "
        "upgrade resnet18-bench or re-run the benchmark")


@pytest.mark.parametrize("version", [0, -1, "1", True, 1.0, None])
def test_bad_schema_version(version):
    obj = make_results()
    obj["schema_version"] = version
    with pytest.raises(UserError, match=r"^r\.json: schema_version "):
        validate_results(obj, "r.json")


def test_missing_schema_version():
    obj = make_results()
    del obj["schema_version"]
    with pytest.raises(UserError, match=r"^r\.json: missing field schema_version"):
        validate_results(obj, "r.json")


def test_wrong_kind():
    obj = make_results()
    obj["kind"] = "resnet-bench-baseline"
    with pytest.raises(UserError, match="kind is 'resnet-bench-baseline'"):
        validate_results(obj, "r.json")


def test_top_level_must_be_object():
    with pytest.raises(UserError, match="top level must be a JSON object, got a list of 0"):
        validate_results([], "r.json")


def _set(obj, path, value):
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _del(obj, path):
    node = obj
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


@pytest.mark.parametrize("path,field", [
    (("items",), "items"),
    (("fingerprint",), "fingerprint"),
    (("dataset", "id"), "dataset.id"),
    (("checkpoint", "sha256"), "checkpoint.sha256"),
    (("items", 0, "accuracy", "top1"), "items[0].accuracy.top1"),
    (("items", 0, "latency", 1, "samples_ms"), "items[0].latency[1].samples_ms"),
])
def test_missing_field_names_the_field(path, field):
    obj = make_results()
    _del(obj, path)
    with pytest.raises(UserError) as err:
        validate_results(obj, "reports/x.json")
    assert str(err.value).startswith(f"reports/x.json: missing field {field};")


@pytest.mark.parametrize("path,value,field,expected", [
    (("items", 0, "latency", 0, "p50_ms"), "fast", "items[0].latency[0].p50_ms", "a finite number"),
    (("items", 0, "latency", 0, "cv"), True, "items[0].latency[0].cv", "a finite number"),
    (("items", 0, "size_bytes"), 1.5, "items[0].size_bytes", "an integer"),
    (("items", 0, "size_bytes"), -1, "items[0].size_bytes", ">= 0"),
    (("items", 0, "accuracy", "top1"), 1.5, "items[0].accuracy.top1", "<= 1"),
    (("items", 1, "status"), "fine", "items[1].status", "one of 'ok', 'skipped', 'error'"),
    (("items",), {}, "items", "a list"),
    (("machine_info",), None, "machine_info", "an object, got null"),
    (("dataset", "input_size"), [32], "dataset.input_size", "at least 2"),
    (("commit_info", "dirty"), "no", "commit_info.dirty", "true or false"),
    (("versions", "torch"), 2, "versions.torch", "a string"),
    (("items", 0, "latency", 0, "samples_ms"), [], "items[0].latency[0].samples_ms",
     "at least 1 entry"),
])
def test_wrong_type_names_the_field(path, value, field, expected):
    obj = make_results()
    _set(obj, path, value)
    with pytest.raises(UserError) as err:
        validate_results(obj, "r.json")
    message = str(err.value)
    assert message.startswith(f"r.json: {field} must ")
    assert expected in message


@pytest.mark.parametrize("value,shown", [(math.nan, "NaN"), (math.inf, "Infinity"),
                                         (-math.inf, "-Infinity")])
def test_non_finite_numbers_are_rejected_from_file(tmp_path, value, shown):
    obj = make_results()
    obj["items"][1]["latency"][0]["samples_ms"][3] = value
    path = write_json(tmp_path / "nan.json", obj)
    with pytest.raises(UserError) as err:
        load_results(path)
    assert f"nan.json: items[1].latency[0].samples_ms[3] must be a finite number, got {shown}" \
        in str(err.value)


def test_created_utc_must_be_a_time():
    obj = make_results()
    obj["created_utc"] = "yesterday"
    with pytest.raises(UserError, match="created_utc must be an ISO 8601 time"):
        validate_results(obj, "r.json")


def test_duplicate_item_ids():
    obj = make_results()
    obj["items"].append(copy.deepcopy(obj["items"][0]))
    with pytest.raises(UserError, match=r"items\[2\]\.id 'fp32-eager-x86' appears twice"):
        validate_results(obj, "r.json")


def test_partially_measured_item_is_valid_and_gate_skips_what_is_missing():
    # pytest -k / -x measure part of an item; the document must still load and gate.
    obj = make_results()
    obj["items"][1].update(latency=None, accuracy=None, size_bytes=None)
    assert validate_results(obj, "r.json")["items"][1]["accuracy"] is None


def test_skipped_item_needs_a_reason():
    obj = make_results([skipped_item("fp16", "eager", reason="")])
    with pytest.raises(UserError, match=r"items\[0\]\.reason must say why"):
        validate_results(obj, "r.json")


def test_correct_cannot_exceed_n():
    obj = make_results()
    obj["items"][0]["accuracy"].update(correct=400, correct_b64=None)
    with pytest.raises(UserError, match=r"accuracy\.correct \(400\) exceeds accuracy\.n \(360\)"):
        validate_results(obj, "r.json")


def test_mask_must_match_counts():
    obj = make_results()
    obj["items"][0]["accuracy"]["correct_b64"] = pack_bits([True] * 360)
    with pytest.raises(UserError, match="correct_b64 marks 360 images correct but "
                                        "accuracy.correct is 346"):
        validate_results(obj, "r.json")
    obj["items"][0]["accuracy"]["correct_b64"] = pack_bits([True] * 10)
    with pytest.raises(UserError, match=r"items\[0\]\.accuracy\.correct_b64 holds 2 bytes"):
        validate_results(obj, "r.json")


def test_duplicate_latency_shapes():
    obj = make_results()
    obj["items"][0]["latency"].append(copy.deepcopy(obj["items"][0]["latency"][0]))
    with pytest.raises(UserError, match="latency has shape 32x32/b1 twice"):
        validate_results(obj, "r.json")


def test_unknown_keys_are_allowed():
    obj = make_results()
    obj["new_top_level_field"] = {"anything": [1, 2]}
    obj["items"][0]["latency"][0]["p95_ms"] = 1.0
    validate_results(obj, "r.json")


def test_gate_block_is_checked():
    obj = make_results()
    obj["gate"] = {"baseline_file": None, "fingerprint_match": None,
                   "findings": [{"id": "x", "check": "size", "shape": None, "verdict": "bad",
                                 "message": "m"}]}
    with pytest.raises(UserError, match=r"gate\.findings\[0\]\.verdict must be one of"):
        validate_results(obj, "r.json")


# --- property tests: whatever the input, only UserError escapes --------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_arbitrary_json_raises_only_user_error(value):
    try:
        validate_results(value, "fuzz.json")
    except UserError as err:
        assert str(err).startswith("fuzz.json: ")


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node[:3]):
            yield from _paths(child, (*prefix, i))


VALID = make_results()
VALID_PATHS = [p for p in _paths(VALID) if p]


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300, deadline=None)
@given(st.sampled_from(VALID_PATHS), st.booleans(), json_values)
def test_mutated_results_raise_only_user_error(path, delete, value):
    # Start from a valid document so the fuzzing reaches the deep fields, not just the top.
    obj = copy.deepcopy(VALID)
    if delete:
        _del(obj, path)
    else:
        _set(obj, path, value)
    try:
        validate_results(obj, "fuzz.json")
    except UserError as err:
        assert str(err).startswith("fuzz.json: ")
        assert "\n" not in str(err)


@settings(deadline=None)  # disk writes: timing varies
@given(st.binary(max_size=200))
def test_arbitrary_bytes_on_disk_raise_only_user_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "bytes.json"
    path.write_bytes(data)
    try:
        load_results(path)
    except UserError as err:
        assert str(path) in str(err)
