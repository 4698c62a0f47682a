"""Atomic file writes: a reader (or a run killed half-way) never sees a partial file."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later run tell a dead writer's leftover (SIGKILL runs no
    # cleanup) from a live concurrent writer's file: see sweep_stale_temps.
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def sweep_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove temporaries that atomic_write_bytes left under ``directory`` when its process was
    killed; files of writers still running are kept. Returns what was removed (best effort:
    a read-only checkout simply keeps them)."""
    removed = []
    for tmp in Path(directory).rglob(".*.tmp"):
        parts = tmp.name.rsplit(".", 3)  # ".<name>", "<pid>", "<random>", "tmp"
        if len(parts) != 4 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
            continue
        try:
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
