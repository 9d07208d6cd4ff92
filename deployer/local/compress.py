"""Streaming compressors and decompressors for layer files (zstd via zstandard, gzip via zlib)."""
from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

import zstandard

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


def codec_level(codec: str, level: int) -> int:
    """The level actually used: zstd 1..22 as given; gzip clamped to zlib's 1..9."""
    if codec == "gzip":
        return min(max(level, 1), 9)
    if codec == "zstd":
        return min(max(level, 1), 22)
    raise ValueError(f"unknown codec {codec!r} (expected zstd or gzip)")


def compressor(codec: str, level: int, raw_size: int | None = None, threads: int = -1) -> Compressor:
    """A streaming compressor; zstd runs multi-threaded (threads=-1: one worker per core)."""
    level = codec_level(codec, level)
    if codec == "zstd":
        cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_content_size=raw_size is not None)
        return _ZstdCompressor(cctx.compressobj(size=raw_size if raw_size is not None else -1))
    return zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip header + trailer


class _ZstdCompressor:
    def __init__(self, cobj: zstandard.ZstdCompressionObj) -> None:
        self._cobj = cobj

    def compress(self, data: bytes) -> bytes:
        return self._cobj.compress(data)

    def flush(self) -> bytes:
        return self._cobj.flush()


def compress_bytes(codec: str, level: int, data: bytes) -> bytes:
    """Compress a small buffer into one complete frame (zstd) or member (gzip)."""
    c = compressor(codec, level, raw_size=len(data), threads=0)
    return c.compress(data) + c.flush()


def sniff(head: bytes) -> str | None:
    """'gzip' or 'zstd' when head starts with that format's magic, else None."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def decompressor(codec: str) -> Callable[[bytes], bytes]:
    """A function feeding compressed chunks and returning decompressed bytes (multi-frame safe)."""
    if codec == "gzip":
        state = {"d": zlib.decompressobj(31)}

        def gunzip(data: bytes) -> bytes:
            out = []
            while data:
                d = state["d"]
                out.append(d.decompress(data))
                data = d.unused_data
                if d.eof:
                    state["d"] = zlib.decompressobj(31)  # next member of a multi-member file
            return b"".join(out)

        return gunzip
    if codec == "zstd":
        dobj = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
        return dobj.decompress
    raise ValueError(f"unknown codec {codec!r}")
