"""Reading a `docker save` stream on the fly: which tar entry is what, and a chunk reader.

Two layouts exist. Docker < 25 ("legacy"): `<v1 id>/layer.tar` (uncompressed, written in layer
order, bottom first), `<image id hex>.json`, manifest.json last. Docker >= 25 (OCI):
`blobs/sha256/<hex>`; with the classic store a layer blob is the uncompressed tar named by its
diff id and the config is named by the image id; with the containerd store layer blobs keep
their registry compression and are named by the compressed digest, so those are identified by
decompressing and hashing them.
"""
from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

_BLOB = re.compile(r"^(?:\./)?blobs/sha256/([0-9a-f]{64})$")
_LEGACY_LAYER = re.compile(r"^(?:\./)?[0-9a-f]{64}/layer\.tar$")
# Manifests, indexes and configs are small JSON; a compressed layer is never this small
# except for empty layers, which we still catch because they start with a codec magic.
Kind = Literal["config", "layer", "maybe-layer", "other"]


@dataclass(frozen=True)
class Entry:
    """What a save-stream tar entry holds: kind, and the diff id when the name tells it."""

    kind: Kind
    diff_id: str | None = None


def classify(name: str, image_id: str, diff_ids: frozenset[str]) -> Entry:
    """Classify one tar entry by name alone (pure)."""
    image_hex = image_id.split(":", 1)[-1]
    name = name.removeprefix("./")
    if name in (f"{image_hex}.json", f"blobs/sha256/{image_hex}"):
        return Entry("config")
    if _LEGACY_LAYER.match(name):
        return Entry("layer")  # identity by order, confirmed by hash
    m = _BLOB.match(name)
    if m:
        digest = f"sha256:{m.group(1)}"
        if digest in diff_ids:
            return Entry("layer", digest)
        return Entry("maybe-layer")  # a manifest/index, or a compressed layer (containerd store)
    return Entry("other")


class StreamReader(io.RawIOBase):
    """A read()-able file over an iterator of byte chunks; counts bytes read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buf[self._pos :]] + list(self._chunks)
            self._buf, self._pos = b"", 0
            data = b"".join(parts)
            self.bytes_read += len(data) - len(parts[0])
            return data
        while self._pos >= len(self._buf):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._buf, self._pos = chunk, 0  # an empty chunk is not the end of the stream
            self.bytes_read += len(chunk)
        out = self._buf[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)
