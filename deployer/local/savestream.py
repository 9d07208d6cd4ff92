"""Reading a `docker save` stream on the fly: which tar entry is what, and a chunk reader.

Two layouts exist. Docker < 25 ("legacy"): `<v1 id>/{VERSION,json,layer.tar}` per layer and
`<image id hex>.json`, all sorted by NAME (the daemon tars a temp dir), manifest.json last; so the
layer order is unknown while streaming. Each dir's `json` precedes its `layer.tar`, and a v1 id
is a pure function of the chain (moby image/v1.CreateID), so `identify_v1` maps a dir to its
layer index before its layer.tar arrives (the top layer is the one whose json has a config).
Docker >= 25 (OCI):
`blobs/sha256/<hex>`; with the classic store a layer blob is the uncompressed tar named by its
diff id and the config is named by the image id; with the containerd store layer blobs keep
their registry compression and are named by the compressed digest, so those are identified by
decompressing and hashing them.
"""
from __future__ import annotations

import hashlib
import io
import json
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


def classify(name: str, config_digest: str, diff_ids: frozenset[str]) -> Entry:
    """Classify one tar entry by name alone (pure). On the containerd store the blob named after
    the image id is its manifest or index: the config is named by the config digest."""
    image_hex = config_digest.split(":", 1)[-1]
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


_EPOCH = "1970-01-01T00:00:00Z"


def legacy_dir(name: str, suffix: str) -> str | None:
    """The v1 id dir of a legacy `<hex>/json` or `<hex>/layer.tar` entry, else None."""
    name = name.removeprefix("./")
    head, _, tail = name.partition("/")
    return head if tail == suffix and len(head) == 64 else None


def v1_ids(chain: tuple[str, ...], container_config: object) -> dict[str, int]:
    """v1 id hex -> layer index for every non-top layer, as moby's CreateID computes it.

    A non-top layer's v1 image is constant except for the chain: created = epoch, an empty
    container_config (taken from the stream itself, since its fields vary by Docker version).
    """
    cc = json.dumps(container_config, separators=(",", ":"))
    out: dict[str, int] = {}
    parent = ""
    for i, layer_id in enumerate(chain[:-1]):
        doc = f'{{"container_config":{cc},"created":"{_EPOCH}","layer_id":"{layer_id}"'
        doc += f',"parent":"{parent}"}}' if parent else "}"
        v1 = hashlib.sha256(doc.encode()).hexdigest()
        out[v1] = i
        parent = f"sha256:{v1}"
    return out


def identify_v1(data: bytes, chain: tuple[str, ...]) -> int | None:
    """Layer index of a legacy `<v1 id>/json`; None when it cannot be told (caller then hashes)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not chain:
        return None
    if "config" in doc or doc.get("created", _EPOCH) != _EPOCH:
        return len(chain) - 1  # only the top layer carries the image's own v1 config and time
    return v1_ids(chain, doc.get("container_config")).get(str(doc.get("id")))


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
