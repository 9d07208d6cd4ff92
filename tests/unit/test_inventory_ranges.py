"""Host ranges and host:port entries (pure)."""
from __future__ import annotations

import pytest

from deployer.inventory.hostnames import RangeError, expand, parse_address, split_port
from deployer.inventory.values import Unsafe, ini_value


def test_zero_padded_numeric_range() -> None:
    assert expand("gpu[01:04]") == ["gpu01", "gpu02", "gpu03", "gpu04"]


def test_stride_and_unpadded() -> None:
    assert expand("node[1:9:2]") == ["node1", "node3", "node5", "node7", "node9"]
    assert expand("n[8:11]") == ["n8", "n9", "n10", "n11"]


def test_letters_and_case_crossing() -> None:
    assert expand("h-[a:c]") == ["h-a", "h-b", "h-c"]
    assert expand("x[y:B]") == ["xy", "xz", "xA", "xB"]
    assert expand("s[a:k:5]") == ["sa", "sf", "sk"]


def test_two_ranges_and_tail() -> None:
    assert expand("r[1:2]-n[01:02].dc") == ["r1-n01.dc", "r1-n02.dc", "r2-n01.dc", "r2-n02.dc"]


def test_empty_begin_means_zero() -> None:
    assert expand("h[:2]") == ["h0", "h1", "h2"]


def test_backwards_and_multi_letter_ranges_as_ansible() -> None:
    # ansible-core 2.19 (plugins/inventory/__init__.py expand_hostname_range): a numeric range
    # that runs backwards is empty, a negative step counts down from begin, and a letter bound
    # of several letters is found in a-zA-Z (so [ab:d] runs a..d, [bc:bc] is just b).
    assert expand("gpu[04:01]") == []
    assert expand("w[3:1:-1]") == ["w3"]
    assert expand("z[ab:d]") == ["za", "zb", "zc", "zd"]
    assert expand("z[bc:bc]") == ["zb"]
    assert expand("z[a:de]") == ["za", "zb", "zc", "zd"]


@pytest.mark.parametrize(
    "bad, words",
    [
        ("gpu[c:a]", "begin <= end"),
        ("gpu[bc:ab]", "begin <= end"),
        ("gpu[01:4]", "same zero-padded width"),
        ("gpu[1]", "begin:end"),
        ("gpu[1:2:3:4]", "begin:end"),
        ("gpu[1:]", "end value"),
        ("gpu[1:5:0]", "step must not be zero"),
        ("gpu[a:c:0]", "step must not be zero"),
        ("gpu[aa:ac]", "numbers"),
        ("gpu[a:cc]", "numbers"),
        ("gpu[1:3:x]", "numbers"),
        ("gpu[1:x]", "numbers"),
        ("gpu[1:3", "unclosed"),
    ],
)
def test_bad_ranges(bad: str, words: str) -> None:
    with pytest.raises(RangeError, match=words):
        expand(bad)


def test_ports() -> None:
    assert split_port("gpu01:2222") == ("gpu01", 2222)
    assert split_port("gpu[01:04]:2222") == ("gpu[01:04]", 2222)
    assert split_port("gpu[01:04]") == ("gpu[01:04]", None)
    assert split_port("[2001:db8::1]:22") == ("2001:db8::1", 22)
    assert split_port("2001:db8::1") == ("2001:db8::1", None)
    assert split_port("10.0.0.[1:3]:2200") == ("10.0.0.[1:3]", 2200)


def test_parse_address_rejects_patterns() -> None:
    assert parse_address("gpus:!gpu03") is None
    assert parse_address("a:b") is None
    assert parse_address("web_") is None


@pytest.mark.parametrize(
    "text, value",
    [
        ("5", 5),
        ("1.5", 1.5),
        ("True", True),
        ("true", "true"),
        ("yes", "yes"),
        ("None", None),
        ('"42"', "42"),
        ("[1, 2]", [1, 2]),
        ("(1, 2)", [1, 2]),
        ("{'a': 1}", {"a": 1}),
        ("1+2j", "(1+2j)"),
        ("...", "..."),
        ("b'x'", Unsafe("x")),  # ansible-core 2.19 lists a bytes literal as unsafe text (2.18: plain text)
        ("two words", "two words"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_ini_values_typed_like_ansible(text: str, value: object) -> None:
    assert ini_value(text) == value
    assert type(ini_value(text)) is type(value)
