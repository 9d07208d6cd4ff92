"""`deploy inventory trust` and strict host keys against the testbed's real sshd keys."""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import paramiko
import pytest
import yaml

from tests.conftest import DeployRunner, Testbed


def inventory(testbed: Testbed, tmp_path: Path, known_hosts: Path, **host_vars: dict[str, object]) -> Path:
    """A copy of the testbed inventory with deploy_known_hosts pointing at a temp file."""
    data = yaml.safe_load(Path(testbed.inventory).read_text())
    data["all"]["vars"]["deploy_known_hosts"] = str(known_hosts)
    for name, extra in host_vars.items():
        data["all"]["hosts"][name].update(extra)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def real_key(testbed: Testbed, name: str) -> tuple[str, str]:
    """(key type, base64) of a testbed host, from the testbed's own known_hosts."""
    for line in Path(testbed.known_hosts).read_text().splitlines():
        names, ktype, b64 = line.split()[:3]
        if name in names.split(","):
            return ktype, b64
    raise AssertionError(f"{name} not in {testbed.known_hosts}")


def fingerprint(b64: str) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(b64)).digest()).decode().rstrip("=")


@pytest.fixture()
def run(deploy_cli: DeployRunner, tmp_path: Path):
    def go(inv: Path, *args: str) -> tuple[int, str, str]:
        return deploy_cli("-i", str(inv), *args, env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, input="")
    return go


def test_unknown_key_is_refused_then_trusted(testbed: Testbed, tmp_path: Path, run) -> None:
    kh = tmp_path / "known_hosts"
    inv = inventory(testbed, tmp_path, kh)
    ktype, b64 = real_key(testbed, "gpu01")

    code, out, err = run(inv, "inventory", "check", "gpu01", "--json")
    assert code == 1
    report = json.loads(out)[0]
    assert report["ok"] is False and "not known" in report["error"]
    assert "deploy inventory trust gpu01" in report["error"]
    assert not kh.exists()

    code, _, err = run(inv, "inventory", "trust", "gpu01")  # no tty, no --yes: refuses to guess
    assert code == 2 and "--yes" in err and not kh.exists()

    code, _, err = run(inv, "inventory", "trust", "gpu01", "--yes")
    assert code == 0, err
    assert fingerprint(b64) in err and ktype in err
    assert kh.read_text() == f"{testbed.hosts['gpu01'].address},gpu01 {ktype} {b64}\n"

    code, out, err = run(inv, "inventory", "check", "gpu01", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["ok"] is True

    code, _, err = run(inv, "inventory", "trust", "gpu01", "--yes")
    assert code == 0 and "already trusted" in err
    assert kh.read_text().count("\n") == 1


def test_changed_key_is_refused_loudly_and_never_replaced_silently(testbed: Testbed, tmp_path: Path, run) -> None:
    kh = tmp_path / "known_hosts"
    other = paramiko.ECDSAKey.generate()
    ktype, b64 = real_key(testbed, "gpu01")
    # a different key of the same type as the real one, so it is the type negotiated and compared
    fake_b64 = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))).decode()
    original = f"# my hosts\ngpu02 {other.get_name()} {other.get_base64()}\n10.213.0.11,gpu01 ssh-ed25519 {fake_b64}\n"
    kh.write_text(original)
    inv = inventory(testbed, tmp_path, kh)

    code, out, _ = run(inv, "inventory", "check", "gpu01", "--json")
    assert code == 1
    error = json.loads(out)[0]["error"]
    assert "HAS CHANGED" in error and "man-in-the-middle" in error and fingerprint(b64) in error
    assert kh.read_text() == original

    code, _, err = run(inv, "inventory", "trust", "gpu01", "--yes")
    assert code == 1 and "HAS CHANGED" in err and "--replace" in err and "Traceback" not in err
    assert kh.read_text() == original

    code, _, err = run(inv, "inventory", "trust", "gpu01", "--yes", "--replace")
    assert code == 0, err
    assert "HAS CHANGED" in err  # still loud when replacing
    assert kh.read_text() == (f"# my hosts\ngpu02 {other.get_name()} {other.get_base64()}\n"
                              f"{testbed.hosts['gpu01'].address},gpu01 {ktype} {b64}\n")
    code, out, err = run(inv, "inventory", "check", "gpu01", "--json")
    assert code == 0, err


def test_trust_through_a_jump_host_records_both_hashed(testbed: Testbed, tmp_path: Path, run) -> None:
    kh = tmp_path / "known_hosts"
    jump = testbed.hosts["gpu01"].address
    inv = inventory(testbed, tmp_path, kh, gpu02={"deploy_jump": f"root@{jump}"})
    code, _, err = run(inv, "inventory", "trust", "gpu02", "--yes", "--hash")
    assert code == 0, err
    assert f"jump host {jump}" in err
    lines = kh.read_text().splitlines()
    assert len(lines) == 3 and all(ln.startswith("|1|") for ln in lines)  # jump address; gpu02 address + name
    assert "gpu02" not in kh.read_text()
    code, out, err = run(inv, "inventory", "check", "gpu02", "--json")
    assert code == 0, err
    assert len(json.loads(out)[0]["gpus"]) == 4
