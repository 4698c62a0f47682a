"""Authenticating what the cache holds: a per-user HMAC key kept outside the cache.

A sha256 stored beside a file catches corruption, not an attacker: whoever can write the file can
rewrite its record too. Every record the tools trust (artifact manifests with their files' sha256,
the records of derived runtime files, the decoded-dataset cache) therefore carries an
HMAC-SHA256 made with a key only this user can read, and a record whose MAC does not verify is
treated as absent: the file is rebuilt, never loaded.

The key lives in ``$RESNET18_BENCH_KEY_FILE``, else ``$XDG_CONFIG_HOME/resnet18-bench/cache.key``,
else ``~/.config/resnet18-bench/cache.key``. It is created on first use (32 random bytes, hex,
mode 0600, directory 0700). Deleting it only costs one rebuild of everything cached.

``check_cache_dir`` refuses a cache root that someone else could write: owned by another user,
or writable by group or others.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import sys
import tempfile
from pathlib import Path

from .errors import UserError

KEY_ENV = "RESNET18_BENCH_KEY_FILE"
KEY_BYTES = 32
_POSIX = os.name == "posix" and hasattr(os, "getuid")


def key_file() -> Path:
    """Where this user's cache key lives (it need not exist yet)."""
    env = os.environ.get(KEY_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "resnet18-bench" / "cache.key"


def _check_private_dir(d: Path) -> None:
    if not _POSIX:
        return
    st = d.stat()
    if st.st_uid != os.getuid():
        raise UserError(f"key directory {d} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}): "
                        f"point {KEY_ENV} at a file in a directory of your own")
    # A sticky directory (like /tmp) is fine: nobody else can replace or remove our key in it.
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise UserError(f"key directory {d} is writable by group or others "
                        f"(mode {stat.S_IMODE(st.st_mode):o}): run `chmod go-w {d}`")


def _read_key(path: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise UserError(f"cannot read the cache key {path} ({err.strerror}): fix its permissions "
                        f"or point {KEY_ENV} elsewhere") from None
    try:
        st = os.fstat(fd)
        if _POSIX and st.st_uid != os.getuid():
            raise UserError(f"cache key {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}): "
                            f"delete it or point {KEY_ENV} at a key of your own")
        if _POSIX and st.st_mode & 0o077:
            raise UserError(f"cache key {path} is readable or writable by others "
                            f"(mode {stat.S_IMODE(st.st_mode):o}): run `chmod 600 {path}`")
        text = os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise UserError(f"cache key {path} is damaged: delete it (a new one is made, and everything "
                        f"cached is rebuilt once)")
    return key


def _create_key(path: Path) -> None:
    d = path.parent
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_private_dir(d)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=d)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(KEY_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic and never overwrites: a concurrent creator's key wins
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system: exclusive create instead
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(out, "w") as fh:
                    fh.write(Path(tmp).read_text())
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_key() -> bytes:
    """This user's key, created on first use. UserError if it is not private to this user."""
    path = key_file()
    try:
        key = _read_key(path)
    except FileNotFoundError:
        try:
            _create_key(path)
        except OSError as err:
            raise UserError(f"cannot create the cache key {path} ({err.strerror or err}): "
                            f"point {KEY_ENV} at a writable private location") from None
        key = _read_key(path)
    _check_private_dir(path.parent)
    return key


def sign(data: bytes, purpose: str = "") -> str:
    """HMAC-SHA256 of ``data`` (hex), bound to ``purpose`` so that a record cannot be reused as another kind."""
    return hmac.new(load_key(), purpose.encode("utf-8") + b"\0" + data, hashlib.sha256).hexdigest()


def verify(data: bytes, mac: object, purpose: str = "") -> bool:
    return isinstance(mac, str) and hmac.compare_digest(sign(data, purpose), mac)


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sign_json(obj, purpose: str) -> str:
    return sign(canonical_json(obj), purpose)


def verify_json(obj, mac: object, purpose: str) -> bool:
    try:
        data = canonical_json(obj)
    except (TypeError, ValueError):
        return False
    return verify(data, mac, purpose)


def warn(message: str) -> None:
    """One warning line on stderr (a record was not authenticated and is being rebuilt)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def check_cache_dir(path: str | os.PathLike) -> Path:
    """Refuse a cache directory that anyone but this user could write (created 0700 if missing).

    The files under it are also authenticated (see the module doc); this check keeps a shared or
    world-writable directory from being used at all. Returns the path."""
    path = Path(path)
    if not path.exists():
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            return path  # nothing there to trust; writing will fail where it is attempted
    if _inside(key_file(), path):
        raise UserError(f"the cache key {key_file()} is inside the cache directory {path}: anyone who can write "
                        f"the cache could read it; point {KEY_ENV} outside the cache")
    if not _POSIX:
        return path
    st = path.stat()
    if st.st_uid != os.getuid():
        raise UserError(f"cache directory {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}): "
                        f"pass --cache-dir (or set RESNET18_BENCH_CACHE) to a directory of your own")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UserError(f"cache directory {path} is writable by group or others "
                        f"(mode {stat.S_IMODE(st.st_mode):o}): run `chmod go-w {path}` or pass --cache-dir "
                        f"to a private directory")
    return path


__all__ = ["KEY_ENV", "key_file", "load_key", "sign", "verify", "sign_json", "verify_json", "canonical_json",
           "check_cache_dir", "warn"]
