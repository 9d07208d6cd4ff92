"""Read layers straight from the local daemon's classic overlay2 store, as `docker save` would.

`docker save` on dockerd < 25 copies the whole image into a temp dir before the first byte and
streams layers in v1-id order. The store already holds everything needed to rebuild each layer
tar byte for byte: `layerdb/sha256/<chain id>/tar-split.json.gz` keeps every tar header and
padding (type 2 segments) and names the files (type 1 entries) whose bytes live in
`overlay2/<cache-id>/diff/`. Callers must still hash what they read against the diff id.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from deployer.chain import chain_ids
from deployer.errors import LocalError
from deployer.local.client import daemon_info
from deployer.local.image import ImageInfo

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_SEGMENT = 2
_FILE = 1


class StoreError(LocalError):
    """The local layer store cannot give this layer (missing, unsafe or short file)."""


@dataclass(frozen=True)
class Segment:
    """Raw tar bytes (headers, padding, end-of-archive) kept verbatim by tar-split."""

    payload: bytes


@dataclass(frozen=True)
class FileEntry:
    """A tar member whose `size` content bytes come from the layer's diff dir at `name`."""

    name: bytes
    size: int


class _InfoClient(Protocol):
    def info(self) -> Mapping[str, Any]: ...


# ---- pure helpers -----------------------------------------------------------------------------
def parse_entry(line: bytes | str) -> Segment | FileEntry | None:
    """One tar-split JSON line as a Segment or FileEntry; None for an entry with no bytes."""
    try:
        doc = json.loads(line)
        kind = doc["type"]
        if kind == _SEGMENT:
            payload = base64.b64decode(doc.get("payload") or "", validate=True)
            return Segment(payload) if payload else None
        if kind == _FILE:
            size = int(doc.get("size") or 0)
            if size < 0:
                raise ValueError(f"negative size {size}")
            raw = doc.get("name_raw")  # set instead of name when the name is not UTF-8
            name = base64.b64decode(raw, validate=True) if raw else str(doc.get("name") or "").encode()
            return FileEntry(safe_name(name), size) if size else None
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise StoreError(f"malformed tar-split entry {_preview(line)}: {exc}") from exc
    raise StoreError(f"unknown tar-split entry type {kind!r} in {_preview(line)}")


def safe_name(name: bytes) -> bytes:
    """A tar member name as a path relative to the diff dir; StoreError if it could escape it."""
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if name.startswith(b"/") or b".." in parts or b"\0" in name or not parts:
        raise StoreError(f"unsafe file name {name!r} in the layer store's tar-split")
    return b"/".join(parts)


def tar_size(entries: Iterator[Segment | FileEntry | None]) -> int:
    """Bytes of the tar the entries reassemble into."""
    return sum(e.size if isinstance(e, FileEntry) else len(e.payload) for e in entries if e is not None)


def unusable_reason(info: Mapping[str, Any]) -> str | None:
    """Why a daemon's `docker info` rules out reading its store directly (pure); None if usable."""
    driver = info.get("Driver")
    if driver != "overlay2":
        return f"storage driver is {driver!r}, not overlay2"
    if "io.containerd.snapshotter" in json.dumps(info, default=str):
        return "the daemon uses the containerd image store"
    if not info.get("DockerRootDir"):
        return "docker info has no DockerRootDir"
    return None


def _preview(line: bytes | str) -> str:
    text = line if isinstance(line, str) else line.decode("utf-8", "replace")
    return repr(text[:80])


# ---- the store ---------------------------------------------------------------------------------
class LayerStore:
    """One image's layers and config in a readable overlay2 store of the daemon we talk to."""

    def __init__(self, root: Path, image: ImageInfo, config: bytes) -> None:
        self.root = root
        self.image = image
        self._config = config
        self._chains = chain_ids(image.diff_ids)

    @classmethod
    def open(cls, client: _InfoClient, image: ImageInfo) -> LayerStore | None:
        """The store, or None (reason logged at info) when it is not the daemon's readable overlay2 store."""
        reason, store = cls._try_open(client, image)
        if store is None:
            log.info("reading %s with docker save, not from the layer store: %s", image.ref, reason)
        return store

    @classmethod
    def _try_open(cls, client: _InfoClient, image: ImageInfo) -> tuple[str, LayerStore | None]:
        if not callable(getattr(client, "info", None)):
            return "the Docker client cannot describe its daemon", None
        try:
            info = daemon_info(client)
        except Exception as exc:  # noqa: BLE001 - any failure only means "use docker save"
            return f"docker info failed: {exc}", None
        reason = unusable_reason(info)
        if reason:
            return reason, None
        root = Path(str(info["DockerRootDir"]))
        imagedb = root / "image" / "overlay2"
        if not os.access(imagedb, os.R_OK | os.X_OK):
            return f"{root} is not readable here (another machine or VM, or not root)", None
        try:
            config = (imagedb / "imagedb" / "content" / "sha256" / image.id_hex).read_bytes()
        except OSError as exc:
            return f"the image config is not in {imagedb}: {exc.strerror}", None
        if f"sha256:{hashlib.sha256(config).hexdigest()}" != image.id:
            return f"{imagedb} holds another config for {image.id[:19]} (not this daemon's store)", None
        return "", cls(root, image, config)

    def config(self) -> bytes:
        """The image's raw config JSON (verified: its sha256 is the image id)."""
        return self._config

    def layer_dir(self, index: int) -> Path:
        return self.root / "image" / "overlay2" / "layerdb" / "sha256" / self._chains[index].split(":", 1)[-1]

    def diff_dir(self, index: int) -> Path:
        """The layer's unpacked files (overlay2/<cache-id>/diff)."""
        try:
            cache_id = (self.layer_dir(index) / "cache-id").read_text().strip()
            recorded = (self.layer_dir(index) / "diff").read_text().strip()
        except OSError as exc:
            raise StoreError(f"layer {index} of {self.image.ref} is not in the layer store: {exc}") from exc
        if recorded != self.image.diff_ids[index]:
            raise StoreError(f"layer store entry for layer {index} of {self.image.ref} holds {recorded[:19]}")
        if not cache_id or "/" in cache_id or cache_id in (".", ".."):
            raise StoreError(f"layer {index} of {self.image.ref} has a bad cache-id {cache_id!r}")
        return self.root / "overlay2" / cache_id / "diff"

    def entries(self, index: int) -> Iterator[Segment | FileEntry | None]:
        """The parsed tar-split of one layer, streamed."""
        path = self.layer_dir(index) / "tar-split.json.gz"
        try:
            with gzip.open(path, "rb") as fh:
                for line in fh:
                    if line.strip():
                        yield parse_entry(line)
        except (OSError, EOFError, zlib.error) as exc:
            raise StoreError(f"reading {path} failed: {exc}") from exc

    def layer_size(self, index: int) -> int:
        """Bytes of the layer tar (one quick pass over its tar-split)."""
        return tar_size(self.entries(index))

    def open_layer(self, index: int) -> Iterator[bytes]:
        """The layer tar exactly as `docker save` writes it, in chunks of about 1 MiB."""
        diff = os.fsencode(self.diff_dir(index))
        buf = bytearray()
        for entry in self.entries(index):
            if isinstance(entry, Segment):
                buf += entry.payload
            elif isinstance(entry, FileEntry):
                for piece in _file_bytes(diff, entry):
                    if not buf and len(piece) == CHUNK:
                        yield piece  # big files pass through without a copy
                        continue
                    buf += piece
                    if len(buf) >= CHUNK:
                        yield bytes(buf)
                        buf.clear()
            if len(buf) >= CHUNK:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)


def _file_bytes(diff: bytes, entry: FileEntry) -> Iterator[bytes]:
    """Exactly entry.size bytes of one regular file of the diff dir (no symlink at the end)."""
    path = diff + b"/" + entry.name
    shown = os.fsdecode(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise StoreError(f"layer file {shown} cannot be read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb", buffering=0) as fh:
        left = entry.size
        while left:
            data = fh.read(min(left, CHUNK))
            if not data:
                raise StoreError(f"layer file {shown} is {entry.size - left} bytes, the layer says {entry.size}")
            left -= len(data)
            yield data
