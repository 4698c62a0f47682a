"""Images of an image folder, decoded when read: memory independent of the folder's size.

``FolderImages`` looks like the uint8 (N, 3, H, W) tensor the rest of the code slices
(``images[i:j]``, ``images[index_tensor]``, ``len``, ``shape``), but holds only file paths and
decodes what a slice asks for, in a thread pool (PIL's decoders and resizers release the GIL).
A subset that is read again and again (the evaluation subset, calibration images, a fine-tune
set that fits) can be decoded once into a memory-mapped file under the cache directory, within a
byte budget shared by the whole run; whatever does not fit is streamed from the files.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import trust
from .errors import UserError
from .transforms import EvalTransform

# Bump when decoding or the decoded layout changes, so stale decoded caches are not reused.
DECODED_FORMAT = 1
DECODE_BATCH = 256  # images decoded per chunk when filling a decoded cache
DECODED_PURPOSE = "decoded-images"  # what the MAC of a decoded-cache record is for (compress/trust.py)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def decode_image(path: Path, size: tuple[int, int], transform: EvalTransform | None) -> np.ndarray:
    """One file -> uint8 (3, H, W) RGB; an unreadable file is a UserError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("RGB")
            if transform is not None:
                return transform.apply(im)
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        # Fail rather than skip: a silently smaller test set changes every accuracy.
        raise UserError(f"cannot decode image {path} ({type(e).__name__}: {e}); remove or replace the file") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="decode")
    return _POOL


@dataclass
class CacheBudget:
    """Bytes of decoded images a run may keep in memory-mapped files (they count in its RSS)."""

    bytes_left: int
    cache_dir: Path | None = None  # None: nothing is cached, everything is streamed

    def take(self, nbytes: int) -> bool:
        if self.cache_dir is None or nbytes > self.bytes_left:
            return False
        self.bytes_left -= nbytes
        return True


@dataclass(frozen=True)
class _Files:
    """What decodes to an image: the files and how they are prepared."""

    paths: tuple[Path, ...]
    size: tuple[int, int]
    transform: EvalTransform | None
    stats: tuple[tuple[int, int], ...] = field(default=(), compare=False)  # (size, mtime_ns) per file


class FolderImages:
    """A lazily decoded uint8 (N, 3, H, W) image array over files (see the module docstring)."""

    def __init__(self, files: _Files, index: np.ndarray | None = None, decoded: np.ndarray | None = None,
                 rows: np.ndarray | None = None):
        self._files = files
        self._index = np.arange(len(files.paths)) if index is None else np.asarray(index, dtype=np.int64)
        # Memory-mapped decoded images (or None: streamed); row rows[k] holds image k of this view.
        self._decoded = decoded
        self._rows = np.arange(len(self._index)) if rows is None else rows

    @classmethod
    def from_paths(cls, paths: Sequence[Path], size: tuple[int, int], transform: EvalTransform | None,
                   stats: Sequence[tuple[int, int]] = ()) -> FolderImages:
        return cls(_Files(tuple(paths), tuple(size), transform, tuple(stats)))

    # -- the tensor-like surface the rest of the code uses
    def __len__(self) -> int:
        return len(self._index)

    dtype = torch.uint8

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, *self._files.size)

    @property
    def nbytes(self) -> int:
        return len(self) * 3 * self._files.size[0] * self._files.size[1]

    @property
    def cached(self) -> bool:
        return self._decoded is not None

    def paths(self) -> list[Path]:
        return [self._files.paths[i] for i in self._index]

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, tuple):  # images[idx, :, y, x]: pick the images, then index the tensor
            return self[key[0]][(slice(None), *key[1:])] if not isinstance(key[0], (int, np.integer)) \
                else self[key[0]][key[1:]]
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        positions = np.arange(len(self))[key] if isinstance(key, slice) else _as_index(key)
        if self._decoded is not None:
            return torch.from_numpy(np.ascontiguousarray(self._decoded[self._rows[positions]]))
        return torch.from_numpy(self._decode(self._index[positions]))

    def take(self, idx) -> FolderImages:
        positions = _as_index(idx)
        return FolderImages(self._files, self._index[positions], self._decoded, self._rows[positions])

    def _decode(self, file_idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(file_idx), 3, *self._files.size), dtype=np.uint8)
        f = self._files

        def one(pos_i):
            pos, i = pos_i
            out[pos] = decode_image(f.paths[i], f.size, f.transform)

        list(_pool().map(one, enumerate(file_idx.tolist())))
        return out

    # -- the decoded cache
    def cache_key(self) -> str:
        f = self._files
        h = hashlib.sha256(f"{DECODED_FORMAT}|{f.size}|{f.transform.to_json() if f.transform else None}\n".encode())
        for i in self._index.tolist():
            st = f.stats[i] if f.stats else (lambda s: (s.st_size, s.st_mtime_ns))(f.paths[i].stat())
            h.update(f"{f.paths[i]}|{st[0]}|{st[1]}\n".encode())
        return h.hexdigest()

    def cached_in(self, budget: CacheBudget) -> FolderImages:
        """This subset decoded once into a memory-mapped file, if it fits the run's budget;
        otherwise itself (streamed). A damaged or partial cache file is rebuilt, never read."""
        if self._decoded is not None or not budget.take(self.nbytes):
            return self
        root = budget.cache_dir / "decoded"
        key = self.cache_key()
        data, meta = root / f"{key[:32]}.u8", root / f"{key[:32]}.json"
        shape = self.shape
        # The meta file carries the decoded bytes' sha256 under a MAC made with the user's key
        # (compress/trust.py): a file in the cache is trusted only once it is proven to be ours.
        try:
            record = json.loads(meta.read_text())
            body = {"key": key, "shape": list(shape), "sha256": record.get("sha256")}
            if trust.verify_json(body, record.get("mac"), DECODED_PURPOSE) and data.stat().st_size == self.nbytes \
                    and _sha256_file(data) == record["sha256"]:
                return FolderImages(self._files, self._index, np.memmap(data, np.uint8, "r", shape=shape))
            trust.warn(f"{meta} is not signed with your cache key or does not match its images: decoding again")
        except (OSError, ValueError, AttributeError, KeyError):
            pass
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = data.with_name(f".{data.name}.tmp-{os.getpid()}")
            digest = hashlib.sha256()
            try:
                with open(tmp, "wb") as fh:  # written in chunks: never more than one chunk in memory
                    for start in range(0, len(self), DECODE_BATCH):
                        chunk = self._decode(self._index[start:start + DECODE_BATCH]).tobytes()
                        digest.update(chunk)
                        fh.write(chunk)
                os.replace(tmp, data)
            except BaseException:  # an undecodable image or an interrupt leaves nothing half-written
                tmp.unlink(missing_ok=True)
                raise
            body = {"key": key, "shape": list(shape), "sha256": digest.hexdigest()}
            tmp_meta = meta.with_name(f".{meta.name}.tmp-{os.getpid()}")
            tmp_meta.write_text(json.dumps({**body, "mac": trust.sign_json(body, DECODED_PURPOSE)}))
            os.replace(tmp_meta, meta)
        except OSError:
            return self  # an unwritable cache only costs time: stream instead
        return FolderImages(self._files, self._index, np.memmap(data, np.uint8, "r", shape=shape))


def _as_index(key) -> np.ndarray:
    if isinstance(key, torch.Tensor):
        key = key.cpu().numpy()
    return np.asarray(key, dtype=np.int64).reshape(-1)


def content_digest(seed: str, files: Sequence[tuple[Path, int]], root: Path) -> str:
    """sha256 over each file's relative path, class and bytes, in order (streamed: one file in
    memory at a time). Names the data's content, not its location."""
    h = hashlib.sha256(seed.encode())
    for path, c in files:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read image {path} ({e.strerror}); fix its permissions or remove it") from None
        h.update(f"{path.relative_to(root).as_posix()}|{c}|{len(raw)}\n".encode())
        h.update(raw)
    return h.hexdigest()
