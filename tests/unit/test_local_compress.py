from __future__ import annotations

import gzip
import io
import os

import pytest
import zstandard

from deployer.local.compress import (
    codec_level,
    compress_bytes,
    compressor,
    decompressor,
    sniff,
)


class Sink(io.BytesIO):
    pass


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_streaming_round_trip(codec: str) -> None:
    data = os.urandom(3 << 20) + b"a" * (5 << 20)
    sink = Sink()
    c = compressor(codec, 3, sink)
    for i in range(0, len(data), 1 << 20):
        c.write(data[i : i + (1 << 20)])
    c.finish()
    out = sink.getvalue()
    assert sniff(out) == codec
    assert len(out) < len(data)
    inflate = decompressor(codec)
    assert b"".join(inflate(out[i : i + 4096]) for i in range(0, len(out), 4096)) == data
    if codec == "gzip":
        assert gzip.decompress(out) == data
    else:
        assert zstandard.frame_content_size(out) == -1  # the frame names no size: see the next test
        assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_the_same_layer_gives_the_same_bytes_however_it_is_read(codec: str) -> None:
    # a resumed ship appends to what a killed one sent, compressed again, maybe read another way
    data = os.urandom(1 << 20) + b"text line\n" * 300_000

    def compressed(step: int) -> bytes:
        sink = Sink()
        c = compressor(codec, 3, sink)
        for i in range(0, len(data), step):
            c.write(data[i : i + step])
        c.finish()
        return sink.getvalue()

    assert compressed(1 << 20) == compressed(65_536) == compressed(3_000_001)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_concatenated_frames_decode_as_one_stream(codec: str) -> None:
    joined = compress_bytes(codec, 3, b"hello ") + compress_bytes(codec, 3, b"") + compress_bytes(codec, 3, b"world")
    assert decompressor(codec)(joined) == b"hello world"


def test_levels_and_sniff() -> None:
    assert codec_level("gzip", 19) == 9 and codec_level("gzip", 0) == 1
    assert codec_level("zstd", 19) == 19
    with pytest.raises(ValueError):
        codec_level("lz4", 3)
    assert sniff(b"{}") is None


def test_zstd_finds_repeats_megabytes_back() -> None:
    # copies of a 2-3 MB binary in one layer: a repeat 3 MB back must cost next to nothing
    # (multi-threaded zstd with small jobs, and zstd -3's 2 MB window, both miss it)
    block = os.urandom(3 << 20)
    sink = Sink()
    c = compressor("zstd", 3, sink)
    for i in range(0, 2 * len(block), 1 << 20):
        c.write((block + block)[i : i + (1 << 20)])
    c.finish()
    assert len(sink.getvalue()) < len(block) * 1.02
    assert zstandard.ZstdDecompressor().decompressobj().decompress(sink.getvalue()) == block + block
