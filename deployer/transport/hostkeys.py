"""known_hosts: read, match (plain, hashed, patterns, @revoked), verify strictly, record.

The file is only ever written by `deploy inventory trust` (record/replace); verification
never modifies it.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeys

from deployer.errors import HostKeyError


@dataclass(frozen=True)
class KnownKey:
    """One key line of a known_hosts file."""

    names: tuple[str, ...]
    key: paramiko.PKey
    lineno: int
    marker: str | None = None  # "@revoked" / "@cert-authority"


@dataclass(frozen=True)
class KeyStatus:
    """How an offered key compares with what known_hosts records for a host."""

    state: str  # "trusted" | "unknown" | "changed" | "revoked"
    expected: tuple[KnownKey, ...] = ()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint: 'SHA256:base64'."""
    return str(key.fingerprint)


def describe(key: paramiko.PKey) -> str:
    """'ssh-ed25519 SHA256:...' for messages."""
    return f"{key.get_name()} {fingerprint(key)}"


def read(path: str) -> list[KnownKey]:
    """Every usable key line in the file; a missing file is empty. Bad lines are skipped like ssh does."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HostKeyError("-", f"cannot read known_hosts file {path}: {exc}") from exc
    out: list[KnownKey] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        entry = parse_line(raw, lineno)
        if entry is not None:
            out.append(entry)
    return out


def parse_line(raw: str, lineno: int = 0) -> KnownKey | None:
    """One known_hosts line -> KnownKey, or None for comments, blanks, bad or unsupported lines."""
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    fields = line.split()
    marker = None
    if fields[0].startswith("@"):
        marker, fields = fields[0], fields[1:]
    if len(fields) < 3:
        return None
    names, key_type, data = fields[0], fields[1], fields[2]
    try:
        key = paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
    except (binascii.Error, ValueError, paramiko.SSHException, paramiko.pkey.UnknownKeyType):
        return None
    return KnownKey(tuple(names.split(",")), key, lineno, marker)


def name_matches(patterns: Sequence[str], name: str) -> bool:
    """ssh's rule: any positive match (plain, hashed or glob) and no negated match."""
    hit = False
    for pat in patterns:
        if pat.startswith("|1|"):
            try:
                if HostKeys.hash_host(name, pat) == pat:
                    hit = True
            except (binascii.Error, ValueError, AssertionError):
                continue
        elif pat.startswith("!"):
            if _glob(pat[1:], name):
                return False
        elif _glob(pat, name):
            hit = True
    return hit


def _glob(pattern: str, name: str) -> bool:
    # ssh patterns know only * and ?; `[addr]:port` brackets are literal.
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == name.lower()
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.IGNORECASE) is not None


def keys_for(entries: Iterable[KnownKey], names: Sequence[str]) -> list[KnownKey]:
    """Entries recorded for any of the names (markers included)."""
    return [e for e in entries if any(name_matches(e.names, n) for n in names)]


def check(entries: Iterable[KnownKey], names: Sequence[str], key: paramiko.PKey) -> KeyStatus:
    """Pure verdict on an offered key; `changed` also covers a host offering an unrecorded key type."""
    found = keys_for(entries, names)
    if any(e.marker == "@revoked" and _same(e.key, key) for e in found):
        return KeyStatus("revoked", tuple(e for e in found if e.marker == "@revoked"))
    plain = tuple(e for e in found if e.marker is None)
    if not plain:
        return KeyStatus("unknown")
    if any(_same(e.key, key) for e in plain):
        return KeyStatus("trusted", plain)
    return KeyStatus("changed", plain)


def _same(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


def preferred_types(entries: Iterable[KnownKey], names: Sequence[str]) -> list[str]:
    """Key types recorded for the host, so negotiation asks for a key we can check."""
    types: list[str] = []
    for e in keys_for(entries, names):
        if e.marker is None and e.key.get_name() not in types:
            types.append(e.key.get_name())
    return types


def verify(host: str, names: Sequence[str], key: paramiko.PKey, known_hosts: str, *, trust_name: str) -> None:
    """Raise HostKeyError unless the offered key is recorded for one of `names`."""
    status = check(read(known_hosts), names, key)
    if status.state != "trusted":
        raise _refusal(host, names, key, known_hosts, status, trust_name)


def _refusal(host: str, names: Sequence[str], key: paramiko.PKey, known_hosts: str, status: KeyStatus,
             trust_name: str) -> HostKeyError:
    where = names[0] if names else host
    if status.state == "unknown":
        return HostKeyError(
            host,
            f"host key of {where} is not known ({describe(key)}); not connecting (known_hosts: {known_hosts})",
            hint=f"verify the fingerprint, then run: deploy inventory trust {trust_name}",
            state="unknown",
        )
    expected = "\n".join(
        f"    expected: {describe(e.key)}  ({known_hosts}:{e.lineno})" for e in status.expected
    )
    if status.state == "revoked":
        return HostKeyError(host, f"host key of {where} is REVOKED in {known_hosts}: {describe(key)}; not connecting",
                            state="revoked")
    return HostKeyError(
        host,
        f"WARNING: HOST KEY OF {where} HAS CHANGED. Someone could be intercepting the connection "
        f"(man-in-the-middle), or the host was reinstalled.\n{expected}\n    offered:  {describe(key)}\n"
        f"  Nothing was sent and {known_hosts} was not modified.",
        hint=(
            "verify the offered fingerprint out of band (on the host's console: "
            "ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub); only then run: "
            f"deploy inventory trust {trust_name} --replace"
        ),
        state="changed",
    )


def key_lines(names: Sequence[str], key: paramiko.PKey, *, hashed: bool) -> list[str]:
    """known_hosts lines for the key: one line with all names, or one hashed line per name."""
    if hashed:
        return [f"{HostKeys.hash_host(n)} {key.get_name()} {key.get_base64()}" for n in names]
    return [f"{','.join(names)} {key.get_name()} {key.get_base64()}"]


def file_is_hashed(path: str) -> bool:
    """True when the existing file records hosts hashed (so new lines should be too)."""
    entries = read(path)
    return bool(entries) and all(all(n.startswith("|1|") for n in e.names) for e in entries)


def record(path: str, names: Sequence[str], key: paramiko.PKey, *, hashed: bool, replace: bool = False) -> None:
    """Append the key for names (keeping every existing line); with replace, drop their old keys first."""
    p = Path(path)
    try:
        old = p.read_text() if p.exists() else ""
    except OSError as exc:
        raise HostKeyError(names[0], f"cannot read {path}: {exc}") from exc
    lines = old.splitlines()
    if replace:
        lines = [ln for ln in lines if not _is_plain_entry_for(ln, names)]
    lines.extend(key_lines(names, key, hashed=hashed))
    _write_atomic(p, "\n".join(lines) + "\n")


def _is_plain_entry_for(raw: str, names: Sequence[str]) -> bool:
    entry = parse_line(raw)
    return entry is not None and entry.marker is None and any(name_matches(entry.names, n) for n in names)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".known_hosts.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise HostKeyError("-", f"cannot write {path}: {exc}") from exc
