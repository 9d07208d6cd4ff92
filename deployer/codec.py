"""Which compression a host's `docker load` can take for layer files.

Verified on the testbed's dockerd 20.10.24 (see tests/integration/test_export.py):
- a save-format tar whose `<dir>/layer.tar` entries are gzip files loads and yields the same
  image id (tarexport's loadLayer runs archive.DecompressStream on each layer file);
- the same with zstd layer files fails on 20.10 ("Error processing tar file(exit status 1):
  archive/tar: invalid tar header"; DecompressStream learned zstd in Docker 23), so older
  daemons need the host to run `zstd -dc` first;
- the outer load stream may be gzip too (and zstd from 23), and concatenated gzip members or
  zstd frames decode as one stream.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

CodecName = Literal["zstd", "gzip"]
CODECS: tuple[CodecName, ...] = ("zstd", "gzip")  # every layer codec deployer makes
ZSTD_NATIVE_SINCE = (23, 0)
SUFFIX = {"zstd": ".zst", "gzip": ".gz"}


@dataclass(frozen=True)
class CodecChoice:
    """The codec to compress layers with, and whether the host must decompress before load."""

    name: CodecName
    host_decompress: bool = False


def parse_version(version: str) -> tuple[int, int] | None:
    """(major, minor) of a Docker server version such as '20.10.24' or '24.0.7+dfsg1'."""
    match = re.match(r"\s*v?(\d+)\.(\d+)", version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def reads_zstd(server_version: str) -> bool:
    """Whether Docker at SERVER_VERSION reads zstd layers itself, in `docker load` and `docker pull`
    alike (Docker 23 and later; 20.10 fails both with "archive/tar: invalid tar header"). An
    unparseable version does not."""
    parsed = parse_version(server_version)
    return parsed is not None and parsed >= ZSTD_NATIVE_SINCE


def choose_codec(server_version: str, decompressors: frozenset[str]) -> CodecChoice:
    """Best codec the host can load: native zstd (>= 23), zstd via host `zstd -dc`, else gzip.

    An unparseable version is treated as old: gzip is the one format every `docker load` reads.
    """
    if reads_zstd(server_version):
        return CodecChoice("zstd", host_decompress=False)
    if "zstd" in decompressors:
        return CodecChoice("zstd", host_decompress=True)
    return CodecChoice("gzip", host_decompress=False)
