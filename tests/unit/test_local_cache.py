from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from deployer.local.cache import Cache, configured_max_bytes, default_root

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def test_default_root_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEPLOYER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "deployer" / "blobs"
    monkeypatch.setenv("DEPLOYER_CACHE_DIR", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"


def test_put_then_lookup(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    blob = cache.put(D1, "zstd", 3, [b"abc", b"def"], raw_size=100)
    assert blob.digest == "sha256:" + hashlib.sha256(b"abcdef").hexdigest()
    assert (blob.size, blob.raw_size, blob.codec, blob.level) == (6, 100, "zstd", 3)
    assert blob.path.read_bytes() == b"abcdef"
    assert blob.path == tmp_path / "sha256" / blob.digest.split(":")[1]
    assert cache.lookup(D1, "zstd", 3) == blob
    assert cache.lookup(D1, "zstd", 19) is None
    assert cache.lookup(D1, "gzip", 3) is None
    assert cache.lookup(D2, "zstd", 3) is None
    sidecar = json.loads((tmp_path / "index" / "zstd-3" / f"{'1' * 64}.json").read_text())
    assert sidecar["digest"] == blob.digest and sidecar["diff_id"] == D1


def test_truncated_or_missing_file_is_a_miss(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    blob = cache.put(D1, "gzip", 1, [b"x" * 10], raw_size=10)
    blob.path.write_bytes(b"x" * 5)
    assert cache.lookup(D1, "gzip", 1) is None
    blob.path.unlink()
    assert cache.lookup(D1, "gzip", 1) is None


def test_verify_and_discard(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    blob = cache.put(D1, "zstd", 3, [b"hello"], raw_size=5)
    assert cache.verify(blob)
    blob.path.write_bytes(b"jello")  # same size: only a re-hash notices
    assert not cache.verify(blob)
    cache.discard(blob)
    assert cache.lookup(D1, "zstd", 3) is None and not blob.path.exists()


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    w = cache.writer(D1, "zstd", 3)
    w.write(b"partial")
    w.abort()
    assert list((tmp_path / "sha256").iterdir()) == []
    with pytest.raises(RuntimeError):
        cache.put(D1, "zstd", 3, _failing(), raw_size=1)
    assert list((tmp_path / "sha256").iterdir()) == []


def _failing():  # type: ignore[no-untyped-def]
    yield b"a"
    raise RuntimeError("boom")


def test_config_round_trip_checks_the_id(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    data = b'{"config":1}'
    image_id = "sha256:" + hashlib.sha256(data).hexdigest()
    assert cache.get_config(image_id) is None
    cache.put_config(image_id, data)
    assert cache.get_config(image_id) == data
    with pytest.raises(ValueError):
        cache.put_config("sha256:" + "0" * 64, data)
    (tmp_path / "sha256" / image_id.split(":")[1]).write_bytes(b"tampered")
    assert cache.get_config(image_id) is None


def test_prune_removes_least_recently_used_first(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    blobs = [cache.put(f"sha256:{i:064x}", "zstd", 3, [bytes([i]) * 1000], raw_size=1000) for i in range(4)]
    now = time.time()
    for age, blob in zip([400, 300, 200, 100], blobs):
        os.utime(blob.path, (now - age, now - age))
    assert cache.lookup(blobs[0].diff_id, "zstd", 3) is not None  # use refreshes blob 0
    assert cache.usage() == 4000
    freed = cache.prune(2000, keep=[blobs[1].path])
    assert freed == 2000
    assert cache.lookup(blobs[0].diff_id, "zstd", 3) is not None
    assert cache.lookup(blobs[1].diff_id, "zstd", 3) is not None  # kept although old
    assert cache.lookup(blobs[2].diff_id, "zstd", 3) is None
    assert cache.lookup(blobs[3].diff_id, "zstd", 3) is None
    assert not (tmp_path / "index" / "zstd-3" / f"{2:064x}.json").exists()  # dangling sidecar gone
    assert cache.prune(10**9) == 0


def test_prune_clears_stale_temp_files(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    w = cache.writer(D1, "zstd", 3)
    w.file.close()
    os.utime(w.tmp, (0, 0))
    cache.prune(0)
    assert not w.tmp.exists()


def test_concurrent_writers_of_the_same_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    errors: list[BaseException] = []

    def fill(payload: bytes) -> None:
        try:
            for _ in range(20):
                cache.put(D1, "zstd", 3, [payload], raw_size=len(payload))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=fill, args=(bytes([i]) * 5000,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    blob = cache.lookup(D1, "zstd", 3)
    assert blob is not None and cache.verify(blob)  # sidecar always matches the file it names


@pytest.mark.parametrize(("value", "expected"), [("", 20 * 1024**3), ("1000", 1000), ("2G", 2 * 1024**3),
                                                 ("512m", 512 * 1024**2), ("junk", 20 * 1024**3)])
def test_configured_max_bytes(monkeypatch: pytest.MonkeyPatch, value: str, expected: int) -> None:
    monkeypatch.setenv("DEPLOYER_CACHE_MAX_BYTES", value)
    assert configured_max_bytes() == expected


def test_prune_defaults_to_the_configured_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path)
    cache.put(D1, "zstd", 3, [b"x" * 3000], raw_size=3000)
    monkeypatch.setenv("DEPLOYER_CACHE_MAX_BYTES", "1000")
    assert cache.prune() == 3000
    assert cache.lookup(D1, "zstd", 3) is None
