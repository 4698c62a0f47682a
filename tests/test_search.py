"""python -m bench search: candidates, the Pareto front, budgets, resume from its cache, bad input,
and one real search on the digits model (a harness run in a subprocess) replayed by
``python -m compress build --recipe-file``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gate_fixtures import make_item, make_results

from bench import search
from bench.__main__ import main as bench_main
from bench.results import load_results
from compress.errors import UserError
from compress.recipefile import load_recipe_file
from compress.registry import get_recipe

REPO = Path(__file__).resolve().parents[1]
SHAPE = ((224, 224, 1),)


@pytest.fixture(autouse=True)
def _registry_untouched():
    """Looking up a family member registers it; the registry must not carry them into other tests."""
    from compress.registry import isolated

    with isolated():
        yield


# --- candidates ------------------------------------------------------------------------------------------

def test_default_grid_is_four_candidates_most_pruned_first():
    combos = search.parse_grid(search.DEFAULT_GRID)
    assert combos == [(0.5, 0.5, 0.5, 0.65), (0.3, 0.5, 0.5, 0.65), (0.5, 0.3, 0.5, 0.65), (0.3, 0.3, 0.5, 0.65)]


@pytest.mark.parametrize("spec, words", [
    ("0.3/0.3/0.3", "4 '/'-separated lists"),
    ("0.3/0.3/x/0.3", "layer3 has a value that is not a number"),
    ("0.3/0.3/1.0/0.3", "layer3 needs ratios from 0 to below 1"),
    ("0.3/0.3//0.3", "layer3 needs ratios"),
    ("0/0/0/0", "every combination removes nothing"),
])
def test_bad_grids_are_one_clear_error(spec, words):
    with pytest.raises(UserError, match=words):
        search.parse_grid(spec)


def test_variant_names_resolve_to_the_stage_family():
    name = search.variant_name((0.3, 0.3, 0.3, 0.65))
    assert name == "prune-stages-0.3-0.3-0.3-0.65"
    r = get_recipe(name)
    assert r.params == {"round_to": 8, "ratio": 0.3, "stage_ratios": {"layer4": 0.65}}
    # The former edge target keeps its name on request, with exactly this member's pruning, and
    # leaves the default matrix to the frontier allocation the search chose.
    assert r.params == get_recipe("prune-struct-stagewise").params
    assert get_recipe("prune-struct-stagewise+int8").parent == "prune-struct-stagewise"
    assert search.variant_name((0.0, 0.25, 0.5, 0.125)) == "prune-stages-0.0-0.25-0.5-0.125"
    assert get_recipe("prune-stages-0.0-0.25-0.5-0.5+int8").parent == "prune-stages-0.0-0.25-0.5-0.5"


# --- rows, front, budget ---------------------------------------------------------------------------------

def _results(variant: str, fp32_ms=20.0, ms=4.0, int8_ms=1.5, correct=(340, 335, 333), size=(2_400_000, 700_000)) -> dict:
    items = [make_item("fp32", "eager", p50_ms=40.0, seed=1, shapes=SHAPE, n_correct=341),
             make_item("fp32", "onnxruntime", p50_ms=fp32_ms, seed=2, shapes=SHAPE, n_correct=correct[0]),
             make_item(variant, "onnxruntime", p50_ms=ms, seed=3, shapes=SHAPE, n_correct=correct[1], size_bytes=size[0]),
             make_item(f"{variant}+int8", "onnxruntime", p50_ms=int8_ms, seed=4, shapes=SHAPE, n_correct=correct[2],
                       size_bytes=size[1])]
    return make_results(items)


def test_rows_compare_each_variant_with_fp32_on_the_same_runtime_in_the_same_run():
    rows = search.rows_from_results(_results("prune-stages-0.5-0.5-0.5-0.65"), "onnxruntime")
    by = {r.variant: r for r in rows}
    assert set(by) == {"prune-stages-0.5-0.5-0.5-0.65", "prune-stages-0.5-0.5-0.5-0.65+int8"}
    r = by["prune-stages-0.5-0.5-0.5-0.65+int8"]
    assert r.drop_pp == pytest.approx(100 * (340 - 333) / 360, abs=1e-3)
    assert r.speedup == pytest.approx(20.0 / 1.5, rel=0.05) and r.size_bytes == 700_000
    with pytest.raises(UserError, match="fp32 on openvino was not measured"):
        search.rows_from_results(_results("v"), "openvino")


def _row(v, top1, ms, size):
    drop = round(100 * (0.84 - top1), 4)
    return search.Row(v, "onnxruntime", top1, drop, ms, 20 / ms, size)


def test_pareto_keeps_only_rows_nothing_beats_on_all_three():
    a, b, c, d = (_row("a", 0.83, 2.0, 2_000_000), _row("b", 0.82, 1.5, 1_500_000),
                  _row("c", 0.81, 2.5, 2_500_000), _row("d", 0.84, 5.0, 3_000_000))
    assert search.pareto([a, b, c, d]) == [b, a, d]  # c: slower, bigger and less accurate than a


def test_choose_takes_the_fastest_within_every_budget():
    rows = [_row("fast", 0.80, 1.5, 1_000_000), _row("ok", 0.835, 2.0, 2_000_000), _row("big", 0.838, 1.8, 9_000_000)]
    chosen, closest = search.choose(rows, search.Budget(1.0, size_mb=3.0))
    assert chosen.variant == "ok" and closest == []
    chosen, _ = search.choose(rows, search.Budget(1.0))
    assert chosen.variant == "big"
    assert search.Budget(1.0, latency_ms=1.9, size_mb=3.0).misses(rows[1]) == ["p50 2.00 ms > 1.9"]


def test_an_impossible_budget_returns_the_closest_misses_not_an_empty_success():
    rows = [_row("a", 0.80, 1.5, 1_000_000), _row("b", 0.83, 2.0, 2_000_000), _row("c", 0.70, 1.0, 900_000),
            _row("d", 0.60, 0.9, 800_000)]
    chosen, closest = search.choose(rows, search.Budget(0.5))
    assert chosen is None and [r.variant for r in closest] == ["b", "a", "c"]


# --- running: resume and cache trust ----------------------------------------------------------------------

class FakeHarness:
    """Writes a valid results file where a real harness run would, and counts the runs."""

    def __init__(self, fail: bool = False):
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, args: list[str], log_path: Path) -> int:
        self.calls.append(args)
        log_path.write_text("fake harness\n")
        if self.fail:
            return 1
        variant = args[args.index("--variant") + 1].split(",")[1]
        out = Path(args[args.index("--report-dir") + 1]) / "digits-x86.json"
        pruned = sum(float(x) for x in variant.removeprefix("prune-stages-").split("-"))
        epochs = float(args[args.index("--finetune-epochs") + 1]) if "--finetune-epochs" in args else 0.5
        # 0-2 images: the most pruned candidate loses most; a fine-tune of 1 epoch or more wins 2 back
        lost = max(0, round(4 * (pruned - 1.7)) - (2 if epochs >= 1 else 0))
        doc = _results(variant, ms=8.0 - 3 * pruned, int8_ms=3.0 - pruned, correct=(341, 341 - lost, 340 - lost))
        out.write_text(json.dumps(doc))
        return 0


SPEC = search.SearchSpec(("--device", "cpu", "--dataset", "digits"), "onnxruntime", 224, 200, 0.5)


def test_a_search_measures_each_candidate_once_and_resumes_from_its_cache(tmp_path):
    fake, lines = FakeHarness(), []
    cands = search.parse_grid(search.DEFAULT_GRID)
    rows, fp32_top1 = search.run_search(SPEC, cands, tmp_path, search.Budget(1.0), log=lines.append, runner=fake)
    assert len(fake.calls) == 4 and len(rows) == 8 and fp32_top1 == 341 / 360
    args = fake.calls[0]
    assert args[args.index("--validation-samples") + 1] == "200" and "--no-gate" in args
    assert args[args.index("--variant") + 1] == "fp32,prune-stages-0.5-0.5-0.5-0.65,prune-stages-0.5-0.5-0.5-0.65+int8"
    assert any(ln.startswith("candidate 1/4 (elapsed") and ln.endswith("prune-stages-0.5-0.5-0.5-0.65: measuring")
               for ln in lines)
    assert any("best within budget so far" in ln for ln in lines)

    lines.clear()
    again, _ = search.run_search(SPEC, cands, tmp_path, search.Budget(1.0), log=lines.append, runner=fake)
    assert len(fake.calls) == 4 and again == rows  # nothing measured twice
    assert sum("reused from" in ln for ln in lines) == 4


def test_a_damaged_or_foreign_cache_entry_is_measured_again_never_read(tmp_path):
    fake = FakeHarness()
    cands = [(0.5, 0.5, 0.5, 0.65)]
    search.run_search(SPEC, cands, tmp_path, search.Budget(1.0), log=lambda s: None, runner=fake)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (result,) = folder.glob("*.json")
    result.write_text('{"schema_version": 1, "kind": "resnet-bench-results", "items": "oops"}')
    search.run_search(SPEC, cands, tmp_path, search.Budget(1.0), log=lambda s: None, runner=fake)
    assert len(fake.calls) == 2 and load_results(next(folder.glob("*.json")))  # re-measured, valid again
    other = search.SearchSpec(SPEC.harness_args, "onnxruntime", 224, 300, 0.5)  # another search: another key
    search.run_search(other, cands, tmp_path, search.Budget(1.0), log=lambda s: None, runner=fake)
    assert len(fake.calls) == 3


def test_fine_tune_lengths_are_a_dimension_each_cached_on_its_own_and_the_chosen_one_is_written(tmp_path):
    fake, lines = FakeHarness(), []
    cands = [(0.5, 0.5, 0.5, 0.65)]
    rows, _ = search.run_search(SPEC, cands, tmp_path, search.Budget(0.3), log=lines.append, runner=fake,
                                finetune_lengths=[0.5, 2.0])
    assert len(fake.calls) == 2 and len({p.name for p in tmp_path.iterdir()}) == 2
    assert [c[c.index("--finetune-epochs") + 1] for c in fake.calls] == ["0.5", "2.0"]
    assert any(ln.endswith("prune-stages-0.5-0.5-0.5-0.65 at 2 fine-tune epochs: measuring") for ln in lines)
    assert {r.finetune_epochs for r in rows} == {0.5, 2.0}
    chosen, _ = search.choose(rows, search.Budget(0.3))
    assert chosen.finetune_epochs == 2.0  # only the longer fine-tune is within 0.3 pp
    doc = search.recipe_document(chosen, SPEC, search.Budget(0.3), rows, search.pareto(rows), 341 / 360)
    assert doc["finetune_epochs"] == 2.0
    search.run_search(SPEC, cands, tmp_path, search.Budget(0.3), log=lines.append, runner=fake, finetune_lengths=[2.0])
    assert len(fake.calls) == 2  # the 2-epoch run is reused by a search that tries only that length


def test_a_failed_candidate_run_names_its_log(tmp_path):
    with pytest.raises(UserError, match="prune-stages-0.5-0.5-0.5-0.65: the harness run failed .* its log: .*harness.log"):
        search.run_search(SPEC, [(0.5, 0.5, 0.5, 0.65)], tmp_path, search.Budget(1.0), log=lambda s: None,
                          runner=FakeHarness(fail=True))


# --- the command --------------------------------------------------------------------------------------------

def test_the_command_writes_the_fastest_within_budget_and_exits_1_with_the_closest_when_none(
        tmp_path, monkeypatch, capsys, checkpoint):
    monkeypatch.setattr(search, "run_harness", FakeHarness())
    base = ["search", "--checkpoint", str(checkpoint), "--work-dir", str(tmp_path / "w"), "--validation-samples", "200"]
    assert bench_main([*base, "-o", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "chosen: " in out and "python -m compress build --recipe-file" in out
    doc = load_recipe_file(tmp_path / "r.json")
    assert doc["chosen_on"]["split"] == "validation" and doc["chosen_on"]["validation_samples"] == 200
    assert doc["measured"]["drop_pp"] <= 1.0 and len(doc["candidates"]) == 8
    assert doc["chosen_on"]["fp32_top1"] == pytest.approx(341 / 360)

    assert bench_main([*base, "--budget-pp", "0.1", "--max-size-mb", "0.5", "-o", str(tmp_path / "none.json")]) == 1
    out = capsys.readouterr().out
    assert "no candidate meets the budget; the closest:" in out and "nothing written" in out
    assert not (tmp_path / "none.json").exists()


@pytest.mark.parametrize("extra, words", [
    (["--grid", "0.3/0.3"], "4 '/'-separated lists"),
    (["--runtime", "tensorflow"], "unknown runtime 'tensorflow'"),
    (["--validation-samples", "999999"], "--validation-samples 999999 is out of range"),
])
def test_bad_input_is_one_line_before_any_candidate_runs(extra, words, tmp_path, monkeypatch, capsys, checkpoint):
    fake = FakeHarness()
    monkeypatch.setattr(search, "run_harness", fake)
    rc = bench_main(["search", "--checkpoint", str(checkpoint), "--work-dir", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err and fake.calls == []


@pytest.mark.parametrize("value, words", [("2,-1", "expected a finite number >= 0, got -1"),
                                          ("2,,6", "expected numbers >= 0 separated by commas")])
def test_a_bad_fine_tune_list_is_a_usage_error(value, words, tmp_path, monkeypatch, capsys, checkpoint):
    fake = FakeHarness()
    monkeypatch.setattr(search, "run_harness", fake)
    with pytest.raises(SystemExit) as e:
        bench_main(["search", "--checkpoint", str(checkpoint), "--work-dir", str(tmp_path), "--finetune-epochs", value])
    assert e.value.code == 2 and words in capsys.readouterr().err and fake.calls == []


@pytest.mark.parametrize("text, words", [
    ("{", "not a readable recipe file"),
    ('{"kind": "other"}', "not a recipe file"),
    ('{"kind": "resnet18-bench-recipe", "version": 9}', "version 9"),
    ('{"kind": "resnet18-bench-recipe", "version": 1, "variant": "prune-magic"}', "unknown variant 'prune-magic'"),
    ('{"kind": "resnet18-bench-recipe", "version": 1, "variant": "fp32", "finetune_epochs": -1}', "finetune_epochs"),
])
def test_bad_recipe_files_are_one_clear_error(text, words, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(UserError, match=words):
        load_recipe_file(path)
    with pytest.raises(UserError, match="no such recipe file"):
        load_recipe_file(tmp_path / "missing.json")


# --- one real search ------------------------------------------------------------------------------------------

def test_a_real_search_on_the_digits_model_and_its_replay(tmp_path, checkpoint):
    """One candidate, fine-tuned briefly, through the real harness; then the recipe file is built
    on the full train split (other data set id: validation artifacts and these are apart)."""
    cache = tmp_path / "cache"
    env_args = ["--checkpoint", str(checkpoint), "--cache-dir", str(cache)]
    run = subprocess.run(
        [sys.executable, "-m", "bench", "search", *env_args, "--grid", "0.5/0.5/0.5/0.65", "--input-size", "32",
         "--finetune-epochs", "0.5", "--validation-samples", "180", "--budget-pp", "100", "--threads", "1",
         "--work-dir", str(tmp_path / "w"), "-o", str(tmp_path / "chosen.json")],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "candidate 1/1 (elapsed 0s) prune-stages-0.5-0.5-0.5-0.65: measuring" in run.stdout
    doc = load_recipe_file(tmp_path / "chosen.json")
    assert doc["variant"].startswith("prune-stages-0.5-0.5-0.5-0.65") and doc["finetune_epochs"] == 0.5
    (result,) = (tmp_path / "w").glob("prune-stages-0.5*/*.json")
    results = load_results(result)
    assert results["dataset"]["id"].endswith("-val180") and results["dataset"]["eval_samples"] == 180
    assert {it["variant"] for it in results["items"]} >= {"fp32", "prune-stages-0.5-0.5-0.5-0.65",
                                                          "prune-stages-0.5-0.5-0.5-0.65+int8"}
    replay = subprocess.run([sys.executable, "-m", "compress", "build", "--recipe-file", str(tmp_path / "chosen.json"),
                             *env_args], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert replay.returncode == 0, (replay.stdout + replay.stderr)[-4000:]
    assert doc["variant"] in replay.stdout and "fine-tuning prune-stages-0.5-0.5-0.5-0.65 for 0.5 epochs" in replay.stderr


# --- the validation view ---------------------------------------------------------------------------------------

def test_the_validation_view_holds_out_a_stratified_part_of_train_and_never_touches_test():
    import numpy as np
    import torch

    from compress.data import Dataset, Split, validation_view

    def split(n: int, offset: int) -> Split:  # each image encodes its own index: overlaps are visible
        idx = torch.arange(offset, offset + n)
        images = torch.stack([idx // 256, idx % 256, idx % 7], 1).to(torch.uint8)[:, :, None, None].expand(-1, -1, 2, 2)
        return Split(images.contiguous(), idx % 10)

    def ids(s: Split) -> set[int]:
        return {int(x[0, 0, 0]) * 256 + int(x[1, 0, 0]) for x in s.images}

    ds = Dataset("toy", "toy-1", tuple(str(i) for i in range(10)), split(1000, 0), split(300, 1000), "made here")
    view = validation_view(ds, 200)
    assert len(view.test) == 200 and len(view.train) == 800
    assert view.id == "toy-1-val200" and "held out of train" in view.source
    held, rest = ids(view.test), ids(view.train)
    assert held | rest == ids(ds.train) and not held & rest and not (held | rest) & ids(ds.test)
    counts = np.bincount(view.test.labels.numpy(), minlength=10)
    assert counts.min() == counts.max() == 20  # stratified
    assert ids(validation_view(ds, 200).test) == held  # fixed, not drawn anew per call
    with pytest.raises(UserError, match="--validation-samples 1000 is out of range"):
        validation_view(ds, 1000)


def test_a_checkpoint_that_has_seen_the_validation_images_is_named():
    text = search.seen_warning(0.9332, {"top1_data_cifar10_jpeg_test": 0.8398, "measured_with": "..."})
    assert text.startswith("warning: fp32 scores 93.32% on the validation images and 83.98% on the test split")
    assert "9.3 pp above" in text and "conservative" in text
    assert search.seen_warning(0.85, {"top1_test": 0.8398}) is None  # within 2 pp: no claim
    assert search.seen_warning(0.95, {}) is None and search.seen_warning(None, {"top1": 0.8}) is None


def test_the_default_matrix_has_the_frontier_allocation_and_not_the_test_split_choice():
    from compress.registry import list_variants

    names = list_variants()
    assert {"prune-stages-0.2-0.3-0.3-0.9", "prune-stages-0.2-0.3-0.3-0.9+int8"} <= set(names)
    assert not any("stagewise" in n for n in names)
    assert "validation" in get_recipe("prune-stages-0.2-0.3-0.3-0.9+int8").summary
