"""Sharding the (variant, runtime) matrix across machines, and joining the shards again."""
from __future__ import annotations

import copy
import itertools

import pytest
from gate_fixtures import make_item, make_results

from bench.baselines import BaselineStore
from bench.config import GateConfig
from bench.gate import run_gate
from bench.options import shard_spec
from bench.results import REFERENCE, in_shard, shard_of
from bench.shards import combine_shards
from compress.errors import UserError

VARIANTS = ["fp32", "prune-l1-20", "prune-global-30", "int8-dynamic", "int8-static", "prune-struct-0.5",
            "prune-struct-0.5+int8", "prune-stages-0.2-0.3-0.3-0.9", "prune-stages-0.2-0.3-0.3-0.9+int8"]
RUNTIMES = ["eager", "torchscript", "onnxruntime"]
PAIRS = list(itertools.product(VARIANTS, RUNTIMES))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_every_pair_is_in_exactly_one_shard_and_the_reference_in_all(n):
    for pair in PAIRS:
        owners = [k for k in range(1, n + 1) if in_shard(pair, (k, n))]
        assert owners == (list(range(1, n + 1)) if pair == REFERENCE else [shard_of(*pair, n)])


def test_shard_assignment_depends_only_on_the_names():
    # Pure function of (variant, runtime): another machine, another matrix, the same answer.
    assert [shard_of(v, r, 3) for v, r in PAIRS] == [shard_of(v, r, 3) for v, r in reversed(PAIRS)][::-1]
    assert shard_of("int8-static", "onnxruntime", 4) == shard_of("int8-static", "onnxruntime", 4)


def test_three_shards_share_the_work():
    sizes = [sum(in_shard(p, (k, 3)) for p in PAIRS if p != REFERENCE) for k in (1, 2, 3)]
    assert sum(sizes) == len(PAIRS) - 1 and min(sizes) >= 4  # no shard idles on a 26-pair matrix


def test_an_unsharded_run_owns_everything():
    assert all(in_shard(p, None) for p in PAIRS)


@pytest.mark.parametrize("text, expected", [("1/3", (1, 3)), ("3/3", (3, 3)), ("1/1", (1, 1))])
def test_shard_spec_parses(text, expected):
    assert shard_spec(text) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "3", "1/2/3", ""])
def test_shard_spec_rejects(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        shard_spec(text)


def sharded_run(n: int, pairs=PAIRS) -> list[dict]:
    """The results files n machines would write for one run."""
    out = []
    for k in range(1, n + 1):
        items = [make_item(v, r, seed=i) for i, (v, r) in enumerate(pairs) if in_shard((v, r), (k, n))]
        res = make_results(items)
        res["options"]["shard"] = [k, n]
        out.append(res)
    return out


def test_combining_shards_gives_the_whole_matrix_once():
    shards = sharded_run(3)
    combined = combine_shards(list(reversed(shards)))
    ids = [it["id"] for it in combined["items"]]
    assert sorted(ids) == sorted(f"{v}-{r}-x86" for v, r in PAIRS) and len(ids) == len(set(ids))
    # The reference kept is shard 1's.
    ref = next(it for it in combined["items"] if it["id"] == "fp32-eager-x86")
    assert ref == next(it for it in shards[0]["items"] if it["id"] == "fp32-eager-x86")
    assert combined["options"]["shard"] is None and combined["options"]["combined_from_shards"] == 3


@pytest.mark.parametrize("damage, message", [
    (lambda s: s[:2], "shard 3 of 3 missing"),
    (lambda s: s + [copy.deepcopy(s[1])], "shard 2 given twice"),
    (lambda s: [s[0], s[1], {**s[2], "fingerprint": "arm|Neoverse-V2|threads=4"}], "another machine fingerprint"),
    (lambda s: [s[0], s[1], {**s[2], "dataset": {**s[2]["dataset"], "id": "digits-32px-00000000"}}],
     "another dataset"),
    (lambda s: [s[0], s[1], {**s[2], "options": {**s[2]["options"], "shard": [3, 4]}}], "different shard counts"),
    (lambda s: [s[0], s[1], {**s[2], "options": {**s[2]["options"], "shard": None}}], "is not a shard"),
])
def test_combining_refuses_what_is_not_one_run(damage, message):
    with pytest.raises(UserError, match=message):
        combine_shards(damage(sharded_run(3)))


def test_a_shard_run_does_not_report_other_shards_items_as_missing(tmp_path):
    store = BaselineStore(tmp_path)
    full = make_results([make_item(v, r, seed=i) for i, (v, r) in enumerate(PAIRS)])
    store.update(full)
    for shard in sharded_run(3):
        found = run_gate(shard, store, GateConfig())["findings"]
        assert not [f for f in found if f["verdict"] == "missing"], [f["id"] for f in found if f["verdict"] == "missing"]
    # An unsharded run that lacks an item still reports it.
    partial = make_results([make_item(v, r, seed=i) for i, (v, r) in enumerate(PAIRS[:-1])])
    missing = [f["id"] for f in run_gate(partial, store, GateConfig())["findings"] if f["verdict"] == "missing"]
    assert missing == [f"{PAIRS[-1][0]}-{PAIRS[-1][1]}-x86"]
