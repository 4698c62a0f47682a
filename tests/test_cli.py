"""`python -m compress`: list, build with a summary table, and bad input as one `error:` line, exit 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_card, random_resnet18
from PIL import Image

from compress.__main__ import main
from compress.registry import get_recipe, list_variants

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["bird", "cat", "dog"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An imagefolder tree (3 classes, 4 train + 2 test images each), a 3-class checkpoint with its
    card beside it, and a cache directory."""
    import numpy as np
    import torch

    tmp = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for name in CLASSES:
            (tmp / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                    tmp / "data" / split / name / f"{i}.png")
    card = make_card(CLASSES)
    torch.save(random_resnet18(card).state_dict(), tmp / "model.pt")
    (tmp / "model.json").write_text(__import__("json").dumps(card.to_json()))
    return tmp


def args_for(source: Path, *extra: str) -> list[str]:
    return ["build", "--dataset", "imagefolder", "--data-root", str(source / "data"),
            "--checkpoint", str(source / "model.pt"), "--cache-dir", str(source / "cache"), *extra]


def run_main(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- list
def test_list_prints_every_variant_with_kind_and_summary(capsys):
    rc, out, err = run_main(capsys, ["list"])
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines] == list_variants("*")
    fp16 = next(ln for ln in lines if ln.startswith("fp16 "))
    assert "fp16" in fp16.split()[1] and "cuda" in fp16 and get_recipe("fp16").summary in fp16


def test_list_takes_glob_patterns(capsys):
    rc, out, _ = run_main(capsys, ["list", "int8-*", "fp32"])
    assert rc == 0 and {ln.split()[0] for ln in out.splitlines()} == {"fp32", "int8-dynamic", "int8-static",
                                                                      "int8-static-arm"}


# ---------------------------------------------------------------- build
def test_build_prints_the_summary_table(source, capsys):
    rc, out, err = run_main(capsys, args_for(source, "--variant", "fp32,int8-dynamic"))
    assert rc == 0, err
    head, *rows = [ln for ln in out.splitlines() if ln.strip() and not set(ln) <= set("- ")]
    for column in ("variant", "size MB", "gzip MB", "params", "non-zero params", "MMACs", "top-1", "correct"):
        assert column in head
    assert [r.split()[0] for r in rows[:2]] == ["fp32", "int8-dynamic"]
    fp32 = rows[0].split()
    assert fp32[1] == "44.76"  # size MB, 2 decimals: 11.18M float32 parameters (3 classes) + header
    assert fp32[3] == "11,178,051" and fp32[6].endswith("%") and fp32[7].endswith("/6")
    assert "dataset imagefolder-32px-" in out and "input 32x32" in out
    # Progress goes to stderr, the table to stdout.
    assert "building fp32" in err and "building int8-dynamic" in err
    assert (source / "cache" / "artifacts").is_dir() and (source / "cache" / "datasets").is_dir()


def test_second_build_reuses_the_artifacts(source, capsys):
    run_main(capsys, args_for(source, "--variant", "fp32"))
    rc, out, err = run_main(capsys, args_for(source, "--variant", "fp32"))
    assert rc == 0 and "fp32" in out and "building" not in err


def test_embedded_digits_model_is_trained_once_and_cached_with_its_card(tmp_path, monkeypatch):
    # The default source (digits, no --checkpoint). Training itself is replaced: what is tested is
    # what gets written (safetensors + card with its sha256) and that the second call reuses it.
    import json

    from compress import context
    from compress.cards import card_path_for, load_card
    from compress.fsutil import sha256_file
    from compress.models import load_model

    trained: list[int] = []

    def fake_train(model, split, card, cfg, **kw):
        trained.append(len(split))
        return {"seconds": 0.0, "steps": 0}

    monkeypatch.setattr(context, "train", fake_train)
    ckpt = context.embedded_checkpoint(tmp_path, log=lambda s: None)
    assert trained == [1437] and ckpt.parent == tmp_path / "models" and ckpt.suffix == ".safetensors"
    card = load_card(card_path_for(ckpt))
    assert (card.num_classes, card.input_size) == (10, (32, 32))
    assert json.loads(card_path_for(ckpt).read_text())["sha256"] == sha256_file(ckpt)
    load_model(ckpt, card)
    assert context.embedded_checkpoint(tmp_path, log=lambda s: None) == ckpt and trained == [1437]


# ---------------------------------------------------------------- bad input
def assert_one_error_line(rc, out, err, *needles):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_checkpoint(source, capsys):
    argv = args_for(source)
    argv[argv.index("--checkpoint") + 1] = str(source / "missing.pt")
    assert_one_error_line(*run_main(capsys, argv), "missing.pt not found", "--checkpoint PATH")


def test_checkpoint_without_card(source, capsys, tmp_path):
    (tmp_path / "lonely.pt").write_bytes((source / "model.pt").read_bytes())
    argv = args_for(source)
    argv[argv.index("--checkpoint") + 1] = str(tmp_path / "lonely.pt")
    assert_one_error_line(*run_main(capsys, argv), "no model card for", "lonely.json", "--card PATH")


def test_card_classes_that_do_not_match_the_folders(source, capsys, tmp_path):
    (tmp_path / "card.json").write_text(__import__("json").dumps(make_card(["bird", "cow", "dog"]).to_json()))
    assert_one_error_line(*run_main(capsys, args_for(source, "--card", str(tmp_path / "card.json"))),
                          "class 1 is 'cow' in the model card but 'cat' in the dataset")


def test_checkpoint_for_another_number_of_classes(source, capsys, checkpoint):
    # The session's 10-class digits checkpoint (card beside it) on the 3-class tree.
    argv = args_for(source)
    argv[argv.index("--checkpoint") + 1] = str(checkpoint)
    assert_one_error_line(*run_main(capsys, argv), "the model card has 10 classes but dataset imagefolder has 3",
                          "bird, cat, dog", "use a checkpoint trained on this data")


@pytest.mark.parametrize("variant,needle", [("int4-magic", "unknown variant 'int4-magic'"),
                                            ("prune-struct-1.5", "unknown variant 'prune-struct-1.5'"),
                                            ("prune-struct-0.0", "prune-struct ratio must be between 0 and 1")])
def test_bad_variant_name(source, capsys, variant, needle):
    assert_one_error_line(*run_main(capsys, args_for(source, "--variant", variant)), needle)


def test_eval_samples_larger_than_the_test_split_fails_before_building(source, capsys):
    rc, out, err = run_main(capsys, args_for(source, "--eval-samples", "7", "--variant", "fp16"))
    assert_one_error_line(rc, out, err, "--eval-samples 7 is out of range", "from 1 to 6")


def test_argument_errors_exit_2_with_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["build", "--eval-samples", "0"])
    assert e.value.code == 2 and "expected a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "--output", "x.safetensors"])
    assert e.value.code == 2 and "train needs --card PATH" in capsys.readouterr().err


def test_real_process_prints_one_error_line_and_no_traceback(tmp_path):
    # The entry point as users run it: exit status 2 and exactly one line on stderr.
    env = {**os.environ, "RESNET18_BENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "compress", "build", "--checkpoint", str(tmp_path / "none.pt"),
                           "--variant", "fp32"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, "none.pt not found")
    assert not (tmp_path / "cache").exists()  # nothing created before the input was checked
