"""Host entries as inventories write them: `name[:port]` with `[a:b(:step)]` ranges.

Pure functions; the behaviour follows Ansible's inventory plugins (zero-padded numeric
ranges, single-letter alphabetic ranges, strides, several ranges in one name).
"""
from __future__ import annotations

import ipaddress
import re
import string

_BRACKETED_PORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_NAME_PORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE | re.UNICODE)
_IPV4_PART = r"(?:[01]?[0-9]{1,2}|2[0-4][0-9]|25[0-5]|\[[0-9]+:[0-9]+(?::[0-9]+)?\])"
_IPV4 = re.compile(rf"^(?:{_IPV4_PART}\.){{3}}{_IPV4_PART}$")


class RangeError(ValueError):
    """A host range such as `gpu[04:01]` that cannot be expanded."""


def parse_address(entry: str) -> tuple[str, int | None] | None:
    """`gpu01:2222` -> ('gpu01', 2222); `[::1]:22` -> ('::1', 22); None when not a host address."""
    name, port = entry, None
    for pattern in (_BRACKETED_PORT, _NAME_PORT):
        m = pattern.match(name)
        if m:
            name, port = m.group(1), int(m.group(2))
    if _IPV4.match(name) or _HOSTNAME.match(name) or _is_ipv6(name):
        return name, port
    return None


def _is_ipv6(name: str) -> bool:
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return True


def split_port(entry: str) -> tuple[str, int | None]:
    """Like parse_address, but an unrecognised entry is kept whole as the host name (as Ansible does)."""
    return parse_address(entry) or (entry, None)


def has_range(name: str) -> bool:
    return "[" in name


def expand(name: str) -> list[str]:
    """Expand every `[begin:end(:step)]` range in a host name exactly as Ansible does; RangeError when it fails.

    Like Ansible: a numeric range whose begin is past its end expands to nothing, a letter bound
    may be several letters (it is found in a-zA-Z: `[ab:d]` runs from a to d), and a letter range
    must not run backwards.
    """
    if not has_range(name):
        return [name]
    parts = name.replace("[", "|", 1).replace("]", "|", 1).split("|")
    if len(parts) != 3:
        raise RangeError(f"unclosed range (or a '|') in {name!r}")
    head, body, tail = parts
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise RangeError(f"host range [{body}] in {name!r} must be begin:end or begin:end:step")
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise RangeError(f"host range [{body}] in {name!r} must specify an end value")
    width = 0
    if begin[0] == "0" and len(begin) > 1:
        width = len(begin)
        if len(end) != width:
            raise RangeError(f"host range [{body}] in {name!r}: begin and end must have the same zero-padded width")
    items: list[str]
    letters = string.ascii_letters
    if step_text.strip() in ("0", "-0", "+0"):
        raise RangeError(f"host range [{body}] in {name!r}: step must not be zero")
    try:
        step = int(step_text)
        if begin in letters and end in letters:
            lo, hi = letters.index(begin), letters.index(end)
            if lo > hi:
                raise RangeError(f"host range [{body}] in {name!r} must have begin <= end")
            items = list(letters[lo : hi + 1 : step])
        else:
            items = [str(i).zfill(width) for i in range(int(begin), int(end) + 1, step)]
    except ValueError as exc:
        if isinstance(exc, RangeError):
            raise
        raise RangeError(
            f"host range [{body}] in {name!r}: use numbers ([01:10]), letters ([a:f]) and a non-zero step"
        ) from None
    out: list[str] = []
    for item in items:
        out.extend(expand(f"{head}{item}{tail}"))
    return out
