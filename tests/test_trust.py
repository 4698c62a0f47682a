"""compress/trust.py: the per-user key outside the cache, the HMACs made with it, and the refusal of
cache directories that someone else could write. Every test uses a key of its own (tmp_path)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from compress import trust
from compress.errors import UserError

posix_only = pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and permission bits")


@pytest.fixture
def key_path(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "config" / "resnet18-bench" / "cache.key"
    monkeypatch.setenv(trust.KEY_ENV, str(path))
    return path


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# ---------------------------------------------------------------- the key
def test_key_file_defaults_to_the_user_config_dir_outside_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(trust.KEY_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert trust.key_file() == tmp_path / "xdg" / "resnet18-bench" / "cache.key"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert trust.key_file() == Path.home() / ".config" / "resnet18-bench" / "cache.key"
    monkeypatch.setenv(trust.KEY_ENV, str(tmp_path / "k"))
    assert trust.key_file() == tmp_path / "k"


@posix_only
def test_key_is_created_private_on_first_use_and_then_reused(key_path):
    assert not key_path.exists()
    key = trust.load_key()
    assert len(key) == trust.KEY_BYTES
    assert mode(key_path) == 0o600 and mode(key_path.parent) == 0o700
    assert trust.load_key() == key
    assert trust.sign(b"x") == trust.sign(b"x")


def test_concurrent_first_uses_agree_on_one_key(key_path):
    code = "from compress import trust; print(trust.load_key().hex())"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert keys == {trust.load_key().hex()}


@posix_only
def test_key_readable_by_others_is_refused(key_path):
    trust.load_key()
    key_path.chmod(0o644)
    with pytest.raises(UserError) as err:
        trust.sign(b"x")
    assert f"chmod 600 {key_path}" in str(err.value) and "\n" not in str(err.value)


@posix_only
def test_key_directory_writable_by_others_is_refused(key_path):
    trust.load_key()
    key_path.parent.chmod(0o777)
    with pytest.raises(UserError, match=f"chmod go-w {key_path.parent}"):
        trust.load_key()


def test_damaged_key_is_a_user_error(key_path):
    trust.load_key()
    key_path.write_text("not hex")
    with pytest.raises(UserError, match="is damaged: delete it"):
        trust.load_key()


def test_mac_depends_on_data_purpose_and_key(key_path, tmp_path, monkeypatch):
    mac = trust.sign(b"data", "manifest")
    assert len(mac) == 64 and trust.verify(b"data", mac, "manifest")
    assert not trust.verify(b"datA", mac, "manifest")
    assert not trust.verify(b"data", mac, "runtime-file")  # a record cannot pass for another kind
    assert not trust.verify(b"data", None, "manifest") and not trust.verify(b"data", "", "manifest")
    doc = {"b": [1, 2.5], "a": "x"}
    assert trust.verify_json(json.loads(json.dumps(doc, indent=2)), trust.sign_json(doc, "p"), "p")
    monkeypatch.setenv(trust.KEY_ENV, str(tmp_path / "other" / "cache.key"))  # another user's key
    assert not trust.verify(b"data", mac, "manifest")


# ---------------------------------------------------------------- the cache directory
@posix_only
def test_missing_cache_dir_is_created_private(key_path, tmp_path):
    d = tmp_path / "cache" / "nested"
    assert trust.check_cache_dir(d) == d
    assert d.is_dir() and mode(d) == 0o700


@posix_only
@pytest.mark.parametrize("bits", [0o775, 0o757, 0o777])
def test_cache_dir_writable_by_group_or_others_is_refused(key_path, tmp_path, bits):
    d = tmp_path / "cache"
    d.mkdir()
    d.chmod(bits)
    with pytest.raises(UserError) as err:
        trust.check_cache_dir(d)
    msg = str(err.value)
    assert "\n" not in msg and f"cache directory {d} is writable by group or others" in msg
    assert f"chmod go-w {d}" in msg and "--cache-dir" in msg
    d.chmod(0o755)
    trust.check_cache_dir(d)  # readable by others is fine: nothing secret is cached


@posix_only
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_cache_dir_owned_by_someone_else_is_refused(key_path, tmp_path):
    d = tmp_path / "theirs"
    d.mkdir(mode=0o755)
    os.chown(d, 65534, 65534)
    with pytest.raises(UserError, match=f"cache directory {d} is owned by uid 65534, not by you"):
        trust.check_cache_dir(d)


def test_key_inside_the_cache_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(trust.KEY_ENV, str(cache / "cache.key"))
    with pytest.raises(UserError, match="is inside the cache directory"):
        trust.check_cache_dir(cache)


@posix_only
def test_checked_cache_dir_resolves_the_default(key_path, tmp_path, monkeypatch):
    from compress.data import checked_cache_dir

    monkeypatch.setenv("RESNET18_BENCH_CACHE", str(tmp_path / "c"))
    assert checked_cache_dir() == tmp_path / "c" and mode(tmp_path / "c") == 0o700
    (tmp_path / "c").chmod(0o777)
    with pytest.raises(UserError, match="chmod go-w"):
        checked_cache_dir()


# ---------------------------------------------------------------- the dataset cache
def test_forged_dataset_content_record_is_not_trusted(key_path, tmp_path, capfd, monkeypatch):
    """The content digest names the dataset id, and the id chooses which baselines apply: a record
    rewritten by whoever can write the cache is recomputed from the files, not believed."""
    from compress import data

    root = tmp_path / "data"
    files = []
    for i in range(3):
        p = root / "train" / "a" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"image {i}".encode())
        files.append((p, 0))
    record = tmp_path / "cache" / "datasets" / "imagefolder-0123.content.json"
    true_sha = data._content_sha(record, "seed", files, root)
    doc = json.loads(record.read_text())
    assert doc["content_sha256"] == true_sha and len(doc["mac"]) == 64

    def no_reading(*a, **k):
        raise AssertionError("the files were read again although the record is authentic")

    with monkeypatch.context() as mp:
        mp.setattr(data, "content_digest", no_reading)
        assert data._content_sha(record, "seed", files, root) == true_sha

    forged = "f" * 64  # the id of a dataset whose baselines the attacker prefers
    capfd.readouterr()
    for rec in ({"content_sha256": forged}, {"content_sha256": forged, "mac": doc["mac"]}):
        record.write_text(json.dumps(rec))
        assert data._content_sha(record, "seed", files, root) == true_sha
        assert f"warning: {record} is not signed with your cache key" in capfd.readouterr().err
    # A record of another entry (another location or state) does not vouch for this one.
    other = record.with_name("imagefolder-4567.content.json")
    other.write_text(json.dumps({"content_sha256": forged, "mac": trust.sign_json(
        {"record": record.name, "content_sha256": forged}, data._CONTENT_PURPOSE)}))
    assert data._content_sha(other, "seed", files, root) == true_sha
