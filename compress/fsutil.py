"""Atomic file writes: a reader (or a run killed half-way) never sees a partial file."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

# A temporary this old belongs to a writer that died (SIGKILL runs no cleanup): nothing we write
# takes more than seconds. Age, not the writer's pid: a pid means nothing to a process in another
# container or on another host that shares the directory.
STALE_TEMP_SECONDS = 3600.0


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The name marks it as ours (".<name>.<pid>.<random>.tmp"): see sweep_stale_temps.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; published files (reports, baselines) get the usual umask mode.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # KeyboardInterrupt included: the old file stays, the temporary goes.
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sweep_stale_temps(directory: str | os.PathLike, max_age_s: float = STALE_TEMP_SECONDS,
                      locked: str | None = None, now: float | None = None) -> list[Path]:
    """Remove temporaries that atomic_write_bytes left under ``directory`` when its writer was
    killed: those last modified more than ``max_age_s`` ago, whichever host or container wrote
    them. ``locked``: the name of a file in ``directory`` whose lock the caller holds and whose
    every writer takes that lock (BaselineStore.update): its temporaries are stale at any age.
    Returns what was removed (best effort: a read-only checkout simply keeps them)."""
    now = time.time() if now is None else now
    removed = []
    for tmp in Path(directory).rglob(".*.tmp"):
        parts = tmp.name.rsplit(".", 3)  # ".<name>", "<pid>", "<random>", "tmp"
        if len(parts) != 4 or not parts[1].isdigit():
            continue  # not one of ours
        mine = locked is not None and tmp.parent == Path(directory) and parts[0] == f".{locked}"
        try:
            if not mine and now - tmp.lstat().st_mtime <= max_age_s:
                continue
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def dumps_json(obj) -> str:
    """Pretty, key-sorted JSON so that stored files review well as git diffs."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_bytes(path, dumps_json(obj).encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def writable(path: str | os.PathLike) -> bool:
    """Whether files can be created in ``path`` (its nearest existing ancestor if it does not
    exist yet): false on a read-only mount or a folder without write permission for this user."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return os.access(p, os.W_OK)


READ_ONLY_CACHE = ("the cache {path} is read-only and does not hold a valid {what} for these inputs: "
                   "run once with a writable cache (or pass --cache-dir to a writable folder), then reuse it read-only")
