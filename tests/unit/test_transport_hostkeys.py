"""Unit tests for known_hosts matching, strict verification and recording."""
from __future__ import annotations

from pathlib import Path

import paramiko
import pytest
from paramiko.hostkeys import HostKeys

from deployer.errors import HostKeyError
from deployer.transport import hostkeys


def ed25519() -> paramiko.PKey:
    import io

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))


def ecdsa() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture()
def keys() -> tuple[paramiko.PKey, paramiko.PKey]:
    return ed25519(), ed25519()


def entry(text: str, lineno: int = 1) -> hostkeys.KnownKey:
    parsed = hostkeys.parse_line(text, lineno)
    assert parsed is not None
    return parsed


def line(names: str, key: paramiko.PKey, marker: str = "") -> str:
    return f"{marker + ' ' if marker else ''}{names} {key.get_name()} {key.get_base64()}"


def test_parse_line_and_skips(keys) -> None:
    a, _ = keys
    assert hostkeys.parse_line("# comment") is None
    assert hostkeys.parse_line("   ") is None
    assert hostkeys.parse_line("host ssh-ed25519 !!notbase64!!") is None
    assert hostkeys.parse_line("host ssh-unknown AAAA") is None
    parsed = entry(line("gpu01,10.0.0.1", a), 7)
    assert parsed.names == ("gpu01", "10.0.0.1") and parsed.lineno == 7 and parsed.marker is None
    revoked = hostkeys.parse_line(line("*", a, "@revoked"))
    assert revoked is not None and revoked.marker == "@revoked"


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        (["gpu01"], "gpu01", True),
        (["GPU01"], "gpu01", True),
        (["gpu0?"], "gpu01", True),
        (["10.0.0.*"], "10.0.0.7", True),
        (["10.0.0.*", "!10.0.0.7"], "10.0.0.7", False),
        (["[10.0.0.1]:2222"], "[10.0.0.1]:2222", True),
        (["[10.0.0.1]:2222"], "10.0.0.1", False),
        (["10.0.0.1"], "[10.0.0.1]:2222", False),
        ([HostKeys.hash_host("gpu01")], "gpu01", True),
        ([HostKeys.hash_host("gpu01")], "gpu02", False),
        (["|1|bad|hash"], "gpu01", False),
    ],
)
def test_name_matches(patterns: list[str], name: str, expected: bool) -> None:
    assert hostkeys.name_matches(patterns, name) is expected


def test_check_trusted_unknown_changed_revoked(keys) -> None:
    a, b = keys
    entries = [entry(line("gpu01,10.0.0.1", a), 1)]
    assert hostkeys.check(entries, ["10.0.0.1", "gpu01"], a).state == "trusted"
    assert hostkeys.check(entries, ["10.0.0.2", "gpu02"], a).state == "unknown"
    changed = hostkeys.check(entries, ["10.0.0.1", "gpu01"], b)
    assert changed.state == "changed" and changed.expected[0].key == a
    # found only by inventory name: still checked
    assert hostkeys.check(entries, ["10.9.9.9", "gpu01"], b).state == "changed"
    revoked = [entry(line("*", b, "@revoked"), 1), *entries]
    assert hostkeys.check(revoked, ["10.0.0.1"], b).state == "revoked"


def test_a_host_offering_an_unrecorded_key_type_is_changed(keys) -> None:
    a, _ = keys
    entries = [entry(line("gpu01", a), 1)]
    assert hostkeys.check(entries, ["gpu01"], ecdsa()).state == "changed"


def test_preferred_types_come_from_known_hosts(keys) -> None:
    a, _ = keys
    e = ecdsa()
    entries = [entry(line("gpu01", e), 1), entry(line("gpu01", a), 2),
               entry(line("other", a), 3)]
    assert hostkeys.preferred_types(entries, ["gpu01"]) == [e.get_name(), "ssh-ed25519"]
    assert hostkeys.preferred_types(entries, ["nobody"]) == []


def test_verify_unknown_names_trust_command(tmp_path: Path, keys) -> None:
    a, _ = keys
    with pytest.raises(HostKeyError) as err:
        hostkeys.verify("gpu01", ["10.0.0.1", "gpu01"], a, str(tmp_path / "kh"), trust_name="gpu01")
    assert "not known" in str(err.value) and "deploy inventory trust gpu01" in str(err.value)
    assert not (tmp_path / "kh").exists()


def test_verify_changed_is_loud_and_leaves_the_file_alone(tmp_path: Path, keys) -> None:
    a, b = keys
    kh = tmp_path / "kh"
    kh.write_text("# mine\n" + line("gpu01,10.0.0.1", a) + "\n")
    before = kh.read_bytes()
    with pytest.raises(HostKeyError) as err:
        hostkeys.verify("gpu01", ["10.0.0.1", "gpu01"], b, str(kh), trust_name="gpu01")
    msg = str(err.value)
    assert "HAS CHANGED" in msg and "man-in-the-middle" in msg
    assert hostkeys.fingerprint(a) in msg and hostkeys.fingerprint(b) in msg
    assert f"{kh}:2" in msg and "--replace" in msg
    assert kh.read_bytes() == before


def test_verify_trusted_with_hashed_entry(tmp_path: Path, keys) -> None:
    a, _ = keys
    kh = tmp_path / "kh"
    kh.write_text(line(HostKeys.hash_host("10.0.0.1"), a) + "\n")
    hostkeys.verify("gpu01", ["10.0.0.1", "gpu01"], a, str(kh), trust_name="gpu01")


def test_fingerprint_format(keys) -> None:
    a, _ = keys
    fp = hostkeys.fingerprint(a)
    assert fp.startswith("SHA256:") and not fp.endswith("=")
    assert hostkeys.describe(a) == f"ssh-ed25519 {fp}"


def test_record_appends_plain_and_keeps_content(tmp_path: Path, keys) -> None:
    a, b = keys
    kh = tmp_path / "sub" / "known_hosts"
    hostkeys.record(str(kh), ["10.0.0.1", "gpu01"], a, hashed=False)
    assert kh.read_text() == line("10.0.0.1,gpu01", a) + "\n"
    assert oct(kh.stat().st_mode & 0o777) == "0o600"
    hostkeys.record(str(kh), ["10.0.0.2"], b, hashed=False)
    assert kh.read_text().splitlines() == [line("10.0.0.1,gpu01", a), line("10.0.0.2", b)]


def test_record_hashed(tmp_path: Path, keys) -> None:
    a, _ = keys
    kh = tmp_path / "kh"
    hostkeys.record(str(kh), ["10.0.0.1", "gpu01"], a, hashed=True)
    lines = kh.read_text().splitlines()
    assert len(lines) == 2 and all(ln.startswith("|1|") for ln in lines)
    assert hostkeys.file_is_hashed(str(kh))
    assert hostkeys.check(hostkeys.read(str(kh)), ["gpu01"], a).state == "trusted"


def test_record_replace_drops_only_that_hosts_old_keys(tmp_path: Path, keys) -> None:
    a, b = keys
    other = ed25519()
    kh = tmp_path / "kh"
    kh.write_text("# keep me\n" + line("gpu01,10.0.0.1", a) + "\n" + line("gpu02", other) + "\n"
                  + line(HostKeys.hash_host("gpu01"), a) + "\n" + line("*", a, "@revoked") + "\n")
    hostkeys.record(str(kh), ["10.0.0.1", "gpu01"], b, hashed=False, replace=True)
    text = kh.read_text().splitlines()
    assert text == ["# keep me", line("gpu02", other), line("*", a, "@revoked"), line("10.0.0.1,gpu01", b)]


def test_read_missing_file_is_empty(tmp_path: Path) -> None:
    assert hostkeys.read(str(tmp_path / "nope")) == []
    assert hostkeys.file_is_hashed(str(tmp_path / "nope")) is False


def test_trust_decision_per_key_state(keys) -> None:
    """What `deploy inventory trust` does with an offered key: nothing, ask, or refuse (pure)."""
    from deployer.transport.config import ConnectSpec
    from deployer.transport.trust import Offer, decide

    a, b = keys
    spec = ConnectSpec("10.0.0.1", name="gpu01", known_hosts="/kh")

    def offered(state: str, *expected: hostkeys.KnownKey) -> Offer:
        return Offer("gpu01", spec, a, hostkeys.KeyStatus(state, expected))

    label = "gpu01 (10.0.0.1:22)"
    trusted = decide(offered("trusted"), label, replace=False)
    assert trusted.question is None and trusted.message.startswith(f"{label}: already trusted: ")
    new = decide(offered("unknown"), label, replace=False)
    assert new.question == "Trust it and record it in /kh?" and not new.replace and not new.warning
    with pytest.raises(HostKeyError, match="REVOKED") as revoked:
        decide(offered("revoked"), label, replace=True)
    assert revoked.value.state == "revoked"
    old = entry(line("gpu01", b), 3)
    with pytest.raises(HostKeyError, match="HAS CHANGED") as changed:
        decide(offered("changed", old), label, replace=False)
    assert changed.value.state == "changed" and "/kh was not modified" in str(changed.value)
    assert changed.value.hint and "--replace" in changed.value.hint
    replacing = decide(offered("changed", old), label, replace=True)
    assert replacing.replace and replacing.warning and "(/kh:3)" in replacing.message
    assert replacing.question == f"Replace the recorded key of {label} in /kh?"
