"""deployer.warm's pure parts: the request frame, which server serves which process, the knobs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployer.warm import server, wire


def test_request_frame_round_trips_argv_and_env_with_undecodable_bytes() -> None:
    odd = b"caf\xe9".decode(errors="surrogateescape")  # a Latin-1 byte in a UTF-8 world
    req = wire.Request(argv=["deploy", "ship", "--image", odd, "a b;$(x)"], cwd="/work/p " + odd,
                       env={"PATH": "/usr/bin", "WEIRD": odd, "EMPTY": ""}, umask=0o027)
    frame = req.frame()
    (size,) = wire.HEADER.unpack(frame[:wire.HEADER.size])
    assert size == len(frame) - wire.HEADER.size
    assert wire.Request.parse(frame[wire.HEADER.size:]) == req
    # arguments that look like the frame's own fields stay arguments; no argument is fine too
    tricky = wire.Request(argv=["deploy", "3", "A=B", ""], cwd="/", env={"X": "a=b=c"}, umask=0)
    assert wire.Request.parse(tricky.frame()[wire.HEADER.size:]) == tricky
    bare = wire.Request(argv=[], cwd="/", env={}, umask=0o022)
    assert wire.Request.parse(bare.frame()[wire.HEADER.size:]) == bare


def test_a_frame_it_cannot_carry_or_cannot_read_is_refused() -> None:
    with pytest.raises(ValueError):
        wire.Request(argv=["deploy", "a\0b"], cwd="/", env={}, umask=0).frame()
    with pytest.raises(ValueError):
        wire.Request(argv=["deploy"], cwd="/", env={"A=B": "c"}, umask=0).frame()
    body = wire.Request(argv=["deploy", "status"], cwd="/", env={"A": "1"}, umask=0).frame()[wire.HEADER.size:]
    for bad in (b"", b"deployer-warm-0\x000\x00/\x000", body.replace(b"\x002\x00", b"\x009\x00"), b"x" * 40):
        with pytest.raises(ValueError):
            wire.Request.parse(bad)


def test_each_python_install_and_shaping_env_has_its_own_server() -> None:
    base = wire.server_key("/venv/bin/python", "/src/deployer", {"LANG": "C.UTF-8", "HOME": "/root"})
    assert base == wire.server_key("/venv/bin/python", "/src/deployer", {"LANG": "C.UTF-8", "HOME": "/tmp/x",
                                                                        "DEPLOY_INVENTORY": "a.yml"})
    for other in (wire.server_key("/other/bin/python", "/src/deployer", {"LANG": "C.UTF-8"}),
                  wire.server_key("/venv/bin/python", "/snapshot/deployer", {"LANG": "C.UTF-8"}),
                  wire.server_key("/venv/bin/python", "/src/deployer", {"LANG": "C.UTF-8", "PYTHONPATH": "/x"}),
                  wire.server_key("/venv/bin/python", "/src/deployer", {"LANG": "de_DE.ISO-8859-1"})):
        assert other != base


@pytest.mark.parametrize(("value", "on"), [(None, True), ("1", True), ("0", False), ("off", False),
                                          (" False ", False), ("no", False)])
def test_warm_start_is_on_unless_turned_off(value: str | None, on: bool) -> None:
    env = {} if value is None else {"DEPLOY_WARM": value}
    assert wire.enabled(env) is on


def test_idle_seconds_default_floor_and_garbage() -> None:
    assert wire.idle_seconds({}) == 600.0
    assert wire.idle_seconds({"DEPLOY_WARM_IDLE_S": "30"}) == 30.0
    assert wire.idle_seconds({"DEPLOY_WARM_IDLE_S": "0"}) == 1.0
    assert wire.idle_seconds({"DEPLOY_WARM_IDLE_S": "soon"}) == 600.0


def test_socket_dir_is_per_user_under_the_runtime_dir_or_tmp() -> None:
    uid = os.getuid()
    assert wire.socket_dir({"XDG_RUNTIME_DIR": "/run/user/1000"}) == "/run/user/1000/deployer"
    assert wire.socket_dir({"TMPDIR": "/var/tmp"}) == f"/var/tmp/deployer-{uid}"
    assert wire.socket_dir({"XDG_RUNTIME_DIR": "relative", "TMPDIR": "also-relative"}) == f"/tmp/deployer-{uid}"


def test_private_dir_refuses_a_dir_others_can_use(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    assert wire.private_dir(str(mine))
    assert mine.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert not wire.private_dir(str(shared))
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert not wire.private_dir(str(link))


def test_fingerprint_changes_with_a_source_file_or_an_import_dir(tmp_path: Path) -> None:
    package, site = tmp_path / "pkg", tmp_path / "site"
    package.mkdir()
    site.mkdir()
    (package / "a.py").write_text("x = 1\n")
    before = server.fingerprint(package, ["", str(site)])
    assert server.fingerprint(package, ["", str(site)]) == before
    (package / "a.py").write_text("x = 22\n")
    edited = server.fingerprint(package, ["", str(site)])
    assert edited != before
    (site / "newdist-1.0.dist-info").mkdir()  # what `pip install` does to site-packages
    os.utime(site, ns=(1, 1))
    assert server.fingerprint(package, ["", str(site)]) != edited
