"""Artifacts: complete manifests, rebuilt only when an input changed, tampering detected, and never
half-written. The session's artifacts (conftest.built) are only read here; tests that change an
artifact work on a copy."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ALL_VARIANTS, make_card

from compress import build as build_mod
from compress import trust
from compress.build import _build_key, build_variant, load_artifact
from compress.errors import UserError
from compress.fsutil import sha256_file
from compress.registry import get_recipe, lineage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATIC = {"int8-static", "int8-static-arm", "prune-struct-0.5+int8", "prune-stages-0.2-0.3-0.3-0.9+int8"}
STRUCT = {"prune-struct-0.5", "prune-struct-0.5+int8", "prune-stages-0.2-0.3-0.3-0.9", "prune-stages-0.2-0.3-0.3-0.9+int8"}


def copy_variants(built, names, root: Path, log=None, **changes):
    """A context on a fresh artifact root holding copies (mtimes kept, same relative places) of the
    named session artifacts."""
    ctx = dataclasses.replace(built.ctx, artifact_root=root, log=log if log is not None else (lambda s: None),
                              **changes)
    for name in names:
        src = built.arts[name].dir
        shutil.copytree(src, root / src.relative_to(built.ctx.artifact_root))
    return ctx


def write_manifest(vdir: Path, manifest: dict, signed: bool) -> None:
    """A manifest as an attacker writes it (``signed=False``: without this user's key) or as one who
    holds the key would (``signed=True``)."""
    if signed:
        build_mod._write_manifest(vdir, manifest)
    else:
        (vdir / "manifest.json").write_text(json.dumps(manifest))


def leftovers(root: Path) -> list[str]:
    """Anything a build leaves besides finished variant directories and their lock files."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".tmp-" in p.name or ".old-" in p.name)


# ---------------------------------------------------------------- layout and manifest
def test_artifacts_live_under_dataset_id_checkpoint_hash_and_build_key(built):
    ctx = built.ctx
    for name, art in built.arts.items():
        key = _build_key(lineage(name), ctx)
        assert art.dir == ctx.artifact_root / ctx.dataset.id / ctx.checkpoint_sha256[:12] / name / key[:12]
        assert art.manifest["key"] == key and ctx.variant_dir(name) == art.dir
    assert leftovers(ctx.artifact_root) == []


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_manifest_is_complete_and_matches_the_files_on_disk(name, built, checkpoint):
    art, ctx, recipe = built.arts[name], built.ctx, get_recipe(name)
    m = json.loads((art.dir / "manifest.json").read_text())
    mac = m.pop("mac")  # HMAC-SHA256 (hex) with this user's key, over everything else
    assert len(mac) == 64 and trust.verify_json(m, mac, build_mod.MANIFEST_PURPOSE)
    assert m == art.manifest  # what build_variant returned is what it wrote
    assert m["name"] == name and m["parent"] == recipe.parent
    assert m["recipe"]["kind"] == recipe.kind and m["recipe"]["params"] == recipe.params
    assert m["lineage"] == [r.name for r in lineage(name)]
    assert m["parent_checkpoint_sha256"] == sha256_file(checkpoint) == ctx.checkpoint_sha256
    assert m["dataset_id"] == ctx.dataset.id and m["card"] == ctx.card.to_json()
    assert {"torch", "torchvision", "python", "torch_pruning"} <= set(m["versions"])
    assert m["versions"]["torch"] == torch.__version__
    assert isinstance(m["parameters"], int) and 0 < m["nonzero_parameters"] <= m["parameters"]
    assert isinstance(m["macs"], int) and m["macs"] > 0
    assert isinstance(m["build_seconds"], float) and m["build_seconds"] >= 0
    # Sizes are of the weights file as stored.
    weights = art.dir / m["weights_file"]
    assert m["size_bytes"] == weights.stat().st_size
    assert 0 < m["size_gzip_bytes"] < m["size_bytes"]
    # Every file is named with its sha256, and nothing else is in the directory.
    assert m["weights_file"] in m["files"]
    assert {p.name for p in art.dir.iterdir()} == set(m["files"]) | {"manifest.json"}
    for fname, digest in m["files"].items():
        assert sha256_file(art.dir / fname) == digest, fname
    acc = m["accuracy"]["all"]
    assert acc["split"] == "test" and acc["n"] == len(ctx.dataset.test) == 200
    assert acc["top1"] == pytest.approx(acc["correct"] / acc["n"], abs=1e-6)
    if name in STATIC:
        assert m["calibration"]["split"] == "train" and m["calibration"]["n"] == 16
        assert len(m["calibration"]["sha256"]) == 64
    else:
        assert m["calibration"] is None


def test_gzip_size_is_the_gzip_of_the_weights_file(built):
    # Checked on the smallest artifact (recompressing 45 MB files costs seconds each).
    m = built.arts["prune-struct-0.5+int8"].manifest
    raw = (built.arts["prune-struct-0.5+int8"].dir / m["weights_file"]).read_bytes()
    assert m["size_gzip_bytes"] == len(gzip.compress(raw, compresslevel=6, mtime=0))


@pytest.mark.parametrize("name,files,fmt", [
    ("fp32", {"weights.safetensors"}, "safetensors-float32"),
    ("fp16", {"weights.safetensors"}, "safetensors-float16"),
    ("prune-struct-0.5", {"weights.safetensors", "pruning.json"}, "safetensors-float32"),
    ("int8-dynamic", {"weights.int8.pt"}, "torch-int8-dynamic"),
    ("int8-static", {"weights.int8.pt"}, "torch-int8-fx"),
    ("prune-struct-0.5+int8", {"weights.int8.pt", "pruning.json"}, "torch-int8-fx"),
])
def test_weights_are_stored_as_data_never_as_a_pickled_module(name, files, fmt, built):
    m = built.arts[name].manifest
    assert set(m["files"]) == files and m["weights_format"] == fmt


def test_only_float_models_are_kept_in_memory_for_children(built):
    assert set(built.float_models) == {"fp32", "prune-l1-20", "prune-global-30", "prune-struct-0.5", "fp16",
                                       "prune-stages-0.2-0.3-0.3-0.9"}


# ---------------------------------------------------------------- rebuild only when an input changed
def test_second_build_with_the_same_inputs_reuses_every_artifact(built, monkeypatch):
    def no_rebuild(*a, **k):
        raise AssertionError("an artifact was rebuilt although no input changed")

    monkeypatch.setattr(build_mod, "_save_weights", no_rebuild)
    log: list[str] = []
    ctx = dataclasses.replace(built.ctx, log=log.append)
    mtimes = {n: (a.dir / a.manifest["weights_file"]).stat().st_mtime_ns for n, a in built.arts.items()}
    for name in ALL_VARIANTS:
        art = build_variant(name, ctx)
        assert art.dir == built.arts[name].dir and art.manifest == built.arts[name].manifest
        assert (art.dir / art.manifest["weights_file"]).stat().st_mtime_ns == mtimes[name]
    assert log == []


def test_build_key_changes_exactly_for_the_variants_that_use_the_changed_input(built):
    ctx = built.ctx

    def changed(**kw) -> set[str]:
        other = dataclasses.replace(ctx, **kw)
        return {n for n in ALL_VARIANTS if _build_key(lineage(n), other) != _build_key(lineage(n), ctx)}

    assert changed() == set()
    assert changed(calib_samples=32) == STATIC
    assert changed(finetune_epochs=1.0) == STRUCT
    assert changed(eval_samples=50, log=print, train_device="cuda") == set()  # not inputs of the weights
    everything = set(ALL_VARIANTS)
    assert changed(checkpoint_sha256="0" * 64) == everything
    assert changed(dataset=dataclasses.replace(ctx.dataset, id="digits-other")) == everything
    # The card is an input too (fixed in build.py: it used to be left out, so an edited mean/std
    # silently reused artifacts calibrated and evaluated with the old normalization).
    assert changed(card=make_card(ctx.card.classes, mean=(0.5, 0.5, 0.5))) == everything


def test_changing_calib_samples_rebuilds_int8_static_but_not_fp32(built, tmp_path):
    log: list[str] = []
    ctx = copy_variants(built, ["fp32", "int8-static"], tmp_path, log=log.append, calib_samples=24)
    fp32_weights = ctx.variant_dir("fp32") / "weights.safetensors"
    fp32_before = (fp32_weights.stat().st_mtime_ns, (ctx.variant_dir("fp32") / "manifest.json").read_bytes())
    old_dir = tmp_path / built.arts["int8-static"].dir.relative_to(built.ctx.artifact_root)
    old_before = {p.name: p.read_bytes() for p in old_dir.iterdir()}

    art = build_variant("int8-static", ctx)
    # Keyed by the build key: the other calibration size's artifact is a sibling, untouched.
    assert art.dir != old_dir and art.dir.parent == old_dir.parent
    assert {p.name: p.read_bytes() for p in old_dir.iterdir()} == old_before
    assert art.manifest["calibration"]["n"] == 24
    assert art.manifest["calibration"]["sha256"] != built.arts["int8-static"].manifest["calibration"]["sha256"]
    assert art.manifest["key"] != built.arts["int8-static"].manifest["key"]
    assert load_artifact(art.dir).manifest == art.manifest
    assert [s for s in log if s.startswith("building")] == [f"building int8-static: {get_recipe('int8-static').summary}"]
    assert (fp32_weights.stat().st_mtime_ns, (ctx.variant_dir("fp32") / "manifest.json").read_bytes()) == fp32_before
    assert leftovers(tmp_path) == []


def test_child_built_from_its_parent_on_disk_is_identical_to_one_built_in_memory(built, tmp_path):
    # A later run finds prune-struct-0.5 in the cache and builds only the child: the parent is
    # replayed from pruning.json + weights, and the int8 result must be the same bytes.
    log: list[str] = []
    ctx = copy_variants(built, ["prune-struct-0.5"], tmp_path, log=log.append)
    art = build_variant("prune-struct-0.5+int8", ctx)
    assert [s.split(":")[0] for s in log if s.startswith("building")] == ["building prune-struct-0.5+int8"]
    assert art.manifest["files"] == built.arts["prune-struct-0.5+int8"].manifest["files"]


def test_new_eval_sample_count_adds_an_accuracy_without_rebuilding(built, tmp_path, monkeypatch):
    ctx = copy_variants(built, ["fp32"], tmp_path, eval_samples=50)
    monkeypatch.setattr(build_mod, "_save_weights", lambda *a: pytest.fail("rebuilt for a new eval size"))
    art = build_variant("fp32", ctx)
    assert set(art.manifest["accuracy"]) == {"all", "50"} and art.manifest["accuracy"]["50"]["n"] == 50
    assert load_artifact(art.dir).manifest["accuracy"]["50"] == art.manifest["accuracy"]["50"]


def test_tampered_weights_are_detected_and_rebuilt(built, tmp_path):
    ctx = copy_variants(built, ["fp32"], tmp_path)
    weights = ctx.variant_dir("fp32") / "weights.safetensors"
    original = weights.read_bytes()
    tampered = bytearray(original)
    tampered[-1] ^= 0xFF  # one bit pattern in the last weight: same size, same header
    weights.write_bytes(bytes(tampered))

    with pytest.raises(UserError, match="files do not match their manifest sha256; delete the directory and rebuild"):
        load_artifact(ctx.variant_dir("fp32"))
    art = build_variant("fp32", ctx)
    assert weights.read_bytes() == original  # rebuilt from the checkpoint, byte for byte
    assert load_artifact(art.dir).manifest["files"] == built.arts["fp32"].manifest["files"]


def test_tampered_pruning_history_is_detected(built, tmp_path):
    ctx = copy_variants(built, ["prune-struct-0.5"], tmp_path)
    history = ctx.variant_dir("prune-struct-0.5") / "pruning.json"
    history.write_text(history.read_text().replace("32", "33", 1))
    with pytest.raises(UserError, match="do not match their manifest sha256"):
        load_artifact(ctx.variant_dir("prune-struct-0.5"))


@pytest.mark.parametrize("damage", ["missing", "not-json", "other-format"])
def test_directory_without_a_valid_manifest_is_a_user_error(built, tmp_path, damage):
    vdir = copy_variants(built, ["int8-static"], tmp_path).variant_dir("int8-static")
    if damage == "missing":
        (vdir / "manifest.json").unlink()
    elif damage == "not-json":
        (vdir / "manifest.json").write_text("{")
    else:
        (vdir / "manifest.json").write_text(json.dumps({**built.arts["int8-static"].manifest, "build_format": 99}))
    with pytest.raises(UserError, match="holds no valid manifest: rebuild with `python -m compress build`"):
        load_artifact(vdir)


def test_manifest_cannot_point_outside_its_directory(built, tmp_path):
    vdir = copy_variants(built, ["int8-static"], tmp_path).variant_dir("int8-static")
    outside = tmp_path / "elsewhere.pt"
    shutil.copy(vdir / "weights.int8.pt", outside)
    m = dict(built.arts["int8-static"].manifest, weights_file="../../../../../elsewhere.pt",
             files={"../../../../../elsewhere.pt": sha256_file(outside)})
    write_manifest(vdir, m, signed=True)  # even a manifest signed with the key cannot point outside
    with pytest.raises(UserError, match="do not match their manifest"):
        load_artifact(vdir)


@pytest.mark.parametrize("signed", [False, True], ids=["forged-manifest", "stolen-key"])
def test_int8_weights_that_would_run_code_are_refused(built, card, tmp_path, signed):
    # Someone who can write the cache can also fix up the sha256 in the manifest, but cannot sign
    # it without this user's key: the manifest is refused before any weights are read. Even with
    # the key, loading goes through the weights-only unpickler and fails as a UserError.
    import os

    vdir = copy_variants(built, ["int8-static"], tmp_path).variant_dir("int8-static")
    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"conv1.weight": Exploit()}, vdir / "weights.int8.pt")
    m = dict(built.arts["int8-static"].manifest, files={"weights.int8.pt": sha256_file(vdir / "weights.int8.pt")})
    write_manifest(vdir, m, signed=signed)
    match = "weights.int8.pt cannot be loaded .* and rebuild" if signed else "not signed with your cache key"
    with pytest.raises(UserError, match=match):
        load_artifact(vdir).load_model(card)
    assert not marker.exists()


# ---------------------------------------------------------------- never half-written
def failing(exc):
    def fail(*a, **k):
        raise exc
    return fail


@pytest.mark.parametrize("where,exc", [
    ("_save_weights", RuntimeError("disk full")),  # weights half-written
    ("_save_weights", KeyboardInterrupt()),  # Ctrl-C: a BaseException, not an Exception
    ("_manifest", RuntimeError("cannot measure")),  # weights written, manifest not
    ("atomic_write_json", KeyboardInterrupt()),  # everything measured, manifest write interrupted
], ids=["save-error", "save-interrupt", "manifest-error", "manifest-write-interrupt"])
def test_failure_mid_build_leaves_no_variant_and_no_temp_dir(built, tmp_path, monkeypatch, where, exc):
    ctx = dataclasses.replace(built.ctx, artifact_root=tmp_path, log=lambda s: None)
    monkeypatch.setattr(build_mod, where, failing(exc))
    with pytest.raises(type(exc)):
        build_variant("fp32", ctx)
    assert not ctx.variant_dir("fp32").exists()
    assert leftovers(tmp_path) == []
    assert [p.name for p in ctx.variant_dir("fp32").parent.iterdir()] == [ctx.variant_dir("fp32").name + ".lock"]


def test_failed_rebuild_keeps_the_previous_artifact(built, tmp_path, monkeypatch):
    ctx = copy_variants(built, ["fp32"], tmp_path)
    monkeypatch.setattr(build_mod, "_manifest", failing(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        build_variant("fp32", ctx, force=True)
    assert load_artifact(ctx.variant_dir("fp32")).manifest == built.arts["fp32"].manifest
    assert leftovers(tmp_path) == []


def test_failed_child_leaves_its_parent_intact(built, tmp_path, monkeypatch):
    ctx = copy_variants(built, ["fp32"], tmp_path)
    real = build_mod._save_weights

    def fail_for_int8(model, recipe, tmp):
        if recipe.kind.quantized:
            raise RuntimeError("disk full")
        return real(model, recipe, tmp)

    monkeypatch.setattr(build_mod, "_save_weights", fail_for_int8)
    with pytest.raises(RuntimeError):
        build_variant("int8-dynamic", ctx)
    assert load_artifact(ctx.variant_dir("fp32")).manifest == built.arts["fp32"].manifest
    assert not ctx.variant_dir("int8-dynamic").exists() and leftovers(tmp_path) == []


def test_calibration_info_names_the_images(built):
    split = built.ctx.dataset.calibration_split(16)
    info = built.ctx.calibration_info(split)
    assert info == {"split": "train", "n": 16, "order": "stratified, seed 1",
                    "sha256": hashlib.sha256(split.images.numpy().tobytes()).hexdigest()}


def test_two_builders_at_once_build_once_and_agree(built, tmp_path):
    """A developer's run and a CI job on one machine share the artifact cache: the lock makes the
    second wait for the first and reuse its artifact instead of writing over it."""
    import threading

    logs: list[str] = []
    ctx = dataclasses.replace(built.ctx, artifact_root=tmp_path, log=logs.append)
    out: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, build_variant("int8-dynamic", ctx)))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(out) == {0, 1}
    assert out[0].manifest == out[1].manifest
    assert [ln for ln in logs if ln.startswith("building ")] == \
        ["building fp32: " + get_recipe("fp32").summary, "building int8-dynamic: " + get_recipe("int8-dynamic").summary]
    assert leftovers(tmp_path) == []
    load_artifact(ctx.variant_dir("int8-dynamic"))  # whole and verified


# ---------------------------------------------------------------- an attacker who can write the cache
def test_forged_manifest_is_never_read_and_the_artifact_is_rebuilt(built, tmp_path):
    """Whoever can write the cache could choose the measured accuracy (and, with the file hashes,
    which weights are loaded): a manifest not signed with this user's key is treated as absent."""
    log: list[str] = []
    ctx = copy_variants(built, ["fp32"], tmp_path, log=log.append)
    vdir = ctx.variant_dir("fp32")
    original = built.arts["fp32"].manifest
    forged = json.loads((vdir / "manifest.json").read_text())
    forged["accuracy"]["all"] = {**forged["accuracy"]["all"], "top1": 1.0, "correct": 200}  # keeps the old mac
    (vdir / "manifest.json").write_text(json.dumps(forged))

    with pytest.raises(UserError, match="manifest is not signed with your cache key") as err:
        load_artifact(vdir)
    assert "\n" not in str(err.value)
    art = build_variant("fp32", ctx)
    assert [line for line in log if line.startswith("warning:")] == [
        f"warning: {vdir / 'manifest.json'} is not signed with your cache key ({trust.key_file()}); "
        "rebuilding fp32 instead of trusting it"]
    assert any(line.startswith("building fp32") for line in log)
    assert art.manifest["accuracy"] == original["accuracy"] and art.manifest["files"] == original["files"]
    assert load_artifact(vdir).manifest == art.manifest


def test_weights_swapped_after_the_build_returned_are_refused_at_load(built, card, tmp_path):
    """build_variant returns under its lock, but the model is loaded later: the load re-checks
    the bytes it reads against the authenticated manifest (another run, or an attacker, may have
    put other weights there in between)."""
    ctx = copy_variants(built, ["fp32", "prune-l1-20"], tmp_path)
    art = build_variant("fp32", ctx)
    other = ctx.variant_dir("prune-l1-20") / "weights.safetensors"  # valid weights, same architecture
    shutil.copyfile(other, art.weights_path)
    with pytest.raises(UserError, match="files do not match their manifest sha256 .*weights.safetensors"):
        art.load_model(card)


def test_runs_with_different_build_inputs_never_share_a_directory(built, tmp_path):
    ctx16 = copy_variants(built, ["fp32", "int8-static"], tmp_path)
    ctx24 = dataclasses.replace(ctx16, calib_samples=24)
    ctx_ft = dataclasses.replace(ctx16, finetune_epochs=1.0)
    assert ctx16.variant_dir("int8-static") != ctx24.variant_dir("int8-static")
    assert ctx16.variant_dir("prune-struct-0.5") != ctx_ft.variant_dir("prune-struct-0.5")
    assert ctx16.variant_dir("fp32") == ctx24.variant_dir("fp32") == ctx_ft.variant_dir("fp32")
    a24 = build_variant("int8-static", ctx24)
    a16 = build_variant("int8-static", ctx16)  # still there, still its own
    assert a16.manifest == built.arts["int8-static"].manifest and a16.dir != a24.dir
    assert a24.manifest["calibration"]["n"] == 24 and a16.manifest["calibration"]["n"] == 16


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_group_writable_artifact_root_is_refused(built, tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o775)
    ctx = dataclasses.replace(built.ctx, artifact_root=root, log=lambda s: None)
    with pytest.raises(UserError) as err:
        build_variant("fp32", ctx)
    msg = str(err.value)
    assert "\n" not in msg and str(root) in msg and f"chmod go-w {root}" in msg and "--cache-dir" in msg
    assert list(root.iterdir()) == []
