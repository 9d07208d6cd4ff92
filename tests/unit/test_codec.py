from __future__ import annotations

import pytest

from deployer.codec import CodecChoice, choose_codec, parse_version


@pytest.mark.parametrize(
    ("version", "expected"),
    [("20.10.24", (20, 10)), ("23.0.1", (23, 0)), ("24.0.7+dfsg1", (24, 0)), ("v28.2.2", (28, 2)), ("dev", None), ("", None)],
)
def test_parse_version(version: str, expected: tuple[int, int] | None) -> None:
    assert parse_version(version) == expected


@pytest.mark.parametrize("version", ["23.0.0", "24.0.7", "28.2.2", "29.0.1"])
def test_new_docker_reads_zstd_natively(version: str) -> None:
    assert choose_codec(version, frozenset()) == CodecChoice("zstd", host_decompress=False)
    assert choose_codec(version, frozenset({"zstd"})) == CodecChoice("zstd", host_decompress=False)


def test_old_docker_with_zstd_binary_decompresses_on_host() -> None:
    assert choose_codec("20.10.24", frozenset({"zstd", "gzip"})) == CodecChoice("zstd", host_decompress=True)


@pytest.mark.parametrize("tools", [frozenset(), frozenset({"gzip", "unpigz"})])
def test_old_docker_without_zstd_gets_gzip(tools: frozenset[str]) -> None:
    assert choose_codec("20.10.24", tools) == CodecChoice("gzip", host_decompress=False)


def test_unknown_version_is_treated_as_old() -> None:
    assert choose_codec("weird", frozenset()) == CodecChoice("gzip", host_decompress=False)
    assert choose_codec("weird", frozenset({"zstd"})) == CodecChoice("zstd", host_decompress=True)


def test_22_is_still_old() -> None:
    assert choose_codec("22.06.0-beta", frozenset()).name == "gzip"
