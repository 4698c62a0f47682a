"""Data sources with deterministic splits; nothing is ever written inside a data root.

Every source yields uint8 RGB images (N, 3, H, W) already at the model card's input size, and
int64 labels. Calibration and fine-tuning data come from ``train``; evaluation from ``test``
(``val`` in ImageNet's layout). The small built-in sources are tensors in memory; an image folder
is read lazily (compress/images.py), so memory does not grow with the folder's size, and the
subsets a run reads repeatedly are decoded once into the cache within ``--cache-max-gb``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .fsutil import atomic_write_json
from .images import CacheBudget, FolderImages, content_digest
from .transforms import EvalTransform

DATASETS = ("digits", "imagefolder", "cifar10")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
# Bump when decoding or resizing changes, so stale caches are not reused.
CACHE_FORMAT = 3
EVAL_SPLITS = ("test", "val")  # the first that exists is the evaluation split, unless one is named
DEFAULT_CACHE_MAX_GB = 1.0  # decoded images kept per run; they count in its resident memory


@dataclass(frozen=True)
class Split:
    images: torch.Tensor | FolderImages  # uint8 (N, 3, H, W), in memory or decoded when read
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def take(self, idx: np.ndarray) -> Split:
        t = torch.as_tensor(idx, dtype=torch.long)
        images = self.images.take(idx) if isinstance(self.images, FolderImages) else self.images[t]
        return Split(images, self.labels[t])

    def cached_in(self, budget: CacheBudget | None) -> Split:
        if budget is None or not isinstance(self.images, FolderImages):
            return self
        return Split(self.images.cached_in(budget), self.labels)

    def digest(self, batch: int = 256) -> str:
        """sha256 of the decoded uint8 images, in order (read batch by batch)."""
        h = hashlib.sha256()
        for i in range(0, len(self), batch):
            h.update(self.images[i:i + batch].numpy().tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Dataset:
    name: str
    id: str  # names the content: a changed data root gives a new id
    classes: tuple[str, ...]
    train: Split
    test: Split
    source: str
    budget: CacheBudget | None = field(default=None, compare=False)  # decoded-image cache (image folders)
    _subsets: dict = field(default_factory=dict, compare=False, repr=False)

    def _subset(self, what: str, split: Split, seed: int, n: int | None) -> Split:
        """A fixed stratified subset (all of ``split`` for None), decoded into the cache once if it fits."""
        key = (what, n)
        if key not in self._subsets:
            chosen = split if n is None or n == len(split) else split.take(stratified_order(split.labels, seed)[:n])
            self._subsets[key] = chosen.cached_in(self.budget)
        return self._subsets[key]

    def eval_split(self, n: int | None = None) -> Split:
        """All of test, or a fixed stratified subset of ``n`` images."""
        if n is not None and not 1 <= n <= len(self.test):
            raise UserError(f"--eval-samples {n} is out of range: the {self.name} test split has "
                            f"{len(self.test)} images; pass a number from 1 to {len(self.test)}")
        return self._subset("eval", self.test, 0, n)

    def calibration_split(self, n: int) -> Split:
        if not 1 <= n <= len(self.train):
            raise UserError(f"calibration needs 1 to {len(self.train)} train images, got {n}")
        return self._subset("calibration", self.train, 1, n)

    def finetune_split(self, n: int | None = None) -> Split:
        """What fine-tuning and BN recalibration read: all of train, or a fixed stratified subset
        of ``n`` images (``--finetune-samples``; a budget for large folders)."""
        if n is not None and not 1 <= n <= len(self.train):
            raise UserError(f"--finetune-samples {n} is out of range: the {self.name} train split has "
                            f"{len(self.train)} images; pass a number from 1 to {len(self.train)}")
        return self._subset("finetune", self.train, 2, n)


# The seed of the validation split's stratified order: its own, so it is not the calibration or
# fine-tune subset's prefix.
VALIDATION_SEED = 3


def validation_view(ds: Dataset, n: int) -> Dataset:
    """``ds`` with ``n`` train images held out (a fixed stratified subset) as its evaluation split
    and the rest as its train split, so fine-tuning and calibration never see them. Every choice
    tuned by scoring (stage ratios, epochs, which variant wins) is made on this view; the test
    split only reports. Its id names the hold-out, so its artifacts and results are its own."""
    if not 1 <= n < len(ds.train):
        raise UserError(f"--validation-samples {n} is out of range: the {ds.name} train split has {len(ds.train)} "
                        f"images; hold out from 1 to {len(ds.train) - 1} (a tenth is usual)")
    order = stratified_order(ds.train.labels, VALIDATION_SEED)
    held, rest = np.sort(order[:n]), np.sort(order[n:])
    return Dataset(name=f"{ds.name} validation", id=f"{ds.id}-val{n}", classes=ds.classes,
                   train=ds.train.take(rest), test=ds.train.take(held),
                   source=f"{ds.source}; evaluation: {n} images held out of train (stratified, seed {VALIDATION_SEED})",
                   budget=ds.budget)


def stratified_order(labels: torch.Tensor, seed: int) -> np.ndarray:
    """A fixed order whose every prefix is as close to class-balanced as possible:
    shuffle within each class, then deal the classes round-robin."""
    y = labels.numpy()
    rng = np.random.default_rng(seed)
    rank = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rank[rng.permutation(members)] = np.arange(len(members))
    return np.lexsort((y, rank))  # by rank within class, then class


def default_cache_dir() -> Path:
    env = os.environ.get("RESNET18_BENCH_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("resnet18-bench"))


def refuse_cache_inside(cache_dir: Path, data_root: str | Path) -> None:
    """Data roots are read-only: a cache inside one is refused before anything is created."""
    root, cache = Path(data_root).resolve(), Path(cache_dir).resolve()
    if cache == root or root in cache.parents:
        raise UserError(f"cache directory {cache_dir} is inside the data root {root}: data roots are read-only; "
                        f"pass --cache-dir elsewhere")


def checked_cache_dir(cache_dir: Path | None = None) -> Path:
    """``cache_dir`` (default: default_cache_dir()), created 0700 if missing; UserError (one line) if it is
    owned by someone else or writable by group or others (compress/trust.py)."""
    from .trust import check_cache_dir

    return check_cache_dir(cache_dir or default_cache_dir())


def _resize_u8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- digits (embedded default)
def load_digits(input_size: tuple[int, int]) -> Dataset:
    """scikit-learn's bundled 8x8 digits: real handwriting, shipped inside the package."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8))  # (N, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    x = _resize_u8(x[:, None], input_size).expand(-1, 3, -1, -1).contiguous()
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y.numpy())
    digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:8]
    return Dataset("digits", f"digits-{input_size[0]}px-{digest}", tuple(str(i) for i in range(10)),
                   Split(x[idx_train], y[idx_train]), Split(x[idx_test], y[idx_test]),
                   "scikit-learn load_digits (1,797 images, stratified 80/20 split, seed 0)")


# ---------------------------------------------------------------- image folders
def _scan_split(root: Path, split: str) -> tuple[list[str], list[tuple[Path, int]]]:
    d = root / split
    if not d.is_dir():
        raise UserError(f"data root {root} has no '{split}/' folder: expected {root}/{split}/<class>/<image>")
    classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{d} holds no class folders: expected {d}/<class>/<image>")
    files = []
    for ci, c in enumerate(classes):
        imgs = sorted(p for p in (d / c).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not imgs:
            raise UserError(f"class folder {d / c} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        files += [(p, ci) for p in imgs]
    return classes, files


def resolve_eval_split(root: Path, eval_split: str | None) -> str:
    """The named evaluation split, or the first of test/ and val/ that exists."""
    if eval_split is not None:
        return eval_split
    for name in EVAL_SPLITS:
        if (root / name).is_dir():
            return name
    raise UserError(f"data root {root} has neither 'test/' nor 'val/': expected {root}/test/<class>/<image> "
                    f"(or val/, or name the folder with --eval-split)")


def _stats(files: list[tuple[Path, int]]) -> list[tuple[int, int]]:
    out = []
    for p, _ in files:
        st = p.stat()
        out.append((st.st_size, st.st_mtime_ns))
    return out


def _listing_digest(files: list[tuple[Path, int]], stats: list[tuple[int, int]], root: Path) -> str:
    h = hashlib.sha256()
    for (p, c), (size, mtime) in zip(files, stats):
        h.update(f"{p.relative_to(root)}|{c}|{size}|{mtime}\n".encode())
    return h.hexdigest()


def load_imagefolder(root: str | Path, input_size: tuple[int, int], cache_dir: Path | None = None,
                     transform: EvalTransform | None = None, train_split: str = "train",
                     eval_split: str | None = None, cache_max_gb: float = DEFAULT_CACHE_MAX_GB) -> Dataset:
    """An ImageFolder tree with a train split and an evaluation split (test/ or val/).

    Two digests, for two jobs. The dataset id names the *content* (relative paths, classes and
    file bytes, the input size and the card's transform) and nothing else, so a copy of the same
    tree elsewhere (a CI checkout, another machine, another folder name) has the same id and
    finds the same baselines. The cache key
    names the *location and state* (absolute path, sizes, mtimes): cheap to compute on every run
    and changed by any edit; the content digest is computed once per state (reading each file
    once, never decoding) and kept in the cache.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist: pass --data-root with {train_split}/<class>/ and "
                        f"test/<class>/ (or val/<class>/) folders")
    classes, train_files = _scan_split(root, train_split)
    eval_name = resolve_eval_split(root, eval_split)
    test_classes, test_files = _scan_split(root, eval_name)
    if test_classes != classes:
        missing = sorted(set(classes) - set(test_classes)) or sorted(set(test_classes) - set(classes))
        raise UserError(f"{train_split}/ and {eval_name}/ under {root} have different class folders (differ in: "
                        f"{', '.join(missing)}); every class needs a folder in both")
    train_stats, test_stats = _stats(train_files), _stats(test_files)
    seed = f"{input_size}|classes|{'|'.join(classes)}\n"
    if transform is not None:
        seed = f"{json.dumps(transform.to_json(), sort_keys=True)}|{seed}"
    cache_key = hashlib.sha256(
        f"{CACHE_FORMAT}|{seed}|{root}|{_listing_digest(train_files, train_stats, root)}|"
        f"{_listing_digest(test_files, test_stats, root)}".encode()).hexdigest()
    refuse_cache_inside(cache_dir or default_cache_dir(), root)
    cache_root = checked_cache_dir(cache_dir)
    content_sha = _content_sha(cache_root / "datasets" / f"imagefolder-{cache_key[:32]}.content.json", seed,
                               train_files + test_files, root)
    budget = CacheBudget(int(cache_max_gb * 1e9), cache_root if cache_max_gb > 0 else None)

    def split(files, stats) -> Split:
        images = FolderImages.from_paths([p for p, _ in files], input_size, transform, stats)
        return Split(images, torch.tensor([c for _, c in files], dtype=torch.int64))

    # The id names the content only: a copy under another folder name, path or machine finds the
    # same baselines, and an odd folder name (spaces, accents) never reaches a file name.
    ds_id = f"imagefolder-{input_size[0]}px-{content_sha[:8]}"
    return Dataset("imagefolder", ds_id, tuple(classes), split(train_files, train_stats),
                   split(test_files, test_stats), str(root), budget)


_CONTENT_PURPOSE = "dataset-content"  # what a content record's HMAC is bound to (compress/trust.py)


def _content_sha(record: Path, seed: str, files: list[tuple[Path, int]], root: Path) -> str:
    """The content digest kept in ``record``, if its HMAC verifies with this user's key (the digest
    names the dataset id, so it chooses the baselines: whoever can write the cache must not);
    otherwise computed again from the files and rewritten, signed."""
    from .trust import sign_json, verify_json, warn

    try:
        doc = json.loads(record.read_text())
        sha = doc["content_sha256"]
        if isinstance(sha, str) and len(sha) == 64:
            if verify_json({"record": record.name, "content_sha256": sha}, doc.get("mac"), _CONTENT_PURPOSE):
                return sha
            warn(f"{record} is not signed with your cache key: reading the images again instead of trusting it")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    sha = content_digest(seed, files, root)
    try:
        atomic_write_json(record, {"content_sha256": sha, "mac": sign_json(
            {"record": record.name, "content_sha256": sha}, _CONTENT_PURPOSE)})
    except OSError:
        pass  # an unwritable cache only costs time
    return sha


# ---------------------------------------------------------------- torchvision CIFAR-10
def load_cifar10(root: str | Path, input_size: tuple[int, int], download: bool = False) -> Dataset:
    from torchvision.datasets import CIFAR10

    root = Path(root)
    try:
        tr = CIFAR10(str(root), train=True, download=download)
        te = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as e:
        raise UserError(f"CIFAR-10 not found under {root} ({e}); pass --download where the network allows, "
                        f"or --dataset imagefolder for a JPEG tree") from None
    except OSError as e:
        raise UserError(f"cannot download CIFAR-10 to {root} ({e}); copy cifar-10-batches-py there by hand") from None

    def split(ds) -> Split:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return Split(_resize_u8(x, input_size), torch.tensor(ds.targets, dtype=torch.int64))

    train, test = split(tr), split(te)
    digest = hashlib.sha256(test.images.numpy().tobytes()[:1 << 20] + bytes(str(len(train)), "ascii")).hexdigest()
    return Dataset("cifar10", f"cifar10-{input_size[0]}px-{digest[:8]}", tuple(tr.classes), train, test, str(root))


def load_dataset(name: str, input_size: tuple[int, int], data_root: str | Path | None = None,
                 cache_dir: Path | None = None, download: bool = False, transform: EvalTransform | None = None,
                 eval_split: str | None = None, cache_max_gb: float = DEFAULT_CACHE_MAX_GB) -> Dataset:
    if transform is not None and name != "imagefolder":
        raise UserError(f"the model card's transform applies to image folders (--dataset imagefolder), not to "
                        f"{name}: remove it from the card or convert the data to an image folder")
    if name == "digits":
        return load_digits(input_size)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if data_root is None:
        raise UserError(f"--dataset {name} needs --data-root PATH")
    if name == "imagefolder":
        return load_imagefolder(data_root, input_size, cache_dir, transform, eval_split=eval_split,
                                cache_max_gb=cache_max_gb)
    return load_cifar10(data_root, input_size, download)


__all__ = ["DATASETS", "Dataset", "Split", "load_dataset", "stratified_order", "default_cache_dir"]
