"""Data sources with deterministic splits and a decoded-tensor cache outside the data root.

Every source yields uint8 RGB images (N, 3, H, W) already at the model card's input size, and
int64 labels. Calibration and fine-tuning data come from ``train``; evaluation from ``test``.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .fsutil import atomic_write_bytes

DATASETS = ("digits", "imagefolder", "cifar10")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
# Bump when decoding or resizing changes, so stale caches are not reused.
CACHE_FORMAT = 3


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def take(self, idx: np.ndarray) -> Split:
        t = torch.as_tensor(idx, dtype=torch.long)
        return Split(self.images[t], self.labels[t])


@dataclass(frozen=True)
class Dataset:
    name: str
    id: str  # names the content: a changed data root gives a new id
    classes: tuple[str, ...]
    train: Split
    test: Split
    source: str

    def eval_split(self, n: int | None = None) -> Split:
        """All of test, or a fixed stratified subset of ``n`` images."""
        if n is None:
            return self.test
        if not 1 <= n <= len(self.test):
            raise UserError(f"--eval-samples {n} is out of range: the {self.name} test split has "
                            f"{len(self.test)} images; pass a number from 1 to {len(self.test)}")
        return self.test.take(stratified_order(self.test.labels, seed=0)[:n])

    def calibration_split(self, n: int) -> Split:
        if not 1 <= n <= len(self.train):
            raise UserError(f"calibration needs 1 to {len(self.train)} train images, got {n}")
        return self.train.take(stratified_order(self.train.labels, seed=1)[:n])


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


def _decode(files: list[tuple[Path, int]], size: tuple[int, int], root: Path,
            content: hashlib._Hash) -> Split:
    """Decode every file, feeding its relative path, class and bytes into ``content``."""
    from PIL import Image, UnidentifiedImageError

    images = torch.empty((len(files), 3, *size), dtype=torch.uint8)
    for i, (path, c) in enumerate(files):
        try:
            raw = path.read_bytes()
            content.update(f"{path.relative_to(root).as_posix()}|{c}|{len(raw)}\n".encode())
            content.update(raw)
            with Image.open(io.BytesIO(raw)) as im:
                im = im.convert("RGB")
                if im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            # Fail rather than skip: a silently smaller test set changes every accuracy.
            raise UserError(f"cannot decode image {path} ({type(e).__name__}: {e}); remove or replace the file") from None
        images[i] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    labels = torch.tensor([c for _, c in files], dtype=torch.int64)
    return Split(images, labels)


def _listing_digest(files: list[tuple[Path, int]], root: Path) -> str:
    h = hashlib.sha256()
    for p, c in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{c}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def load_imagefolder(root: str | Path, input_size: tuple[int, int], cache_dir: Path | None = None) -> Dataset:
    """An ImageFolder tree with train/ and test/.

    Two digests, for two jobs. The dataset id names the *content* (relative paths, classes and
    file bytes, and the input size they are decoded to), so a copy of the same tree elsewhere (a CI checkout, another machine) has the
    same id and finds the same baselines. The cache key names the *location and state* (absolute
    path, sizes, mtimes): cheap to compute on every run and changed by any edit, so a stale
    cache is never used; the content digest is stored in the cache beside the tensors.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist: pass --data-root with train/<class>/ and test/<class>/ folders")
    classes, train_files = _scan_split(root, "train")
    test_classes, test_files = _scan_split(root, "test")
    if test_classes != classes:
        missing = sorted(set(classes) - set(test_classes)) or sorted(set(test_classes) - set(classes))
        raise UserError(f"train/ and test/ under {root} have different class folders (differ in: {', '.join(missing)}); "
                        f"every class needs a folder in both")
    cache_key = hashlib.sha256(
        f"{CACHE_FORMAT}|{input_size}|{root}|{_listing_digest(train_files, root)}|{_listing_digest(test_files, root)}".encode()
    ).hexdigest()
    cache_name = f"imagefolder-{root.name}-{input_size[0]}px-{cache_key[:16]}"
    cached = _cache_get(cache_dir, cache_name)
    if cached is None:
        content = hashlib.sha256(f"{input_size}|classes|{'|'.join(classes)}\n".encode())
        train = _decode(train_files, input_size, root, content)
        test = _decode(test_files, input_size, root, content)
        content_sha = content.hexdigest()
        _cache_put(cache_dir, cache_name, train, test, root, content_sha)
    else:
        train, test, content_sha = cached
    ds_id = f"imagefolder-{root.name}-{input_size[0]}px-{content_sha[:8]}"
    return Dataset("imagefolder", ds_id, tuple(classes), train, test, str(root))


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


# ---------------------------------------------------------------- cache
def _cache_file(cache_dir: Path | None, name: str) -> Path:
    return (cache_dir or default_cache_dir()) / "datasets" / f"{name}.safetensors"


def _cache_get(cache_dir: Path | None, name: str) -> tuple[Split, Split, str] | None:
    from safetensors import SafetensorError, safe_open

    path = _cache_file(cache_dir, name)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            content_sha = (f.metadata() or {}).get("content_sha256", "")
            t = {k: f.get_tensor(k) for k in ("train_images", "train_labels", "test_images", "test_labels")}
        if len(content_sha) != 64:
            return None
        return Split(t["train_images"], t["train_labels"]), Split(t["test_images"], t["test_labels"]), content_sha
    except (SafetensorError, KeyError, OSError, ValueError):
        return None  # a damaged cache is rebuilt, never trusted


def _cache_put(cache_dir: Path | None, name: str, train: Split, test: Split, root: Path,
               content_sha: str) -> None:
    from safetensors.torch import save

    path = _cache_file(cache_dir, name)
    if root in path.resolve().parents:
        raise UserError(f"cache directory {path.parent} is inside the data root {root}: data roots are read-only; "
                        f"pass --cache-dir elsewhere")
    blob = save({"train_images": train.images, "train_labels": train.labels,
                 "test_images": test.images, "test_labels": test.labels},
                metadata={"content_sha256": content_sha})
    try:
        atomic_write_bytes(path, blob)  # atomic: a concurrent run reads the old file or the new, never half
    except OSError:
        pass  # an unwritable cache only costs time


def load_dataset(name: str, input_size: tuple[int, int], data_root: str | Path | None = None,
                 cache_dir: Path | None = None, download: bool = False) -> Dataset:
    if name == "digits":
        return load_digits(input_size)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if data_root is None:
        raise UserError(f"--dataset {name} needs --data-root PATH")
    if name == "imagefolder":
        return load_imagefolder(data_root, input_size, cache_dir)
    return load_cifar10(data_root, input_size, download)


__all__ = ["DATASETS", "Dataset", "Split", "load_dataset", "stratified_order", "default_cache_dir"]
