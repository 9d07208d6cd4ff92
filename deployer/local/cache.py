"""Content-addressed local blob cache: compressed layers and raw image configs.

Layout under the root ($DEPLOYER_CACHE_DIR, else $XDG_CACHE_HOME/deployer/blobs):
    sha256/<hex>                      immutable content, named by its own sha256
    index/<codec>-<level>/<diff>.json sidecar: which blob holds diff_id in that codec/level
Blobs are renamed into place before their sidecar is written, and a blob's name is its own
digest, so two processes filling the same entry can never pair a sidecar with other bytes.
An image config is stored as sha256/<image id hex> (config digest == image id).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from deployer import cachefile
from deployer.tarfmt import Descriptor

DEFAULT_MAX_BYTES = 20 * 1024**3
_STALE_TEMP_SECONDS = 6 * 3600


def configured_max_bytes() -> int:
    """The cache bound: $DEPLOYER_CACHE_MAX_BYTES (accepts K/M/G suffixes), else 20 GiB."""
    text = os.environ.get("DEPLOYER_CACHE_MAX_BYTES", "").strip().upper()
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text) if text else DEFAULT_MAX_BYTES
    except ValueError:
        return DEFAULT_MAX_BYTES


def default_root() -> Path:
    """$DEPLOYER_CACHE_DIR, else $XDG_CACHE_HOME/deployer/blobs (default ~/.cache/...)."""
    override = os.environ.get("DEPLOYER_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return cachefile.cache_dir() / "blobs"


@dataclass(frozen=True)
class Blob:
    """One compressed layer: digest and size are of the compressed file; raw_size of the layer tar."""

    diff_id: str
    codec: str
    level: int
    path: Path
    digest: str
    size: int
    raw_size: int


class BlobWriter:
    """A file being filled in the cache; hashes and counts what is written. Commit or abort."""

    def __init__(self, cache: Cache, diff_id: str, codec: str, level: int) -> None:
        self.cache, self.diff_id, self.codec, self.level = cache, diff_id, codec, level
        cache.content_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.content_dir, prefix=".tmp-")
        self.tmp = Path(tmp)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self.file.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.file.flush()

    def commit(self, raw_size: int, diff_id: str | None = None) -> Blob:
        """Move the file into place and record its sidecar (diff_id overrides the planned one)."""
        self.diff_id = diff_id or self.diff_id
        self.file.close()
        hexdigest = self._hash.hexdigest()
        final = self.cache.content_dir / hexdigest
        os.replace(self.tmp, final)
        blob = Blob(self.diff_id, self.codec, self.level, final, f"sha256:{hexdigest}", self.size, raw_size)
        self.cache._write_sidecar(blob)
        self.cache.remember_size(self.diff_id, raw_size)
        return blob

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class Cache:
    """Lookup, put, and bounded growth of the local blob cache."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.content_dir = self.root / "sha256"
        self.index_dir = self.root / "index"

    def _sidecar(self, diff_id: str, codec: str, level: int) -> Path:
        return self.index_dir / f"{codec}-{level}" / f"{_hex(diff_id)}.json"

    def lookup(self, diff_id: str, codec: str, level: int) -> Blob | None:
        """The cached blob for diff_id in codec/level, or None (also when its file is gone or short)."""
        try:
            meta = json.loads(self._sidecar(diff_id, codec, level).read_text())
            path = self.content_dir / _hex(meta["digest"])
            blob = Blob(diff_id, codec, level, path, meta["digest"], int(meta["size"]), int(meta["raw_size"]))
            if meta["diff_id"] != diff_id or path.stat().st_size != blob.size:
                return None
            os.utime(path)  # LRU: last use, not last write
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return blob

    def writer(self, diff_id: str, codec: str, level: int) -> BlobWriter:
        """Start filling a blob; call .commit(raw_size) when complete, .abort() otherwise."""
        return BlobWriter(self, diff_id, codec, level)

    def put(self, diff_id: str, codec: str, level: int, chunks: Iterable[bytes], raw_size: int) -> Blob:
        """Store already-compressed bytes as the blob of diff_id."""
        w = self.writer(diff_id, codec, level)
        try:
            for chunk in chunks:
                w.write(chunk)
        except BaseException:
            w.abort()
            raise
        return w.commit(raw_size)

    def _write_sidecar(self, blob: Blob) -> None:
        path = self._sidecar(blob.diff_id, blob.codec, blob.level)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in asdict(blob).items() if k != "path"}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            json.dump(meta, fh)
        os.replace(tmp, path)

    def verify(self, blob: Blob) -> bool:
        """Re-hash a blob's file; False when it no longer matches its digest."""
        h = hashlib.sha256()
        try:
            with open(blob.path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except OSError:
            return False
        return f"sha256:{h.hexdigest()}" == blob.digest

    def discard(self, blob: Blob) -> None:
        """Forget a blob (e.g. one that failed verification): file and sidecar."""
        blob.path.unlink(missing_ok=True)
        self._sidecar(blob.diff_id, blob.codec, blob.level).unlink(missing_ok=True)

    def get_config(self, image_id: str) -> bytes | None:
        """An image's raw config bytes, if cached and intact."""
        try:
            data = (self.content_dir / _hex(image_id)).read_bytes()
        except OSError:
            return None
        return data if f"sha256:{hashlib.sha256(data).hexdigest()}" == image_id else None

    def put_config(self, image_id: str, data: bytes) -> None:
        """Cache an image config; it must hash to the image id."""
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != image_id:
            raise ValueError(f"config does not hash to {image_id}")
        self.content_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.content_dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, self.content_dir / _hex(image_id))

    def config_for(self, image_id: str) -> str | None:
        """The config digest remembered for an image id of the containerd store (its config cached too)."""
        try:
            digest = (self.root / "ids" / _hex(image_id)).read_text().strip()
        except OSError:
            return None
        return digest if self.get_config(digest) is not None else None

    def remember_config(self, image_id: str, config_digest: str) -> None:
        """Remember which config an image id names (ids never change what they name)."""
        (self.root / "ids").mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / "ids", prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(config_digest + "\n")
        os.replace(tmp, self.root / "ids" / _hex(image_id))

    def remember_size(self, diff_id: str, raw_size: int) -> None:
        """Remember a layer's tar size (a few bytes, kept when its blobs are pruned)."""
        if not diff_id:
            return
        sizes = self.root / "sizes"
        sizes.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=sizes, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{raw_size}\n")
        os.replace(tmp, sizes / _hex(diff_id))

    def pushed(self, repo: str) -> frozenset[str]:
        """The layers (diff ids) this workstation pushed to REPO (`registry/path`) before."""
        try:
            return frozenset((self.root / "pushed" / _repo_key(repo)).read_text().split())
        except OSError:
            return frozenset()

    def remember_pushed(self, repo: str, diff_ids: Iterable[str]) -> None:
        """Add DIFF_IDS to the layers pushed to REPO (a registry may lose them: only a hint)."""
        known = self.pushed(repo) | set(diff_ids)
        self._write_pushed(_repo_key(repo), "".join(f"{d}\n" for d in sorted(known)))

    def _write_pushed(self, name: str, text: str) -> None:
        pushed = self.root / "pushed"
        pushed.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=pushed, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, pushed / name)

    def registry_blobs(self, repo: str) -> dict[str, Descriptor]:
        """diff id -> the blob a push from here left REPO holding that layer as (a hint: a registry
        may lose it, and then refuses the manifest that names it: deployer.ship.blobpush)."""
        try:
            data = json.loads((self.root / "pushed" / f"{_repo_key(repo)}.json").read_text())
            return {str(d): Descriptor(str(m), str(g), int(n)) for d, (m, g, n) in data.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def remember_registry_blobs(self, repo: str, blobs: Iterable[tuple[str, Descriptor]]) -> None:
        """Add BLOBS (diff id, its blob in REPO) to what registry_blobs gives for REPO."""
        known = {**self.registry_blobs(repo), **dict(blobs)}
        self._write_pushed(f"{_repo_key(repo)}.json",
                           json.dumps({d: [b.media_type, b.digest, b.size] for d, b in sorted(known.items())}))

    def raw_size(self, diff_id: str) -> int | None:
        """A layer's tar size, if it was ever learnt here (sizes do not depend on the codec)."""
        try:
            return int((self.root / "sizes" / _hex(diff_id)).read_text())
        except (OSError, ValueError):
            pass
        for sidecar in self.index_dir.glob(f"*/{_hex(diff_id)}.json"):
            try:
                meta = json.loads(sidecar.read_text())
                if meta.get("diff_id") == diff_id:
                    return int(meta["raw_size"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return None

    def usage(self) -> int:
        """Bytes held by cached content."""
        return sum(size for _, _, size in self._entries())

    def _entries(self) -> list[tuple[float, Path, int]]:
        out = []
        try:
            it = list(self.content_dir.iterdir())
        except OSError:
            return []
        for path in it:
            try:
                st = path.stat()
            except OSError:
                continue
            if path.name.startswith(".tmp-"):
                if time.time() - st.st_mtime > _STALE_TEMP_SECONDS:
                    path.unlink(missing_ok=True)  # left by a killed export
                continue
            out.append((st.st_mtime, path, st.st_size))
        return out

    def prune(self, max_bytes: int | None = None, keep: Iterable[Path] = ()) -> int:
        """Delete least recently used content until the cache holds at most max_bytes; bytes freed.

        Default bound: configured_max_bytes() ($DEPLOYER_CACHE_MAX_BYTES, else 20 GiB)."""
        if max_bytes is None:
            max_bytes = configured_max_bytes()
        keep_set = {Path(p) for p in keep}
        entries = sorted(self._entries())
        total = sum(size for _, _, size in entries)
        freed = 0
        for _, path, size in entries:
            if total <= max_bytes:
                break
            if path in keep_set:
                continue
            path.unlink(missing_ok=True)
            total -= size
            freed += size
        if freed:
            self._drop_dangling_sidecars()
        return freed

    def _drop_dangling_sidecars(self) -> None:
        for sidecar in self.index_dir.glob("*/*.json"):
            try:
                digest = json.loads(sidecar.read_text())["digest"]
            except (OSError, ValueError, KeyError, TypeError):
                sidecar.unlink(missing_ok=True)
                continue
            if not (self.content_dir / _hex(digest)).exists():
                sidecar.unlink(missing_ok=True)


def _repo_key(repo: str) -> str:
    """The file name under pushed/ of what is known of REPO (`registry/path`)."""
    return hashlib.sha256(repo.encode()).hexdigest()


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]
