"""Data sources: deterministic stratified splits, decoded-tensor cache outside a read-only data root,
content-addressed dataset ids, and one-line errors for every bad tree."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from compress import images as images_mod
from compress.data import Dataset, Split, load_dataset, load_digits, load_imagefolder, stratified_order
from compress.errors import UserError

SIZE = (32, 32)
CLASSES = ("bird", "cat", "dog")


def counts(labels: torch.Tensor, k: int) -> list[int]:
    return torch.bincount(labels, minlength=k).tolist()


# ---------------------------------------------------------------- digits (embedded, offline)
def test_digits_has_1797_images_in_10_classes_split_80_20(digits):
    assert len(digits.train) + len(digits.test) == 1797 and len(digits.test) == 360
    assert digits.classes == tuple(str(i) for i in range(10))
    for split in (digits.train, digits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
        assert split.labels.dtype == torch.int64
        assert torch.equal(split.images[:, 0], split.images[:, 2])  # grayscale replicated to RGB
    # Stratified: every class keeps its 80/20 share (to within one image).
    total = np.array(counts(digits.train.labels, 10)) + np.array(counts(digits.test.labels, 10))
    assert np.all(np.abs(np.array(counts(digits.test.labels, 10)) - 0.2 * total) <= 1)


def test_digits_split_and_id_are_the_same_on_every_load(digits):
    again = load_digits(SIZE)
    assert again.id == digits.id
    assert torch.equal(again.train.images, digits.train.images) and torch.equal(again.test.labels, digits.test.labels)


def test_digits_id_names_the_input_size():
    small = load_digits((16, 16))
    assert small.id.startswith("digits-16px-") and small.test.images.shape[-2:] == (16, 16)


def test_load_dataset_digits_needs_no_data_root(digits):
    assert load_dataset("digits", SIZE).id == digits.id


# ---------------------------------------------------------------- eval and calibration subsets
def test_eval_split_is_all_of_test_by_default(digits):
    assert digits.eval_split() is digits.test


def test_eval_split_n_is_stratified_and_deterministic(digits):
    a, b = digits.eval_split(50), digits.eval_split(50)
    assert len(a) == 50 and counts(a.labels, 10) == [5] * 10
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # A smaller n is a prefix of a larger one: --eval-samples 20 measures a subset of 50's images.
    assert torch.equal(digits.eval_split(20).images, a.images[:20])


@pytest.mark.parametrize("n", [0, -1, 361])
def test_eval_split_out_of_range_is_a_user_error(digits, n):
    with pytest.raises(UserError, match=rf"--eval-samples {n} is out of range.*pass a number from 1 to 360"):
        digits.eval_split(n)


def split_of(values: tuple[int, int], n: int = 40, k: int = 4) -> Split:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(values[0], values[1], (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return Split(images, torch.arange(n) % k)


def test_calibration_comes_from_train_never_test():
    # Train pixels are all < 128 and test pixels all >= 128: any test image in the sample would show.
    ds = Dataset("synthetic", "synthetic-1", ("a", "b", "c", "d"), split_of((0, 128)), split_of((128, 256)), "test")
    calib = ds.calibration_split(12)
    assert len(calib) == 12 and int(calib.images.max()) < 128
    assert counts(calib.labels, 4) == [3] * 4
    assert torch.equal(ds.calibration_split(12).images, calib.images)


@pytest.mark.parametrize("n", [0, 41])
def test_calibration_size_out_of_range_is_a_user_error(n):
    ds = Dataset("synthetic", "synthetic-1", ("a", "b", "c", "d"), split_of((0, 128)), split_of((128, 256)), "test")
    with pytest.raises(UserError, match=f"calibration needs 1 to 40 train images, got {n}"):
        ds.calibration_split(n)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.integers(0, 3))
def test_stratified_order_deals_classes_round_robin(labels, seed):
    y = torch.tensor(labels)
    order = stratified_order(y, seed)
    assert sorted(order.tolist()) == list(range(len(labels)))  # a permutation
    present = sorted(set(labels))
    m = min(labels.count(c) for c in present)
    # Every prefix of m rounds holds exactly m images of every class.
    for r in range(1, m + 1):
        assert counts(y[order[:r * len(present)]], 5) == [r if c in present else 0 for c in range(5)]


# ---------------------------------------------------------------- image folders
def write_image(path: Path, colour: tuple[int, int, int], size=(40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def colour(class_index: int, i: int) -> tuple[int, int, int]:
    return (40 + 80 * class_index, 200 - 60 * class_index, 10 * i)


@pytest.fixture
def tree(tmp_path) -> Path:
    """data/{train,test}/{bird,cat,dog}/: 4 train and 2 test 40x40 images per class, PNG and JPEG,
    each a solid colour that encodes its class."""
    root = tmp_path / "data"
    for split, n in (("train", 4), ("test", 2)):
        for c, name in enumerate(CLASSES):
            for i in range(n):
                write_image(root / split / name / f"img{i}.{'png' if i % 2 == 0 else 'jpg'}", colour(c, i))
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("RESNET18_BENCH_CACHE", str(path))
    return path


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_imagefolder_decodes_resizes_and_labels_by_sorted_class_folder(tree, cache):
    ds = load_imagefolder(tree, SIZE)
    assert ds.classes == CLASSES and (len(ds.train), len(ds.test)) == (12, 6)
    assert ds.train.images.dtype == torch.uint8 and ds.train.images.shape[1:] == (3, 32, 32)
    assert ds.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # Files in sorted order (img0 PNG, img1 JPEG, ...): each PNG's pixels are its class colour, exactly.
    for idx, label in ((0, 0), (4, 1), (10, 2)):
        i = idx % 4
        assert ds.train.images[idx, :, 16, 16].tolist() == list(colour(label, i))
    assert ds.id.startswith("imagefolder-32px-") and ds.source == str(tree.resolve())


def test_imagefolder_caches_decoded_subsets_in_the_cache_dir(tree, cache, monkeypatch):
    first = load_imagefolder(tree, SIZE)
    evaluated = first.eval_split().images[:]
    (decoded,) = (cache / "decoded").glob("*.u8")
    assert decoded.stat().st_size == evaluated.numel()

    def no_decoding(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(images_mod, "decode_image", no_decoding)
    second = load_imagefolder(tree, SIZE)
    assert second.id == first.id and torch.equal(second.eval_split().images[:], evaluated)
    assert torch.equal(second.test.labels, first.test.labels)


def test_subsets_over_the_cache_budget_are_streamed_not_cached(tree, cache):
    ds = load_imagefolder(tree, SIZE, cache_max_gb=0)
    streamed = ds.eval_split().images
    assert not streamed.cached and not (cache / "decoded").exists()
    small = load_imagefolder(tree, SIZE, cache_max_gb=3 * 32 * 32 * 6 / 1e9)  # room for the 6 eval images only
    assert small.eval_split().images.cached and not small.calibration_split(12).images.cached
    assert torch.equal(small.eval_split().images[:], streamed[:])


def test_damaged_cache_is_rebuilt_not_trusted(tree, cache):
    first = load_imagefolder(tree, SIZE).eval_split().images[:]
    (cached,) = (cache / "decoded").glob("*.u8")
    cached.write_bytes(b"\x00" * 100)
    again = load_imagefolder(tree, SIZE).eval_split().images[:]
    assert torch.equal(again, first)
    assert cached.stat().st_size == first.numel()  # rewritten


@pytest.fixture
def read_only(tree):
    modes = {p: p.stat().st_mode for p in [tree, *tree.rglob("*")]}
    for p in modes:
        p.chmod(stat.S_IMODE(modes[p]) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield tree
    for p, mode in modes.items():
        p.chmod(stat.S_IMODE(mode))


def test_read_only_data_root_works_and_is_never_written(read_only, cache):
    before = listing(read_only)
    ds = load_imagefolder(read_only, SIZE)
    assert len(ds.train) == 12 and len(ds.eval_split().images[:]) == 6
    assert listing(read_only) == before  # no cache, lock or temp file inside the data root
    assert list((cache / "datasets").glob("imagefolder-*.content.json")) and list((cache / "decoded").glob("*.u8"))


def test_cache_dir_inside_the_data_root_is_refused(tree):
    with pytest.raises(UserError, match="is inside the data root .* pass --cache-dir elsewhere"):
        load_imagefolder(tree, SIZE, cache_dir=tree / "cache")
    assert not (tree / "cache").exists()


def test_unwritable_cache_only_costs_time(tree, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    assert len(load_imagefolder(tree, SIZE, cache_dir=blocker).train) == 12


def test_dataset_id_changes_with_the_content_of_the_data_root(tree, cache):
    base = load_imagefolder(tree, SIZE).id
    assert load_imagefolder(tree, SIZE).id == base
    assert load_imagefolder(tree, (24, 24)).id != base
    write_image(tree / "train" / "cat" / "img9.png", (1, 2, 3))
    added = load_imagefolder(tree, SIZE)
    assert added.id != base and len(added.train) == 13
    write_image(tree / "train" / "cat" / "img9.png", (9, 9, 9), size=(41, 41))  # same name, new content
    assert load_imagefolder(tree, SIZE).id not in (base, added.id)


def test_non_image_files_are_ignored(tree, cache):
    (tree / "train" / "cat" / "README.txt").write_text("notes")
    (tree / "train" / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    assert len(load_imagefolder(tree, SIZE).train) == 12


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_data_root(tmp_path):
    msg = one_line_error(load_imagefolder, tmp_path / "nowhere", SIZE)
    assert "does not exist" in msg and "train/<class>/ and test/<class>/" in msg


def test_empty_data_root(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "has no 'train/' folder" in one_line_error(load_imagefolder, tmp_path / "empty", SIZE)


def test_split_without_class_folders(tree):
    for p in sorted((tree / "test").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    assert "holds no class folders" in one_line_error(load_imagefolder, tree, SIZE)


def test_class_folder_without_images(tree):
    for p in (tree / "train" / "dog").iterdir():
        p.unlink()
    assert "class folder" in one_line_error(load_imagefolder, tree, SIZE)


def test_class_folder_missing_from_test_is_named(tree):
    for p in (tree / "test" / "dog").iterdir():
        p.unlink()
    (tree / "test" / "dog").rmdir()
    msg = one_line_error(load_imagefolder, tree, SIZE)
    assert "different class folders (differ in: dog)" in msg and "needs a folder in both" in msg


@pytest.mark.parametrize("damage", ["truncated", "not-an-image"])
def test_unreadable_image_fails_naming_its_path(tree, cache, damage):
    bad = tree / "test" / "cat" / "img0.png"
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) // 2] if damage == "truncated" else b"this is text, not a PNG")
    ds = load_imagefolder(tree, SIZE)  # lists and hashes the files; decodes nothing yet
    msg = one_line_error(ds.eval_split)  # the evaluation subset is decoded (and cached) before any build
    assert f"cannot decode image {bad.resolve()}" in msg and "remove or replace the file" in msg
    assert not list((cache / "decoded").iterdir())  # nothing half-written from a failed decode


# ---------------------------------------------------------------- load_dataset dispatch and CIFAR-10
def test_unknown_dataset_is_a_user_error():
    msg = one_line_error(load_dataset, "mnist", SIZE, "/data")
    assert "unknown dataset 'mnist'" in msg and "digits, imagefolder, cifar10" in msg


@pytest.mark.parametrize("name", ["imagefolder", "cifar10"])
def test_datasets_with_files_need_a_data_root(name):
    assert f"--dataset {name} needs --data-root PATH" in one_line_error(load_dataset, name, SIZE)


def test_cifar10_without_files_or_download_is_a_one_line_user_error(tmp_path):
    before = listing(tmp_path)
    msg = one_line_error(load_dataset, "cifar10", SIZE, tmp_path, download=False)
    assert msg.startswith(f"CIFAR-10 not found under {tmp_path}") and "pass --download" in msg
    assert listing(tmp_path) == before  # no download attempted, nothing created


def test_dataset_id_names_content_not_location(tree, cache, tmp_path):
    """A copy elsewhere (a CI checkout, another machine, fresh mtimes) must find the same
    baselines; the cache, keyed by location and mtimes, is rebuilt for it."""
    base = load_imagefolder(tree, SIZE)
    copy = tmp_path / "elsewhere" / "my data, copied"  # another folder name, with a space and a comma
    shutil.copytree(tree, copy)  # new mtimes
    for p in copy.rglob("*"):
        os.utime(p, ns=(1, 1))
    moved = load_imagefolder(copy, SIZE)
    assert moved.id == base.id and torch.equal(moved.test.images[:], base.test.images[:])
    assert len(list((cache / "datasets").iterdir())) == 2  # one cache entry per location
    assert load_imagefolder(tree, (32, 48)).id != base.id  # the full input size, not just "32px"
