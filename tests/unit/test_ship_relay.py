"""The site relay's pure parts: its remote scripts (run here with sh, the way a host runs them), the
authorized_keys line, which hosts form a site, and the dry run's steps."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from deployer.commands import relay as rc
from deployer.commands import ship as cmd
from deployer.errors import ConnectError, InventoryError, TransferError
from deployer.inventory.host import Host
from deployer.local.cache import Blob
from deployer.ship.conn import HostConn
from deployer.ship.progress import NullReporter
from deployer.ship.relay import Relayed, RelayError, Site, _Passes, sites_of
from deployer.ship.route import Leg, run_tarball
from deployer.ship.tarball import Counter, held_bytes
from deployer.transport.result import Result


def run(argv: tuple[str, ...], *, data: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=data, capture_output=True, env={**os.environ, **(env or {})}, check=False)


def test_key_line_restricts_the_key_to_the_forced_receive() -> None:
    line = rc.key_line("ssh-ed25519 AAAAKEY comment", "ab12", "/var/tmp/deployer", source="10.0.0.5",
                       expires=datetime(2026, 12, 2, 18, 30))
    assert line == ('from="10.0.0.5",expiry-time="202612021830",restrict,'
                    'command="sh /var/tmp/deployer/relay-receive.sh" ssh-ed25519 AAAAKEY deployer-relay:ab12')
    no_source = rc.key_line("ssh-ed25519 AAAAKEY", "ab12", "/st", source=None, expires=datetime(2026, 1, 1))
    assert no_source.startswith('expiry-time="202601010000",restrict,')
    with pytest.raises(ValueError, match="plain absolute path"):
        rc.key_line("ssh-ed25519 K", "ab12", '/st"; rm -rf /', source=None, expires=datetime(2026, 1, 1))
    assert not rc.plain_path("~/staging") and not rc.plain_path("/a b") and rc.plain_path("/var/tmp/d-1.x")


def test_known_hosts_line_names_the_host_as_the_relay_reaches_it() -> None:
    assert rc.known_hosts_line("10.0.0.7", 22, "ssh-ed25519", "AAAA") == "10.0.0.7 ssh-ed25519 AAAA"
    assert rc.known_hosts_line("10.0.0.7", 2222, "ssh-ed25519", "AAAA") == "[10.0.0.7]:2222 ssh-ed25519 AAAA"


def test_authorize_receive_and_revoke_on_a_host(tmp_path: Path) -> None:
    staging, keys = str(tmp_path / "staging"), str(tmp_path / "ssh" / "authorized_keys")
    Path(keys).parent.mkdir()
    Path(keys).write_text("ssh-ed25519 USERKEY me@laptop\n")
    line = rc.key_line("ssh-ed25519 SHIPKEY", "s1", staging, source=None, expires=datetime(2030, 1, 1))
    assert run(rc.authorize_argv(staging, keys, line)).returncode == 0
    assert Path(keys).read_text().splitlines() == ["ssh-ed25519 USERKEY me@laptop", line]
    receiver = rc.receiver_path(staging)

    data = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    # what sshd does for the forced command: the client's command is only in SSH_ORIGINAL_COMMAND
    got = run(("sh", receiver), data=data[:1000], env={"SSH_ORIGINAL_COMMAND": f"{digest} {len(data)} zst"})
    assert got.stdout.split() == [b"short", b"1000"]
    got = run(("sh", receiver), data=data[1000:], env={"SSH_ORIGINAL_COMMAND": f"{digest} {len(data)} zst"})
    assert got.stdout.decode().split() == ["ok", digest]
    assert Path(cmd.blob_path(staging, digest, "zstd")).read_bytes() == data

    for bad in (f"{digest} {len(data)} zst; rm -rf /", f"sha256:../../etc {len(data)} zst",
                f"{digest} 12x zst", f"{digest} 10 sh", "sh -c id", f"{digest[:-1]}* 10 zst"):
        refused = run(("sh", receiver), data=b"x", env={"SSH_ORIGINAL_COMMAND": bad})
        assert refused.returncode == 2 and b"refused" in refused.stderr, bad

    assert run(rc.revoke_argv(keys, "s1")).returncode == 0
    assert Path(keys).read_text().splitlines() == ["ssh-ed25519 USERKEY me@laptop"]
    assert run(rc.revoke_argv(keys, "s1")).returncode == 0  # idempotent
    assert oct(Path(keys).stat().st_mode & 0o777) == "0o600"


def _ssh_shim(tmp_path: Path) -> dict[str, str]:
    """An `ssh` that hands stdin to the forced receive the way sshd would (it gets the ship's want)."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "ssh").write_text('#!/bin/sh\nfor last; do :; done\nSSH_ORIGINAL_COMMAND=$last exec sh "$RECEIVER"\n')
    (shim / "ssh").chmod(0o755)
    return {"PATH": f"{shim}:{os.environ['PATH']}"}


def test_forward_follows_a_blob_as_it_arrives_and_resumes_from_an_offset(tmp_path: Path) -> None:
    relay, host = str(tmp_path / "relay"), str(tmp_path / "host")
    staging_line = rc.key_line("ssh-ed25519 K", "s1", host, source=None, expires=datetime(2030, 1, 1))
    assert run(rc.authorize_argv(host, str(tmp_path / "keys"), staging_line)).returncode == 0
    env = {**_ssh_shim(tmp_path), "RECEIVER": rc.receiver_path(host)}
    data = os.urandom(3_000_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    final = Path(cmd.blob_path(relay, digest, "zstd"))
    final.parent.mkdir(parents=True)
    partial = Path(str(final) + ".partial")

    def arrive() -> None:  # the relay's own receive: a growing .partial, renamed once verified
        time.sleep(0.3)
        with partial.open("wb") as fh:
            for i in range(0, len(data), 400_000):
                fh.write(data[i:i + 400_000])
                fh.flush()
                time.sleep(0.05)
        partial.rename(final)

    writer = threading.Thread(target=arrive)
    writer.start()
    argv = rc.forward_argv(relay, digest, "zstd", len(data), 0, str(tmp_path / "ship"), "root@10.0.0.7", 22, 10, 0)
    got = run(argv, env=env)
    writer.join()
    assert got.stdout.decode().split() == ["ok", digest], got.stderr
    assert Path(cmd.blob_path(host, digest, "zstd")).read_bytes() == data

    # a host that holds part of the blob gets the rest only
    Path(cmd.blob_path(host, digest, "zstd")).unlink()
    Path(cmd.partial_path(host, digest, "zstd")).write_bytes(data[:1_234_567])
    got = run(rc.forward_argv(relay, digest, "zstd", len(data), 1_234_567, str(tmp_path / "ship"), "h", 22, 10, 0),
              env=env)
    assert got.stdout.decode().split() == ["ok", digest], got.stderr

    # nothing arrives: the forward gives up after the stall time and the host keeps what it has
    missing = "sha256:" + "0" * 64
    got = run(rc.forward_argv(relay, missing, "zstd", 10, 0, str(tmp_path / "ship"), "h", 22, 1, 0), env=env)
    assert b"no new bytes for 1s" in got.stderr and got.stdout.split()[0] == b"short"


def test_forward_follows_a_copy_still_being_compressed_through_its_rename(tmp_path: Path) -> None:
    """A blob the workstation sends while it compresses it lands on the relay at its growing name
    (its digest not known yet), which becomes its final name once it matches. The forward starts
    once the digest is known and follows that copy, whatever the relay's receive calls it then."""
    relay, host = str(tmp_path / "relay"), str(tmp_path / "host")
    assert run(rc.authorize_argv(host, str(tmp_path / "keys"), "")).returncode == 0
    data = os.urandom(3_000_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    diff_id = "sha256:" + "d" * 64
    final = Path(cmd.blob_path(rc.relay_staging(relay), digest, "zstd"))
    growing = Path(cmd.growing_path(rc.relay_staging(relay), diff_id, "zstd", 3))
    growing.parent.mkdir(parents=True)
    written, before_named = threading.Event(), []
    at_host = Path(cmd.blob_path(host, digest, "zstd"))

    def compress_and_send() -> None:  # receive_growing's tee, then the workstation's rename to the final name
        with growing.open("wb") as fh:
            for i in range(0, len(data), 300_000):
                fh.write(data[i:i + 300_000])
                fh.flush()
                if i >= 900_000:
                    written.set()
                time.sleep(0.05)
        deadline = time.monotonic() + 5
        while not at_host.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        before_named.append(at_host.exists())  # the host had all of it before the relay's copy got its name
        growing.rename(final)

    writer = threading.Thread(target=compress_and_send)
    writer.start()
    written.wait(10)  # the forward begins with part of the copy at the growing name
    argv = rc.forward_argv(rc.relay_staging(relay), digest, "zstd", len(data), 0, str(tmp_path / "ship"), "x", 22, 10,
                           0, growing=str(growing))
    got = run(argv, env={**_ssh_shim(tmp_path), "RECEIVER": rc.receiver_path(host)})
    writer.join()
    assert got.stdout.decode().split() == ["ok", digest], got.stderr
    assert at_host.read_bytes() == data and before_named == [True]
    # without the growing name, a forward started as early would wait for the final name (whole)
    assert "growing.partial" not in " ".join(rc.forward_argv(rc.relay_staging(relay), digest, "zstd", 1, 0, "s", "x",
                                                              22, 10, 0))


def test_the_relay_as_a_target_links_its_copy_into_its_staging_as_it_grows(tmp_path: Path) -> None:
    """The relay's own staging gets its copy of the blob under a second name (the same file, which
    its load reads as it lands), named only once the relay's receive has verified it: one copy of
    each blob on the relay's disk, hashed once. A host part that is not that copy is appended to."""
    relay = str(tmp_path / "relay")
    assert run(rc.authorize_argv(relay, str(tmp_path / "keys"), "")).returncode == 0
    data = os.urandom(2_000_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    copy = Path(cmd.blob_path(rc.relay_staging(relay), digest, "zstd"))
    copy.parent.mkdir(parents=True)
    partial = Path(str(copy) + ".partial")
    mine, mine_partial = Path(cmd.blob_path(relay, digest, "zstd")), Path(cmd.partial_path(relay, digest, "zstd"))
    seen: list[tuple[bool, int]] = []

    def arrive() -> None:  # the relay's own receive: a growing .partial, renamed once verified
        with partial.open("wb") as fh:
            for i in range(0, len(data), 250_000):
                fh.write(data[i:i + 250_000])
                fh.flush()
                time.sleep(0.1)
                if mine_partial.exists():
                    seen.append((mine_partial.samefile(partial), mine_partial.stat().st_size))
        time.sleep(0.2)
        seen.append((mine.exists(), -1))  # not named before the relay's copy is
        partial.rename(copy)

    writer = threading.Thread(target=arrive)
    writer.start()
    argv = rc.forward_argv(rc.relay_staging(relay), digest, "zstd", len(data), 0, str(tmp_path / "ship"), "x", 22, 5,
                           0, here=rc.receiver_path(relay))
    got = run(argv, env={"PATH": "/nonexistent:/usr/bin:/bin"})
    writer.join()
    assert got.stdout.decode().split() == ["ok", digest], got.stderr
    assert mine.samefile(copy) and mine.read_bytes() == data and not mine_partial.exists()
    assert seen[-1] == (False, -1) and seen[0][0] and seen[-2] == (True, len(data))
    assert len({n for _, n in seen[:-1]}) > 2  # it grew under the second name

    # a part the relay's staging holds from an earlier, copied send is not the relay's copy: appended to
    mine.unlink()
    mine_partial.write_bytes(data[:700_000])
    got = run(rc.forward_argv(rc.relay_staging(relay), digest, "zstd", len(data), 700_000, str(tmp_path / "ship"),
                              "x", 22, 5, 0, here=rc.receiver_path(relay)))
    assert got.stdout.decode().split() == ["ok", digest], got.stderr
    assert mine.read_bytes() == data and not mine.samefile(copy)

    # the relay's copy never comes: the forward gives up after the stall time, holding nothing
    missing = "sha256:" + "0" * 64
    got = run(rc.forward_argv(rc.relay_staging(relay), missing, "zstd", 10, 0, str(tmp_path / "ship"), "x", 22, 1, 0,
                              here=rc.receiver_path(relay)))
    assert b"no new bytes for 1s" in got.stderr and got.stdout.split()[0] == b"short"


def test_forward_to_the_relay_itself_needs_no_ssh(tmp_path: Path) -> None:
    relay = str(tmp_path / "relay")
    line = rc.key_line("ssh-ed25519 K", "s1", relay, source=None, expires=datetime(2030, 1, 1))
    assert run(rc.authorize_argv(relay, str(tmp_path / "keys"), line)).returncode == 0
    data = b"layer" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    src = Path(cmd.blob_path(rc.relay_staging(relay), digest, "gzip"))
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    argv = rc.forward_argv(rc.relay_staging(relay), digest, "gzip", len(data), 0, str(tmp_path / "ship"), "x", 22, 5,
                           0, here=rc.receiver_path(relay))
    got = run(argv, env={"PATH": "/nonexistent:/usr/bin:/bin"})  # no ssh on this PATH's first entry; not used
    assert got.stdout.decode().split() == ["ok", digest], got.stderr
    assert Path(cmd.blob_path(relay, digest, "gzip")).read_bytes() == data


def test_setup_writes_the_key_privately_and_lists_the_relays_blobs(tmp_path: Path) -> None:
    ship = tmp_path / "st" / "relay" / "ship-s1"
    blobs = cmd.blob_dir(str(tmp_path / "st" / "relay"))
    Path(blobs).mkdir(parents=True)
    Path(blobs, "ab.zst").write_bytes(b"12345")
    got = run(rc.setup_argv(str(ship), ["10.0.0.7 ssh-ed25519 AAAA"], str(tmp_path / "st" / "relay"),
                            ["127.0.0.1"]), data=b"PRIVATE KEY")
    assert got.returncode == 0, got.stderr
    assert (ship / "key").read_bytes() == b"PRIVATE KEY" and oct((ship / "key").stat().st_mode & 0o777) == "0o600"
    assert (ship / "known_hosts").read_text() == "10.0.0.7 ssh-ed25519 AAAA\n"
    assert rc.parse_sources(got.stdout.decode()) == {"127.0.0.1": "127.0.0.1"}
    assert f"5 {blobs}/ab.zst" in got.stdout.decode()
    assert run(rc.cleanup_argv(str(ship), [f"{blobs}/ab.zst"])).returncode == 0
    assert not ship.exists() and not Path(blobs, "ab.zst").exists()


def test_control_socket_paths_fit_or_are_not_used() -> None:
    assert rc.control_path("/var/tmp/deployer/relay/ship-0123456789abcdef", 3) == \
        "/var/tmp/deployer/relay/ship-0123456789abcdef/cm3"
    assert rc.control_path("/" + "x" * 120, 0) == "none"


def _host(name: str, **vars: str) -> Host:
    return Host(name, {"ansible_host": f"10.0.0.{len(name)}", **vars})


def test_hosts_sharing_a_relay_form_a_site_of_two_or_more() -> None:
    relay = _host("r1")
    hosts = [_host("a", deploy_relay="r1"), _host("b", deploy_relay="r1"), _host("c"), _host("d", deploy_relay="r2")]
    assert sites_of(hosts, {"r1": relay, "r2": _host("r2")}) == {"a": "r1", "b": "r1"}  # d is alone: direct
    assert sites_of(hosts[:1] + hosts[2:3], {"r1": relay}) == {}
    with pytest.raises(InventoryError, match="deploy_relay names 'r2', which is not an inventory host"):
        sites_of(hosts, {"r1": relay})
    with pytest.raises(InventoryError, match="deploy_relay_fallback is 'maybe'"):
        sites_of([_host("a", deploy_relay="r1", deploy_relay_fallback="maybe"), _host("b", deploy_relay="r1")],
                 {"r1": relay})


# -- a whole relayed tarball ship, relay and host on this machine (their scripts by a local sh) ---

class _DeadRelay:
    """The relay's session when the relay is gone: nothing on it works."""

    host, alive = "relay", True

    def run(self, argv: object, **kw: object) -> object:
        raise TransferError("relay", "the relay is gone")

    send = run

    def close(self) -> None:
        pass


def _relayed_ship(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relay_session: object,
                  export: Callable[[object], object] = lambda e: e, **vars: str) -> tuple[object, Counter, list[str], Path]:
    from fakedocker import Image, fake_docker
    from test_ship_steps import Exported, _plan
    from test_ship_transfer import LocalSession

    img = Image(tmp_path)
    docker, _ = fake_docker(tmp_path)
    keys = tmp_path / "authorized_keys"
    known = tmp_path / "known_hosts"
    known.write_text("")
    relay = Host("relay", {"ansible_host": "127.0.0.1", "deploy_staging_dir": str(tmp_path / "relay"),
                           "deploy_known_hosts": str(known)})
    host = Host("local", {"ansible_host": "127.0.0.1", "deploy_staging_dir": img.staging,
                          "deploy_docker": " ".join(docker), "deploy_relay": "relay", "deploy_known_hosts": str(known),
                          "deploy_authorized_keys": str(keys), **vars})
    monkeypatch.setenv("PATH", _ssh_shim(tmp_path)["PATH"])
    monkeypatch.setenv("RECEIVER", rc.receiver_path(img.staging))
    site = Site(relay, [host, Host("other", {"deploy_relay": "relay"})],
                conn=HostConn(relay, session=relay_session))  # type: ignore[arg-type]
    counter, notes = Counter(), []
    reporter = NullReporter()
    reporter.note = lambda name, message: notes.append(message)  # type: ignore[method-assign]
    plan = dataclasses.replace(_plan(img, host), relay="relay", relay_staging=str(tmp_path / "relay"))
    leg = Leg(host, HostConn(host, session=LocalSession([])), img.info, plan, counter, site)
    try:
        got = run_tarball(leg, export(Exported(img, tmp_path / "cache")), reporter)  # type: ignore[arg-type]
    finally:
        site.close(all_ok=True)
    assert got == img.id
    return img, counter, notes, keys


def test_a_relayed_tarball_ship_gets_every_blob_from_the_relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_ship_transfer import LocalSession

    img, counter, notes, keys = _relayed_ship(tmp_path, monkeypatch, LocalSession([]))
    assert counter.relay == "relay" and counter.layers == 4 and not counter.fell_back
    assert counter.lan == sum(b.size for b in img.blobs)  # every blob came over the "LAN"
    # ...and crossed the uplink once, to the relay; the rest of what was sent is the loads' tar heads
    assert 0 < counter.sent - counter.lan <= 2 * 10240
    assert not any("directly" in n for n in notes), notes
    assert "deployer-relay:" not in keys.read_text()  # the ship's key is gone from the host
    relay_dir = tmp_path / "relay" / "relay"
    assert [p for p in relay_dir.rglob("*") if p.is_file()] == []  # the relay's key and blobs are gone


class _StillCompressing:
    """The export when the ship starts: the lowest layer still being compressed (handed out as
    Growing, its bytes in pieces), the others ready."""

    def __init__(self, exported: object) -> None:
        from deployer.local.export import Growing

        self.exported, self.first = exported, exported.blobs[0]  # type: ignore[attr-defined]
        self.growing = Growing(self.first.diff_id, self.first.codec, self.first.level, self.first.path)
        self.follows = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.exported, name)

    def next_blob(self, codec: str, order: list[str], taken: set[str], stream: bool) -> object:
        if stream and self.first.diff_id not in taken:
            return self.growing
        return self.exported.next_blob(codec, order, taken, stream)  # type: ignore[attr-defined]

    def follow(self, growing: object) -> object:
        self.follows += 1
        data = self.first.path.read_bytes()
        for i in range(0, len(data), 100):
            yield data[i:i + 100]

    def finished(self, growing: object) -> object:
        return self.first


def test_a_layer_still_being_compressed_goes_to_the_relay_as_it_is_written(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The uplink does not wait for the compressor: the relay receives the layer as it grows (at its
    growing name, named once size and sha256 match) and passes it on from there; the host gets the
    finished blob by its digest, from the relay."""
    from test_ship_transfer import LocalSession

    streamed: list[_StillCompressing] = []

    def still_compressing(exported: object) -> _StillCompressing:
        streamed.append(_StillCompressing(exported))
        return streamed[0]

    img, counter, notes, _ = _relayed_ship(tmp_path, monkeypatch, LocalSession([]), export=still_compressing)
    assert streamed[0].follows == 1  # streamed once, to the relay
    assert counter.relay == "relay" and counter.layers == 4 and not notes
    assert counter.lan == sum(b.size for b in img.blobs)  # the streamed one too came over the "LAN"
    assert 0 < counter.sent - counter.lan <= 2 * 10240
    assert [p for p in (tmp_path / "relay" / "relay").rglob("*") if p.is_file()] == []  # growing name cleaned too


def test_a_successful_ship_removes_what_a_failed_one_left_of_the_image_on_the_relay(tmp_path: Path) -> None:
    """A ship that failed keeps the relay's copies for a resume; the next one that succeeds on every
    host removes them, also those it did not need (their layers were loaded before the failure),
    but never another image's copies, which another ship may be using."""
    from test_ship_transfer import LocalSession

    from deployer.local.cache import Blob

    known = tmp_path / "known_hosts"
    known.write_text("")
    relay = Host("relay", {"ansible_host": "127.0.0.1", "deploy_staging_dir": str(tmp_path / "relay"),
                           "deploy_known_hosts": str(known)})
    hosts = [Host(n, {"ansible_host": "127.0.0.1", "deploy_relay": "relay", "deploy_known_hosts": str(known)})
             for n in ("a", "b")]
    copies = rc.relay_staging(str(tmp_path / "relay"))

    def blob(n: int) -> Blob:
        return Blob(f"sha256:{n:064x}", "zstd", 3, tmp_path / "x", f"sha256:{n + 100:064x}", 10, 10)

    whole, part, streamed, others = blob(1), blob(2), blob(3), blob(4)
    held = [cmd.blob_path(copies, whole.digest, "zstd"), cmd.partial_path(copies, part.digest, "zstd"),
            cmd.growing_path(copies, streamed.diff_id, "zstd", 3), cmd.blob_path(copies, others.digest, "zstd")]
    Path(held[0]).parent.mkdir(parents=True)
    for path in held:
        Path(path).write_bytes(b"0123456789")

    for all_ok in (False, True):
        site = Site(relay, hosts, conn=HostConn(relay, session=LocalSession([])))  # type: ignore[arg-type]
        site.nodes["relay"].ready()  # its setup lists what the relay holds
        site.close(all_ok=all_ok, image_blobs=[whole, part, streamed])
        left = sorted(str(p) for p in Path(copies).rglob("*") if p.is_file())
        assert left == (sorted(held) if not all_ok else [held[3]]), (all_ok, left)


def test_a_dead_relay_sends_its_hosts_direct_or_fails_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYER_RETRY_BUDGET", "0")
    img, counter, notes, _ = _relayed_ship(tmp_path / "a", monkeypatch, _DeadRelay())
    assert counter.relay is None and counter.lan == 0 and counter.layers == 4 and counter.fell_back
    assert counter.sent - sum(b.size for b in img.blobs) <= 2 * 10240  # every blob, straight to the host
    assert any("sending directly from the workstation" in n for n in notes), notes
    with pytest.raises(RelayError, match="cannot set up relay as the site's relay: the relay is gone"):
        _relayed_ship(tmp_path / "b", monkeypatch, _DeadRelay(), deploy_relay_fallback="fail")


def test_what_a_pass_passed_before_it_died_counts_as_the_lans() -> None:
    """A relay's pass that dies reports nothing; the host's copy says what it passed: where the next
    pass starts, or what the direct send after a fallback finds there."""
    counter = Counter()
    blob = Blob("sha256:" + "1" * 64, "zstd", 3, Path("/nonexistent"), "sha256:" + "2" * 64, 100, 300)
    starts: list[int] = []

    def forward(b: Blob, offset: int) -> Result:
        starts.append(offset)
        if len(starts) in (1, 3):
            raise TransferError("airgap02", "relay airgap01: passing the blob on failed", transient=True)
        counter.add_lan(b.size - offset)  # a pass that answers counts what it passed (Node.forward)
        return Result(("pass",), 0, "ok")

    passes = _Passes(counter)
    via = passes.counted(forward)
    with pytest.raises(TransferError):
        via(blob, 0)
    via(blob, 40)  # the dead pass had put 40 bytes there
    assert counter.lan == 40 + 60
    passes.settle(100)  # it answered: nothing more to count
    assert counter.lan == 100
    # another blob: its pass dies, the host goes direct and finds 70 of its bytes staged
    with pytest.raises(TransferError):
        via(blob, 10)
    assert held_bytes({cmd.partial_path("/s", blob.digest, blob.codec): 70}, "/s", blob) == 70
    assert held_bytes({cmd.blob_path("/s", blob.digest, blob.codec): 100}, "/s", blob) == 100  # staged whole
    assert held_bytes({}, "/s", blob) == 0
    passes.settle(70)
    assert counter.lan == 160
    passes.settle(90)  # settled once only
    assert counter.lan == 160


class _Unreachable(_DeadRelay):
    """The session of a host the workstation cannot connect to."""

    host = "local"

    def run(self, argv: object, **kw: object) -> object:
        raise ConnectError("local", "cannot connect to 127.0.0.1:22: Connection refused")

    send = run


def test_a_host_the_workstation_cannot_reach_fails_as_without_a_relay(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Its relayed send fails for want of the host itself, not of the relay: going direct would
    need that same connection (and its whole retry budget again), so the host fails as it is."""
    from test_ship_transfer import LocalSession

    monkeypatch.setenv("DEPLOYER_RETRY_BUDGET", "0")
    known = tmp_path / "known_hosts"
    known.write_text("")
    relay = Host("relay", {"ansible_host": "127.0.0.1", "deploy_staging_dir": str(tmp_path / "relay"),
                           "deploy_known_hosts": str(known)})
    host = Host("local", {"ansible_host": "127.0.0.1", "deploy_staging_dir": str(tmp_path / "local"),
                          "deploy_relay": "relay", "deploy_known_hosts": str(known)})
    notes: list[str] = []
    for session, falls_back in ((_Unreachable(), False), (LocalSession([]), True)):
        site = Site(relay, [host], conn=HostConn(relay, session=_DeadRelay() if falls_back else LocalSession([])))  # type: ignore[arg-type]
        relayed = Relayed(site, HostConn(host, session=session), host, Counter(), notes.append, None)  # type: ignore[arg-type]
        try:
            if falls_back:  # the relay is gone: direct sends instead, as ever
                relayed.open()
                assert relayed.direct and "relay relay cannot serve this host" in notes[-1], notes
                assert relayed.counter.fell_back
            else:
                with pytest.raises(ConnectError, match="local: cannot connect"):
                    relayed.open()
                assert not relayed.direct and notes == [] and not relayed.counter.fell_back
        finally:
            site.close(all_ok=True)


# -- the tree (deploy_relay_fanout) ------------------------------------------------------------

def _depth(parents: dict[str, str], host: str) -> int:
    depth = 0
    while host in parents:
        host, depth = parents[host], depth + 1
    return depth


def test_the_tree_is_breadth_first_in_host_order_with_fanout_k() -> None:
    from deployer.ship.relay import relay_tree

    hosts = [f"h{i:02d}" for i in range(1, 11)]
    # the relay feeds the first k hosts, the first of those the next k, and so on
    assert relay_tree("r", hosts, 8) == {**{h: "r" for h in hosts[:8]}, "h09": "h01", "h10": "h01"}
    assert relay_tree("r", hosts[:4], 2) == {"h01": "r", "h02": "r", "h03": "h01", "h04": "h01"}
    # fan-out 1: a chain; the relay, when a target, is the root and feeds itself (not a child)
    assert relay_tree("a", ["a", "b", "c"], 1) == {"b": "a", "c": "b"}
    assert relay_tree("b", ["a", "b", "c"], 1) == {"a": "b", "c": "a"}
    assert relay_tree("r", hosts, 50) == {h: "r" for h in hosts}  # today's flat site
    with pytest.raises(ValueError):
        relay_tree("r", hosts, 0)
    for k in (1, 2, 3, 8):
        for n in (1, 2, 7, 8, 9, 64, 100):
            tree = relay_tree("r", [f"h{i}" for i in range(n)], k)
            assert max(list(tree.values()).count(p) for p in set(tree.values())) <= k
            # the smallest depth d whose levels k + k^2 + ... + k^d hold the n hosts: log_k(n)
            levels = [k ** i for i in range(1, n + 1)]
            assert max(_depth(tree, h) for h in tree) == next(d for d in range(1, n + 1) if sum(levels[:d]) >= n)


def test_the_fanout_option_is_a_whole_number_and_the_sites_smallest_counts() -> None:
    from deployer.ship.relay import fanout_of

    assert _host("a").relay_fanout == 8 and _host("a", deploy_relay_fanout="3").relay_fanout == 3
    assert Host("a", {"deploy_relay_fanout": 2}).relay_fanout == 2
    for bad in (0, "0", "x", "2.5", True, -1):
        with pytest.raises(InventoryError, match="deploy_relay_fanout is"):
            _ = Host("a", {"deploy_relay_fanout": bad}).relay_fanout
    relay = _host("r1")
    assert fanout_of(relay, [_host("a", deploy_relay_fanout="4"), _host("b", deploy_relay_fanout="2")]) == 2
    assert fanout_of(relay, [_host("a")]) == 8
    with pytest.raises(InventoryError, match="deploy_relay_fanout is 'many'"):
        sites_of([_host("a", deploy_relay="r1", deploy_relay_fanout="many"), _host("b", deploy_relay="r1")],
                 {"r1": relay})


def test_each_host_knows_who_feeds_it_and_whom_it_feeds() -> None:
    from deployer.ship.relay import hops_of

    hosts = [_host(n, deploy_relay="a", deploy_relay_fanout="1") for n in ("a", "b", "c")]
    hops = hops_of(hosts, {"a": hosts[0]})
    assert {n: (h.relay.name, h.feeds) for n, h in hops.items()} == \
        {"a": ("a", ("b",)), "b": ("a", ("c",)), "c": ("b", ())}
    # a relay that is no target; two sites in one ship (relay a's own fan-out 1 counts for its site);
    # a lone host is in none
    r = _host("r")
    more = [_host(n, deploy_relay="r", deploy_relay_fanout="2") for n in ("p", "q", "s")] + \
        [_host("x", deploy_relay="a"), _host("y", deploy_relay="a"), _host("z", deploy_relay="q")]
    hops = hops_of(more, {"r": r, "a": hosts[0], "q": more[1]})
    assert {n: (h.relay.name, h.feeds) for n, h in hops.items()} == \
        {"p": ("r", ("s",)), "q": ("r", ()), "s": ("p", ()), "x": ("a", ("y",)), "y": ("x", ())}


def test_a_site_builds_its_nodes_top_down() -> None:
    relay = _host("r", deploy_relay_fanout="1")
    hosts = [_host(n, deploy_relay="r") for n in ("a", "b", "c")]
    conns: list[str] = []

    def connect(h: Host) -> HostConn:
        conns.append(h.name)
        return HostConn(h)

    site = Site(relay, hosts, connect=connect)
    try:
        assert list(site.nodes) == ["r", "a", "b"] and conns == ["r", "a", "b"]  # c feeds nobody: no node
        assert site.nodes["b"].parent is site.nodes["a"] and [h.name for h in site.nodes["b"].children] == ["c"]
        assert site.node_of(hosts[2]).name == "b" and site.node_of(hosts[0]).name == "a"  # a feeds itself
        assert [site.served_by(h) for h in hosts] == ["r", "a", "b"]
        assert site.nodes["a"].blobs_dir == "/var/tmp/deployer/relay"
    finally:
        site.close(all_ok=True)  # no node was set up: nothing runs


def test_a_node_installs_its_receive_without_a_key_and_its_last_ship_removes_it(tmp_path: Path) -> None:
    staging, keys = str(tmp_path / "st"), tmp_path / "authorized_keys"
    assert run(rc.authorize_argv(staging, str(keys), "")).returncode == 0
    assert Path(rc.receiver_path(staging)).exists() and not keys.exists()  # no line: nothing authorized
    node = rc.relay_staging(staging)
    assert run(rc.authorize_argv(node, str(keys), "restrict ssh-ed25519 K deployer-relay:s1")).returncode == 0
    for ship in ("s1", "s2"):
        Path(rc.ship_dir(staging, ship)).mkdir(parents=True)
    assert run(rc.cleanup_argv(rc.ship_dir(staging, "s1"), [])).returncode == 0
    assert Path(rc.receiver_path(node)).exists()  # ship s2 still feeds this node through it
    assert run(rc.cleanup_argv(rc.ship_dir(staging, "s2"), [])).returncode == 0
    assert not Path(rc.receiver_path(node)).exists() and Path(rc.receiver_path(staging)).exists()


def test_a_forward_reads_a_growing_blob_in_paced_rounds_not_once_per_write(tmp_path: Path) -> None:
    """The forward's loop measures the relay's copy (`wc`) and reads on at most every 50 ms while
    bytes flow: one that read again at once ran wc and head hundreds of times a second, a core of the
    relay's CPU for a whole ship."""
    relay, host = str(tmp_path / "relay"), str(tmp_path / "host")
    assert run(rc.authorize_argv(host, str(tmp_path / "keys"), "")).returncode == 0
    ssh = _ssh_shim(tmp_path)  # the forward to another host, through its forced receive
    shims, calls = tmp_path / "wc-bin", tmp_path / "wc-calls"
    shims.mkdir()
    wc = shims / "wc"
    wc.write_text(f'#!/bin/sh\necho x >> {calls}\nexec /usr/bin/wc "$@"\n')
    wc.chmod(0o755)
    data = os.urandom(4_000_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    final = Path(cmd.blob_path(rc.relay_staging(relay), digest, "zstd"))
    final.parent.mkdir(parents=True)
    partial = Path(str(final) + ".partial")
    partial.write_bytes(b"")
    argv = rc.forward_argv(rc.relay_staging(relay), digest, "zstd", len(data), 0, str(tmp_path / "ship"), "x", 22, 10,
                           0)
    started = time.monotonic()
    hop = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**os.environ, "PATH": f"{shims}:{ssh['PATH']}", "RECEIVER": rc.receiver_path(host)})
    writes = 0
    with partial.open("ab") as fh:  # the relay's own receive, appending 16 kB at a time
        for i in range(0, len(data), 16_384):
            fh.write(data[i:i + 16_384])
            fh.flush()
            writes += 1
            time.sleep(0.002)
    partial.rename(final)
    out, err = hop.communicate(timeout=60)
    elapsed = time.monotonic() - started
    assert out.decode().split() == ["ok", digest], err
    assert Path(cmd.blob_path(host, digest, "zstd")).read_bytes() == data
    rounds = len(calls.read_text().split())
    assert 0 < rounds <= elapsed / 0.05 + 2, (rounds, elapsed, writes)
    assert rounds < writes / 4, (rounds, writes)


def test_a_blob_passes_down_two_hops_while_it_is_still_arriving(tmp_path: Path) -> None:
    """relay -> node -> leaf: the node's copy grows from the relay's as it grows, the leaf's from the
    node's; both forwards run at once (the ssh shim hands stdin to the receive sshd would force)."""
    relay, node, leaf = (str(tmp_path / n) for n in ("relay", "node", "leaf"))
    keys = str(tmp_path / "keys")
    assert run(rc.authorize_argv(rc.relay_staging(node), keys, "")).returncode == 0
    assert run(rc.authorize_argv(leaf, keys, "")).returncode == 0
    data = os.urandom(4_000_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    final = Path(cmd.blob_path(rc.relay_staging(relay), digest, "zstd"))
    final.parent.mkdir(parents=True)
    partial = Path(str(final) + ".partial")
    shim = _ssh_shim(tmp_path)
    hops = []
    for src, receiver in ((relay, rc.receiver_path(rc.relay_staging(node))), (node, rc.receiver_path(leaf))):
        argv = rc.forward_argv(rc.relay_staging(src), digest, "zstd", len(data), 0, str(tmp_path / "ship"), "h", 22,
                               10, 0)
        hops.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, **shim, "RECEIVER": receiver}))
    seen_at_leaf = []
    leaf_partial = Path(cmd.partial_path(leaf, digest, "zstd"))
    with partial.open("wb") as fh:
        for i in range(0, len(data), 500_000):
            fh.write(data[i:i + 500_000])
            fh.flush()
            time.sleep(0.3)
            seen_at_leaf.append(leaf_partial.stat().st_size if leaf_partial.exists() else 0)
    partial.rename(final)
    for hop in hops:
        out, err = hop.communicate(timeout=60)
        assert out.decode().split() == ["ok", digest], err
    assert Path(cmd.blob_path(leaf, digest, "zstd")).read_bytes() == data
    assert Path(cmd.blob_path(rc.relay_staging(node), digest, "zstd")).read_bytes() == data
    assert 0 < seen_at_leaf[-2] < len(data)  # the leaf had bytes before the relay's copy was complete


def test_the_dry_run_shows_a_node_of_the_tree(tmp_path: Path) -> None:
    from fakedocker import Image
    from test_ship_steps import _plan

    from deployer.ship import steps

    img = Image(tmp_path)
    node = Host("b", {"ansible_host": "10.0.0.2", "deploy_staging_dir": "/st"})
    plan = dataclasses.replace(_plan(img, node), relay="a", relay_staging="/sa", relay_feeds=("c",))
    planned = steps.transfer_steps(plan, node)
    labels = [s.label for s in planned]
    assert labels[:3] == ["preparing the staging dir", "authorizing relay a's key", "installing relay b's receive"]
    assert planned[1].argv[4] == "/st/relay" and "command=\"sh /st/relay/relay-receive.sh\"" in planned[1].argv[6]
    first = labels.index("sending blob <gzip blob o to relay a")
    assert labels[first + 1:first + 3] == ["relay a passes blob <gzip blob o on", "relay b passes blob <gzip blob o on"]
    assert planned[first + 2].note == "runs on b, which passes it on to c too"
    assert planned[first + 2].argv[-1] == "/st/relay-receive.sh"  # from its own copy, with no ssh
    revoke = next(s for s in planned if s.label == "removing relay a's key")
    assert revoke.note == "once the ship ends (its subtree is served by then)"
    # the site's relay as a target: its receive only, no key line, nothing to revoke
    root = steps.transfer_steps(dataclasses.replace(plan, relay="b", relay_staging="/st"), node)
    assert [s.label for s in root][:2] == ["preparing the staging dir", "installing relay b's receive"]
    assert not any("key" in s.label for s in root)


def test_a_relay_error_hints_at_the_right_link() -> None:
    other = RelayError("gpu02", "gpu01", "sending blob x failed")
    assert other.message == "gpu02: relay gpu01: sending blob x failed"
    assert "check that gpu01 is up and reaches gpu02 over SSH" in (other.hint or "")
    itself = RelayError("gpu01", "gpu01", "cannot connect")  # the relay is a target too
    assert "check that gpu01 is up and answers over SSH" in (itself.hint or "")
    assert "reaches gpu01" not in (itself.hint or "")
