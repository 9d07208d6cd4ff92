"""Resumable staging, the layer loader and the deploy lock, with the real remote scripts run by a local sh.

LocalSession runs each argv as a local process (no SSH: that is what tests/integration covers)
and can cut a send() after N bytes the way a dropped link does: the remote `cat` keeps what it
got, and the sender sees a transient TransferError.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from fakedocker import Image, calls, fake_docker
from receivers import dead_receive

from deployer import lock as locks
from deployer.commands import load as ld
from deployer.commands import ship as cmd
from deployer.commands.load import PARTIAL_LABEL
from deployer.errors import CommandError, ConnectError, DeployError, LockError, TransferError
from deployer.inventory.host import Host
from deployer.local.cache import Blob
from deployer.local.export import Growing
from deployer.local.image import ImageInfo
from deployer.ship import loader as loader_module
from deployer.ship import steps
from deployer.ship.conn import HostConn
from deployer.ship.loader import IncompleteImage, LayerLoader, install, load_files
from deployer.ship.tarball import CHUNK, Counter, send_tail, stage_blob, stream_blob
from deployer.tarfmt import OCI_LAYER, Descriptor
from deployer.transport.result import Result
from deployer.transport.retry import GiveUp


class LocalSession:
    """A Session whose 'host' is this machine; send() may die after a scripted number of bytes."""

    def __init__(self, drops: list[int | None], corrupt: bool = False) -> None:
        self.host = "local"
        self.alive = True
        self.drops = drops  # shared by every connection: one entry consumed per send()
        self.corrupt = corrupt

    def run(self, argv: Sequence[str], *, check: bool = True, input: bytes | None = None,
            timeout: float | None = None) -> Result:
        proc = subprocess.run(list(argv), input=input, capture_output=True, check=False, timeout=timeout)
        res = Result.of(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode(), self.host)
        if check and not res.ok:
            raise CommandError(self.host, res)
        return res

    def send(self, argv: Sequence[str], chunks: Iterable[bytes], *, check: bool = True,
             timeout: float | None = None) -> Result:
        budget = self.drops.pop(0) if self.drops else None
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        sent = 0
        for chunk in chunks:
            if self.corrupt:
                chunk = bytes(len(chunk))
            if budget is not None and sent + len(chunk) > budget:
                proc.stdin.write(chunk[: budget - sent])
                proc.stdin.close()
                proc.wait()
                self.alive = False
                raise TransferError(self.host, f"connection lost after {budget} bytes", transient=True)
            proc.stdin.write(chunk)
            sent += len(chunk)
        out, err = proc.communicate()
        res = Result.of(argv, proc.returncode, out.decode(), err.decode(), self.host)
        if check and not res.ok:
            raise CommandError(self.host, res)
        return res

    def close(self) -> None:
        self.alive = False


def conn_with(drops: list[int | None], corrupt: bool = False) -> tuple[HostConn, list[LocalSession]]:
    sessions: list[LocalSession] = []

    def connector(_host: Host) -> LocalSession:
        sessions.append(LocalSession(drops, corrupt))
        return sessions[-1]

    return HostConn(Host("local"), connector=connector), sessions


def make_blob(tmp_path: Path, size: int) -> Blob:
    data = os.urandom(size)
    path = tmp_path / "blob.zst"
    path.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return Blob("sha256:" + "0" * 64, "zstd", 3, path, digest, size, size)


@pytest.fixture(autouse=True)
def short_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYER_RETRY_BUDGET", "3")


def test_send_tail_resumes_from_the_acknowledged_offset(tmp_path: Path) -> None:
    blob = make_blob(tmp_path, 5 * CHUNK + 123)
    staging = str(tmp_path / "staging")
    conn, sessions = conn_with([CHUNK + 1000, 2 * CHUNK + 7, None])  # two drops, then a good link
    counter = Counter()
    notes: list[str] = []
    assert not stage_blob(conn, staging, blob, counter, notes.append)
    final = cmd.blob_path(staging, blob.digest, "zstd")
    assert Path(final).read_bytes() == blob.path.read_bytes()
    assert not Path(cmd.partial_path(staging, blob.digest, "zstd")).exists()
    assert len(sessions) == 3  # reconnected after each drop
    # each drop loses at most the chunk in flight: never a restart from zero
    assert blob.size <= counter.sent <= blob.size + 2 * CHUNK
    assert [n.split(" at ")[1] for n in notes] == [f"{CHUNK + 1000} of {blob.size} bytes",
                                                   f"{3 * CHUNK + 1007} of {blob.size} bytes"]


def test_resume_across_runs_sends_only_the_tail(tmp_path: Path) -> None:
    blob = make_blob(tmp_path, 3 * CHUNK)
    staging = str(tmp_path / "staging")
    partial = Path(cmd.partial_path(staging, blob.digest, "zstd"))
    partial.parent.mkdir(parents=True)
    partial.write_bytes(blob.path.read_bytes()[: 2 * CHUNK + 5])  # a previous run got this far
    conn, _ = conn_with([])
    counter = Counter()
    stage_blob(conn, staging, blob, counter)
    assert counter.sent == CHUNK - 5
    # and a blob already staged (verified) is reused with nothing sent
    counter = Counter()
    stage_blob(conn, staging, blob, counter)
    assert counter.sent == 0


def test_tampered_partial_and_final_are_resent(tmp_path: Path) -> None:
    blob = make_blob(tmp_path, 2 * CHUNK)
    staging = str(tmp_path / "staging")
    final = Path(cmd.blob_path(staging, blob.digest, "zstd"))
    final.parent.mkdir(parents=True)
    final.write_bytes(os.urandom(blob.size))  # right name, wrong bytes
    notes: list[str] = []
    conn, _ = conn_with([])
    stage_blob(conn, staging, blob, Counter(), notes.append)
    assert final.read_bytes() == blob.path.read_bytes() and "was corrupt" in notes[0]
    final.unlink()
    partial = Path(cmd.partial_path(staging, blob.digest, "zstd"))
    partial.write_bytes(b"garbage" * 10)  # a bad prefix: detected only by the final hash
    counter = Counter()
    notes.clear()
    stage_blob(conn, staging, blob, counter, notes.append)
    assert final.read_bytes() == blob.path.read_bytes()
    assert counter.sent == blob.size - 70 + blob.size
    assert notes[0] == f"resuming {blob.digest[7:19]} at 70 of {blob.size} bytes"  # what the partial held
    assert "failed its sha256 check" in notes[1]


def test_a_dead_ships_receive_still_writing_is_stopped_and_the_resume_is_exact(tmp_path: Path) -> None:
    """A killed ship's receive went on appending after the next ship listed the partial (seen on
    the testbed: its tail landed after the resume's, the sha256 failed, the blob went again)."""
    blob = make_blob(tmp_path, 3 * CHUNK)
    data = blob.path.read_bytes()
    staging = str(tmp_path / "staging")
    partial = Path(cmd.partial_path(staging, blob.digest, "zstd"))
    final = cmd.blob_path(staging, blob.digest, "zstd")
    dead = dead_receive(cmd.receive_argv(str(partial), final, blob.digest, blob.size, 0), data[:CHUNK + 5000], partial)
    try:
        conn, _ = conn_with([])
        counter = Counter()
        notes: list[str] = []
        # the listing was read when 5000 fewer bytes were there: the dead one wrote those since
        assert not stage_blob(conn, staging, blob, counter, notes.append, listed={str(partial): CHUNK})
        try:
            code = dead.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        assert code == -15, "the dead receive was left appending"
    finally:
        dead.kill()
    assert Path(final).read_bytes() == data and not partial.exists()
    assert counter.sent == blob.size - CHUNK  # the tail once: no sha256 failure
    assert notes == [f"resuming {blob.digest[7:19]} at {CHUNK} of {blob.size} bytes"]


def test_a_partial_shorter_than_listed_is_resumed_from_what_the_host_holds(tmp_path: Path) -> None:
    blob = make_blob(tmp_path, 2 * CHUNK)
    staging = str(tmp_path / "staging")
    partial = Path(cmd.partial_path(staging, blob.digest, "zstd"))
    partial.parent.mkdir(parents=True)
    partial.write_bytes(blob.path.read_bytes()[:1000])
    conn, _ = conn_with([])
    counter = Counter()
    notes: list[str] = []
    assert not stage_blob(conn, staging, blob, counter, notes.append, listed={str(partial): 5000})
    assert Path(cmd.blob_path(staging, blob.digest, "zstd")).read_bytes() == blob.path.read_bytes()
    # what was listed, then what the host holds
    assert notes == [f"resuming {blob.digest[7:19]} at {n} of {blob.size} bytes" for n in (5000, 1000)]
    assert blob.size - 1000 <= counter.sent <= blob.size - 1000 + 2 * CHUNK  # what the host refused, at most


def test_a_send_through_a_relay_that_refuses_retries_quietly_and_gives_the_relay_up(tmp_path: Path) -> None:
    """The bytes come from a relay (VIA) that refuses twice, then serves: the host is asked for its
    offset on each try, and the resume is said once per offset, not on every retry (the testbed
    showed it 11 times). A relay that goes on refusing is given up as GIVE_UP says, well within
    the budget; the host the blob goes to is not what it gives up on."""
    blob = make_blob(tmp_path, 2 * CHUNK)
    data = blob.path.read_bytes()
    staging = str(tmp_path / "staging")
    partial = Path(cmd.partial_path(staging, blob.digest, "zstd"))
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:1000])
    refusals = [2]

    def relay(b: Blob, offset: int) -> Result:
        if refusals[0]:
            refusals[0] -= 1
            raise ConnectError("relay01", "cannot connect to 10.0.0.9:22: Connection refused", unreachable=True)
        return LocalSession([]).send(steps.receive(staging, b.digest, b.codec, b.size, offset).argv, [data[offset:]])

    conn, _ = conn_with([])
    notes: list[str] = []
    assert not stage_blob(conn, staging, blob, Counter(), notes.append, listed={str(partial): 1000}, via=relay,
                          give_up=GiveUp(0.3, of=lambda host: host != "local"))
    assert Path(cmd.blob_path(staging, blob.digest, "zstd")).read_bytes() == data
    # resumed at 1000 each time: said once, not on each of the relay's refusals
    assert notes == [f"resuming {blob.digest[7:19]} at 1000 of {blob.size} bytes"]

    refusals[0] = 10_000
    (tmp_path / "other").mkdir()
    began = time.monotonic()
    with pytest.raises(ConnectError) as err:  # the budget is 3 s here (short_retries)
        send_tail(conn, staging, make_blob(tmp_path / "other", CHUNK), Counter(), via=relay,
                  give_up=GiveUp(0.3, of=lambda host: host != "local"))
    assert err.value.host == "relay01" and time.monotonic() - began < 2.5


def test_corrupt_twice_is_a_transfer_error_naming_the_blob(tmp_path: Path) -> None:
    blob = make_blob(tmp_path, CHUNK)
    conn, _ = conn_with([], corrupt=True)
    with pytest.raises(TransferError, match=f"{blob.digest} arrived corrupt twice") as info:
        stage_blob(conn, str(tmp_path / "staging"), blob, Counter())
    assert not info.value.transient


def test_no_progress_gives_up_within_the_budget(tmp_path: Path) -> None:
    blob = make_blob(tmp_path, CHUNK)
    conn, sessions = conn_with([0] * 1000)  # every connection dies before a byte lands
    with pytest.raises(TransferError, match="connection lost"):
        send_tail(conn, str(tmp_path / "staging"), blob, Counter())
    assert 2 <= len(sessions) < 50  # retried with backoff, then stopped


def local_session() -> LocalSession:
    return LocalSession([])


def test_lock_names_the_holder_and_releases_only_its_own(tmp_path: Path) -> None:
    staging = str(tmp_path / "staging")
    mine = locks.acquire(local_session(), staging, "trainer:v3")
    with pytest.raises(LockError, match=r"another deploy is in progress: lock held by .*@.*, pid \d+, "
                                        r"shipping trainer:v3, since "):
        locks.acquire(local_session(), staging, "other:v1")
    locks.Lock("local", staging, "not-the-token").release(local_session())
    assert Path(staging, "lock").exists()
    mine.release(local_session())
    assert not Path(staging, "lock").exists()


def test_lock_wait_then_acquire(tmp_path: Path) -> None:
    staging = str(tmp_path / "staging")
    held = locks.acquire(local_session(), staging, "a:1")
    import threading

    threading.Timer(0.3, lambda: held.release(local_session())).start()
    locks.acquire(local_session(), staging, "b:1", wait_s=5, poll_s=0.1).release(local_session())


def test_stale_lock_is_reported_and_broken_only_on_request(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    (staging / "lock").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    owner = {"by": "ann@ws", "workstation": socket.gethostname(), "pid": dead.pid, "image": "x:1",
             "since": "2024-01-01T00:00:00+00:00", "token": "t"}
    (staging / "lock" / "owner").write_text(json.dumps(owner) + "\n")
    with pytest.raises(LockError, match=f"looks stale \\(its process {dead.pid} on this workstation is gone\\)"
                                        ": held by ann@ws") as info:
        locks.acquire(local_session(), str(staging), "y:1")
    assert "--break-lock" in str(info.value)
    locks.acquire(local_session(), str(staging), "y:1", break_lock=True).release(local_session())


def test_stale_reason_by_age() -> None:
    old = cmd.LockState(False, 10 * 3600, {"workstation": "elsewhere", "pid": 1})
    assert locks.stale_reason(old, stale_after_s=6 * 3600) == "it is 10 h old"
    fresh = cmd.LockState(False, 60, {"workstation": "elsewhere", "pid": 1})
    assert locks.stale_reason(fresh, stale_after_s=6 * 3600) is None
    here = cmd.LockState(False, 60, {"workstation": "ws1", "pid": 42})
    assert locks.stale_reason(here, workstation="ws1", pid_alive=lambda pid: False) is not None
    assert locks.stale_reason(here, workstation="ws1", pid_alive=lambda pid: True) is None


def test_layer_loader_registers_layers_as_they_land_then_install_finishes(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    conn, _ = conn_with([])
    notes: list[str] = []
    counter = Counter()
    loader = LayerLoader(conn, docker, img.info, img.staging, "gzip", range(4), counter, notes.append).start()
    loader.add(img.blobs[1])  # out of order: nothing can load before layer 1
    loader.add(img.blobs[0])
    deadline = time.monotonic() + 20
    while loader.next < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    images = json.loads(state.read_text())["images"]
    assert loader.next == 2
    assert list(images.values()) == [{PARTIAL_LABEL: img.staging}]  # a stand-in holds layers 1-2
    sent = counter.sent
    loader.add(img.blobs[3])
    loader.add(img.blobs[2])  # layers 3-4 complete the image: that run is install's, in its one round trip
    time.sleep(0.3)
    loader.close()
    assert loader.next == 2 and notes == [] and sent > 0 and counter.sent == sent
    assert list(json.loads(state.read_text())["images"].values()) == [{PARTIAL_LABEL: img.staging}]
    rest = load_files(img.info, range(loader.next, 4), frozenset(range(4)), {b.diff_id: b for b in img.blobs},
                      img.staging, "gzip")
    assert [f.diff_id for f in rest] == img.diff_ids[2:]
    before = len(calls(state))
    assert install(conn, docker, img.info, img.staging, "gzip", img.config, rest, img.blobs, img.blobs, counter)
    # a "legacy" load names REF and makes the image whole: no inspect, no tag after it
    assert sorted(calls(state)[before:]) == ["image rm", "load"]
    after = json.loads(state.read_text())
    assert list(after["images"]) == [img.id] and after["tags"] == {"t:v": img.id}
    assert not list(Path(cmd.blob_dir(img.staging)).iterdir())


def test_layer_loader_stops_on_a_failed_load_and_install_loads_the_rest(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    conn, _ = conn_with([])
    notes: list[str] = []
    good = img.blobs[1].path.read_bytes()
    img.blobs[1].path.write_bytes(b"not gzip")  # e.g. a disk error on the host
    loader = LayerLoader(conn, docker, img.info, img.staging, "gzip", range(4), Counter(), notes.append).start()
    for blob in img.blobs[:3]:
        loader.add(blob)
    deadline = time.monotonic() + 20
    while not notes and time.monotonic() < deadline:
        time.sleep(0.05)
    loader.add(img.blobs[3])
    loader.close()
    assert loader.next == 0
    assert notes and "loading the rest at the end" in notes[0]
    img.blobs[1].path.write_bytes(good)
    rest = load_files(img.info, range(loader.next, 4), frozenset(range(4)), {b.diff_id: b for b in img.blobs},
                      img.staging, "gzip")
    assert [f.diff_id for f in rest] == img.diff_ids
    assert install(conn, docker, img.info, img.staging, "gzip", img.config, rest, img.blobs, img.blobs, Counter())
    assert list(json.loads(state.read_text())["images"]) == [img.id]


def test_a_light_ships_loader_hands_its_failure_to_the_sender_and_loads_nothing_more(tmp_path: Path) -> None:
    # planned from what the last ship left: a failed load means the host is not as remembered, and
    # the sender stops to have it checked in full, rather than install loading it all again at the end
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    conn, _ = conn_with([])
    notes: list[str] = []
    img.blobs[1].path.write_bytes(b"not gzip")  # Docker cannot register it
    loader = LayerLoader(conn, docker, img.info, img.staging, "gzip", range(4), Counter(), notes.append,
                         light=True).start()
    for blob in img.blobs[:3]:
        loader.add(blob)
    _wait(lambda: loader.failure is not None)
    loader.add(img.blobs[3])
    loader.close()
    assert isinstance(loader.failure, DeployError) and "docker load of layers 1-" in str(loader.failure)
    assert loader.next == 0 and notes == []  # nothing said: the runner says why it checks the host
    assert not state.exists() or json.loads(state.read_text())["images"] == {}  # no image made


def _wait(cond: Callable[[], bool], within: float = 20) -> None:
    deadline = time.monotonic() + within
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)


def _half_arrived(blob: Blob, head: int = 10) -> tuple[bytes, Path]:
    """BLOB as the host holds it while it arrives: only its first HEAD bytes, in its .partial."""
    data = blob.path.read_bytes()
    blob.path.unlink()
    partial = Path(f"{blob.path}.partial")
    partial.write_bytes(data[:head])
    return data, partial


def test_layer_loader_loads_the_layer_arriving_now_as_it_lands(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    conn, _ = conn_with([])
    notes: list[str] = []
    arriving = img.blobs[1]
    data, partial = _half_arrived(arriving)  # its first bytes are on the host
    loader = LayerLoader(conn, docker, img.info, img.staging, "gzip", range(4), Counter(), notes.append).start()
    loader.add(img.blobs[0])
    loader.arriving(arriving)  # layers 1-2 load now, the second as it lands
    _wait(lambda: Path(ld.standins_dir(img.staging)).is_dir())
    time.sleep(0.3)
    assert loader.next == 0  # still reading layer 2
    with partial.open("ab") as f:
        f.write(data[10:])
    partial.rename(arriving.path)  # the receive checked it and named it
    loader.add(arriving)
    _wait(lambda: loader.next == 2)
    loader.close()
    assert loader.next == 2 and notes == []
    assert list(json.loads(state.read_text())["images"].values()) == [{PARTIAL_LABEL: img.staging}]


def _small_top_first(img: Image, loader: LayerLoader, had_first: bool = False) -> None:
    """The route's order for a first ship: layers 1-2 (HAD_FIRST: 2 alone, the host has 1), then the
    top (4), then layer 3 as it lands."""
    arriving = img.blobs[2]
    data, partial = _half_arrived(arriving)
    loader.start()
    if not had_first:
        loader.add(img.blobs[0])
    loader.add(img.blobs[1])
    _wait(lambda: loader.next == 2)  # layers 1-2: a stand-in
    loader.add(img.blobs[3])  # the top, already here: it waits for layer 3
    time.sleep(0.3)
    assert loader.next == 2 and not loader.loaded
    loader.arriving(arriving)  # layers 3-4 and the real config load now, layer 3 as it lands
    time.sleep(0.3)
    assert loader.next == 2
    with partial.open("ab") as f:
        f.write(data[10:])
    partial.rename(arriving.path)
    loader.add(arriving)
    _wait(lambda: loader.next == 4)
    loader.close()


def test_layer_loader_loads_and_names_the_image_itself_when_its_small_top_came_first(tmp_path: Path) -> None:
    """The route sent the top layer before the one below it: the run that completes the image ends
    with the blob arriving, so the loader loads it with the real config as that blob lands. A
    "legacy" load that succeeds made the image whole (Docker checks each layer; the id is the
    config's digest), so that load names REF too, and the install only removes the stand-ins and
    the blobs: no second load, no inspect, no tag after the last byte."""
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    conn, _ = conn_with([])
    notes: list[str] = []
    counter = Counter()
    loader = LayerLoader(conn, docker, img.info, img.staging, "gzip", range(4), counter, notes.append,
                         config=lambda: img.config)
    _small_top_first(img, loader)
    assert loader.loaded and loader.named and notes == []
    after = json.loads(state.read_text())
    assert img.id in after["images"] and PARTIAL_LABEL not in (after["images"][img.id] or {})  # no stand-in
    assert after["tags"] == {"t:v": img.id}  # named by its load
    assert img.id[7:] not in [p.name for p in Path(ld.standins_dir(img.staging)).iterdir()]  # not on record
    before = len(calls(state))
    assert install(conn, docker, img.info, img.staging, "gzip", img.config, [], img.blobs, img.blobs, counter,
                   loaded=True, named=True) == img.id
    assert calls(state)[before:] == ["image rm"]  # the stand-in, and nothing else asked of Docker
    after = json.loads(state.read_text())
    assert list(after["images"]) == [img.id] and after["tags"] == {"t:v": img.id}  # the stand-in went
    assert not list(Path(cmd.blob_dir(img.staging)).iterdir())


def _pulled_first_layer(where: Path) -> tuple[Image, tuple[str, ...], Path, dict[str, Descriptor]]:
    """An OCI host that holds the image's first layer from a pull: its snapshot, under another blob
    (the blob that names it, which its content store lacks)."""
    where.mkdir()
    img = Image(where)
    docker, state = fake_docker(where)
    state.write_text(json.dumps({"images": {}, "chains": [img.diff_ids[0]], "tags": {}, "content": [],
                                 "manifests": {}}))
    return img, docker, state, {img.diff_ids[0]: Descriptor(f"{OCI_LAYER}+gzip", "sha256:" + "9" * 64, 99)}


def test_an_oci_layer_loader_names_the_image_only_when_this_ship_loaded_every_layer(tmp_path: Path) -> None:
    """The containerd store can load an image whose left-out layers it lacks (moby#49784): the
    loader's last load names REF only when this ship's loads registered every layer. When the host
    had one before (here pulled: its snapshot, not the blob the manifest names), the load leaves
    REF alone and the install's check finds the image incomplete."""
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    conn, _ = conn_with([])
    loader = LayerLoader(conn, docker, img.info, img.staging, "link", range(4), Counter(), fmt="oci",
                         config=lambda: img.config)
    _small_top_first(img, loader)
    assert loader.loaded and loader.named
    after = json.loads(state.read_text())
    named = after["tags"]["t:v"]
    before = len(calls(state))
    assert install(conn, docker, img.info, img.staging, "link", img.config, [], img.blobs, img.blobs, Counter(),
                   fmt="oci", loaded=True, named=True) == named
    assert calls(state)[before:] == ["image rm"]
    # the same image onto a host that holds its first layer from a pull, under another blob
    img, docker, state, pulled = _pulled_first_layer(tmp_path / "other")
    loader = LayerLoader(conn, docker, img.info, img.staging, "link", range(1, 4), Counter(), fmt="oci",
                         reused=pulled, config=lambda: img.config)
    _small_top_first(img, loader, had_first=True)
    assert loader.loaded and not loader.named and json.loads(state.read_text())["tags"] == {}
    with pytest.raises(IncompleteImage):
        install(conn, docker, img.info, img.staging, "link", img.config, [], img.blobs[1:], img.blobs[1:],
                Counter(), fmt="oci", reused=pulled, loaded=True)
    assert json.loads(state.read_text())["tags"] == {}  # no one runs the broken image by its name


def test_an_oci_install_checks_the_image_only_when_the_host_had_a_layer_before(tmp_path: Path) -> None:
    """The install's own load follows the same rule as the loader's (made_whole): an OCI load of an
    image whose every layer this ship sent is whole, and nothing is asked of Docker after it; one
    that leaves out a layer the host had (a pull: another blob) is checked, and found incomplete."""
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    conn, _ = conn_with([])
    files = load_files(img.info, range(4), frozenset(range(4)), {b.diff_id: b for b in img.blobs}, img.staging, "link")
    named = install(conn, docker, img.info, img.staging, "link", img.config, files, img.blobs, img.blobs, Counter(),
                    fmt="oci")
    assert named is not None and calls(state) == ["load"]
    assert json.loads(state.read_text())["tags"] == {"t:v": named}
    img, docker, state, pulled = _pulled_first_layer(tmp_path / "other")
    files = load_files(img.info, range(4), frozenset(range(1, 4)), {b.diff_id: b for b in img.blobs}, img.staging,
                       "link")
    with pytest.raises(IncompleteImage):
        install(conn, docker, img.info, img.staging, "link", img.config, files, img.blobs[1:], img.blobs[1:],
                Counter(), fmt="oci", reused=pulled)
    assert calls(state)[:2] == ["load", "image inspect"] and json.loads(state.read_text())["tags"] == {}


def test_layer_loader_leaves_a_top_run_without_a_staged_layer_above_the_arriving_one_to_install(
        tmp_path: Path) -> None:
    """The top layer arriving last (image order, e.g. a re-ship's one layer) is install's, as before."""
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    conn, _ = conn_with([])
    loader = LayerLoader(conn, docker, img.info, img.staging, "gzip", range(4), Counter(),
                         config=lambda: img.config).start()
    for blob in img.blobs[:3]:
        loader.add(blob)
    _wait(lambda: loader.next == 3)
    loader.arriving(img.blobs[3])
    time.sleep(0.3)
    loader.add(img.blobs[3])
    loader.close()
    assert loader.next == 3 and not loader.loaded
    assert list(json.loads(state.read_text())["images"].values()) == [{PARTIAL_LABEL: img.staging}]  # a stand-in


def test_layer_loader_does_not_wait_for_a_blob_whose_send_failed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader_module, "STREAM_STALL_S", 1)
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    conn, _ = conn_with([])
    arriving = img.blobs[1]
    _half_arrived(arriving)  # then the link is cut for good
    loader = LayerLoader(conn, docker, img.info, img.staging, "gzip", range(4), Counter()).start()
    loader.add(img.blobs[0])
    loader.arriving(arriving)
    _wait(lambda: Path(ld.standins_dir(img.staging)).is_dir())
    started = time.monotonic()
    loader.close()  # the ship's failure path
    assert time.monotonic() - started < 0.5 and loader.next == 0
    time.sleep(2)  # the load gave up by itself once the blob stopped growing: nothing loaded
    assert not (json.loads(state.read_text())["images"] if state.exists() else {})


def test_layer_loader_closed_before_it_takes_in_an_arriving_blob_leaves_it_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The send failed (Ctrl-C, a dead link) while a blob was arriving, and the loader thread wakes
    only after close(): it loads what is staged, not a load that would wait for the dead blob
    (STREAM_STALL_S) while the ship's failure path waits for it."""
    monkeypatch.setattr(loader_module, "STREAM_STALL_S", 5)
    img = Image(tmp_path)
    docker, _ = fake_docker(tmp_path)
    conn, _ = conn_with([])
    arriving = img.blobs[1]
    _half_arrived(arriving)
    loader = LayerLoader(conn, docker, img.info, img.staging, "gzip", range(4), Counter())
    loader.add(img.blobs[0])
    loader.arriving(arriving)
    loader.close()
    started = time.monotonic()
    loader.start()  # as if its thread woke just now
    assert loader._thread is not None
    loader._thread.join(timeout=30)
    assert time.monotonic() - started < 4 and loader.next == 1  # layer 1 alone, the staged one


def test_load_files_skip_present_layers_and_repeats(tmp_path: Path) -> None:
    img = Image(tmp_path)
    blobs = {b.diff_id: b for b in img.blobs}
    files = load_files(img.info, range(4), frozenset({2, 3}), blobs, img.staging, "link")
    assert [f.diff_id for f in files] == img.diff_ids[2:]
    assert [f.size for f in files] == [b.size for b in img.blobs[2:]]  # link: the blob as is
    doubled = ImageInfo("t:v", img.id, (img.diff_ids[0], img.diff_ids[0]), 0, "linux", "amd64", ())
    assert len(load_files(doubled, range(2), frozenset({0, 1}), blobs, img.staging, "gzip")) == 1


class GrowingExport:
    """The export side of stream_blob: BLOB 'being compressed', its bytes handed out in pieces."""

    def __init__(self, blob: Blob) -> None:
        self.blob = blob
        self.growing = Growing(blob.diff_id, blob.codec, blob.level, blob.path)

    def follow(self, growing: Growing) -> Iterator[bytes]:
        data = self.blob.path.read_bytes()
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    def finished(self, growing: Growing) -> Blob:
        return self.blob


def test_a_blob_streamed_as_it_is_compressed_is_named_once_it_matches(tmp_path: Path) -> None:
    blob = make_blob(tmp_path, 3 * CHUNK + 5)
    staging = str(tmp_path / "staging")
    conn, sessions = conn_with([])
    export = GrowingExport(blob)
    counter = Counter()
    assert stream_blob(conn, staging, export.growing, export, counter) == blob  # type: ignore[arg-type]
    assert Path(cmd.blob_path(staging, blob.digest, "zstd")).read_bytes() == blob.path.read_bytes()
    assert counter.sent == blob.size and len(sessions) == 1
    assert [p.name for p in Path(cmd.blob_dir(staging)).iterdir()] == [Path(cmd.blob_path(staging, blob.digest, "zstd")).name]


def test_a_streamed_blob_resumes_after_a_drop_and_after_a_killed_ship(tmp_path: Path) -> None:
    blob = make_blob(tmp_path, 3 * CHUNK + 5)
    staging = str(tmp_path / "staging")
    conn, _ = conn_with([CHUNK + 10, None])  # the link drops part-way through the stream
    export = GrowingExport(blob)
    held: list[int] = []
    counter = Counter(on_held=held.append)
    notes: list[str] = []
    assert stream_blob(conn, staging, export.growing, export, counter, notes.append) == blob  # type: ignore[arg-type]
    assert Path(cmd.blob_path(staging, blob.digest, "zstd")).read_bytes() == blob.path.read_bytes()
    assert len(notes) == 2 and "as it is compressed stopped" in notes[0] and "resuming it" in notes[0]
    assert notes[1] == f"resuming {blob.digest[7:19]} at {CHUNK + 10} of {blob.size} bytes"
    assert held == []  # what this ship streamed before the drop was sent by it, not held from before
    assert blob.size <= counter.sent <= blob.size + 100_000  # the piece in flight, not a restart
    # a killed ship left the head at the growing path: the next ship sends only the rest
    staging2 = str(tmp_path / "staging2")
    growing = Path(cmd.growing_path(staging2, blob.diff_id, "zstd", 3))
    growing.parent.mkdir(parents=True)
    growing.write_bytes(blob.path.read_bytes()[:250_000])
    conn, _ = conn_with([])
    notes.clear()
    counter = Counter(on_held=held.append)
    stream_blob(conn, staging2, export.growing, export, counter, notes.append,  # type: ignore[arg-type]
                listed={str(growing): 250_000})
    assert counter.sent == blob.size - 250_000 and not growing.exists()
    assert held == [250_000]  # what the progress shows as there already
    assert notes == [f"resuming layer {blob.diff_id[7:19]} at byte 250000, where an earlier ship stopped"]
    assert Path(cmd.blob_path(staging2, blob.digest, "zstd")).read_bytes() == blob.path.read_bytes()
    # and one the cache finished meanwhile (sent whole, not streamed) resumes from it too
    staging3 = str(tmp_path / "staging3")
    growing = Path(cmd.growing_path(staging3, blob.diff_id, "zstd", 3))
    growing.parent.mkdir(parents=True)
    growing.write_bytes(blob.path.read_bytes()[:250_000])
    held.clear()
    counter = Counter(on_held=held.append)
    notes.clear()
    stage_blob(conn, staging3, blob, counter, notes.append, listed={str(growing): 250_000})
    assert counter.sent == blob.size - 250_000 and not growing.exists()
    assert notes == [f"resuming {blob.digest[7:19]} at 250000 of {blob.size} bytes"] and held == [250_000]


def test_a_streamed_blob_that_arrives_wrong_is_sent_again_then_fails_clearly(tmp_path: Path) -> None:
    blob = make_blob(tmp_path, CHUNK)
    staging = str(tmp_path / "staging")
    conn, _ = conn_with([], corrupt=True)  # every byte arrives as zero
    export = GrowingExport(blob)
    notes: list[str] = []
    with pytest.raises(TransferError, match="arrived corrupt twice"):
        stream_blob(conn, staging, export.growing, export, Counter(), notes.append)  # type: ignore[arg-type]
    assert "sending it again" in notes[0]
    assert not Path(cmd.growing_path(staging, blob.diff_id, "zstd", 3)).exists()
    assert not Path(cmd.blob_path(staging, blob.digest, "zstd")).exists()
