"""The tarball route's transfer: resumable, verified blob sends into the host's staging dir.

Each missing layer's compressed blob is appended to `<blob>.partial` from the offset the host
already holds (its file size), sha256-checked on the host as it lands, and renamed to its final
name. A dropped link reconnects and sends only the tail; a final name always means "verified",
so a later run reuses complete blobs.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from deployer.commands import ship as cmd
from deployer.errors import TransferError
from deployer.local.cache import Blob
from deployer.local.export import Exporter, Growing
from deployer.ship import steps
from deployer.ship.conn import HostConn
from deployer.transport.result import Result
from deployer.transport.retry import GiveUp, is_transient, retrying

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_AGAIN = object()


@dataclass
class Counter:
    """Bytes and layers put on the wire for one host, with a progress callback (thread-safe).

    What a transfer has sent so far, also when it fails part-way (the partial ShipResult)."""

    on_sent: Callable[[int], None] = lambda n: None
    on_held: Callable[[int], None] = lambda n: None  # held_once's bytes, for the progress shown
    sent: int = 0
    layers: int = 0
    lan: int = 0  # bytes a site relay passed on to the host over its LAN (deployer.ship.relay)
    relay: str | None = None  # that relay, once it serves the host
    fell_back: bool = False  # the host's relay could not serve it: the rest went straight from the workstation
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _held: set[str] = field(default_factory=set, repr=False)  # the layers held_once has counted

    def add(self, n: int, *, report: bool = True) -> None:
        with self._lock:
            self.sent += n
        if report:
            self.on_sent(n)

    def add_lan(self, n: int) -> None:
        """Bytes a relay passed on: the host's progress (its own uplink share is counted by add)."""
        with self._lock:
            self.lan += max(0, n)
        self.on_sent(max(0, n))

    def add_layers(self, n: int = 1) -> None:
        with self._lock:
            self.layers += n

    def held_once(self, diff_id: str, n: int) -> None:
        """The host held N bytes of the layer's blob when this ship first looked (an earlier ship's,
        resumed from there): counted once per layer, so what this ship sent and resumes is not."""
        with self._lock:
            if diff_id in self._held:
                return
            self._held.add(diff_id)
        if n > 0:
            self.on_held(n)


def _read_from(path: str, offset: int, counter: Counter) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(offset)
        while True:
            data = fh.read(CHUNK)
            if not data:
                return
            counter.add(len(data))
            yield data


def _sizes(conn: HostConn, *paths: str, give_up: GiveUp | None = None) -> dict[str, int | None]:
    res = conn.run(cmd.stat_argv(paths), what="checking staged files", timeout=60, give_up=give_up)
    return cmd.parse_stat(res.stdout)


def _verify(conn: HostConn, src: str, blob: Blob, final: str, give_up: GiveUp | None = None) -> cmd.Verified:
    # hashing a multi-GB blob takes a while: no short timeout here
    res = conn.run(cmd.verify_argv(src, blob.digest, final), what="verifying a staged blob", give_up=give_up)
    return cmd.parse_verify(res.stdout)


Forward = Callable[[Blob, int], Result]  # (blob, offset) -> the host's receive answer; a relay's


def send_tail(conn: HostConn, staging: str, blob: Blob, counter: Counter,
              note: Callable[[str], None] = lambda m: None, known: int | None = None,
              via: Forward | None = None, give_up: GiveUp | None = None) -> cmd.Received:
    """Append the part of BLOB the host lacks to its .partial, resuming across dropped links.

    The host hashes what it receives and moves a complete, matching blob to its final name
    (`ok`), or deletes a complete, wrong one (`mismatch`). An attempt that dies after the host
    acknowledged more bytes than before starts a fresh attempt at once; one that made no
    progress goes to the retry policy (backoff, budget). VIA: the bytes come from a site relay.
    GIVE_UP: a relay's part, where a direct send is the fallback: stop retrying a relay that is
    down as it says (retrying's), not when the whole budget is spent.
    """
    final = cmd.blob_path(staging, blob.digest, blob.codec)
    partial = cmd.partial_path(staging, blob.digest, blob.codec)
    last = {"offset": -1}
    first = {"known": known}
    shrunk = {"seen": False}

    def attempt() -> object:
        # single tries inside: this whole attempt is what the retry policy repeats
        session = conn.session()
        progressed = False
        try:
            offset = first.pop("known", None)  # the caller's fresh listing saves a round trip, once
            if offset is None:
                sizes = cmd.parse_stat(session.run(cmd.stat_argv([partial, final]), timeout=60).stdout)
                if sizes.get(final) is not None:
                    return cmd.Received("ok", blob.digest)  # moved into place, but the reply was lost
                offset = sizes.get(partial) or 0
            if offset > blob.size:  # not ours / garbage: start over
                session.run(cmd.remove_argv([partial]), timeout=60)
                offset = 0
            if last["offset"] < 0:
                counter.held_once(blob.diff_id, offset)
            progressed = offset > last["offset"]
            if offset != last["offset"] and (offset or last["offset"] >= 0):
                # said once per offset (not again on each retry from there), and for what an earlier ship left
                note(f"resuming {blob.digest[7:19]} at {offset} of {blob.size} bytes")
            last["offset"] = offset
            if via is not None:
                res = via(blob, offset)
            else:
                res = session.send(steps.receive(staging, blob.digest, blob.codec, blob.size, offset).argv,
                                   _read_from(str(blob.path), offset, counter))
        except Exception as exc:
            if not is_transient(exc):
                raise
            conn.drop(session)
            if progressed:
                return _AGAIN
            raise
        got = cmd.parse_receive(res.stdout)
        if got.status in ("ok", "mismatch"):
            return got
        if via is not None and got.status == "short" and int(got.detail) > offset:
            return _AGAIN  # the relay's copy stalled or the LAN hop dropped after some progress
        if via is None and got.status == "short" and int(got.detail) < offset and not shrunk["seen"]:
            shrunk["seen"] = True  # the host holds less than it listed (it took nothing): once more from there
            first["known"] = int(got.detail)
            return _AGAIN
        held = f"holds {got.detail} of {blob.size} bytes" if got.status == "short" else "gave no answer"
        raise TransferError(conn.name, f"receiving blob {blob.digest[7:19]}: the host {held}"
                            + (f": {res.stderr_tail()}" if res.stderr.strip() else ""),
                            hint="check free space in the staging dir; shipping again resumes",
                            transient=via is not None)

    while True:
        got = retrying(attempt, what=f"sending blob {blob.digest[7:19]}", host=conn.name, give_up=give_up)
        if got is not _AGAIN:
            assert isinstance(got, cmd.Received)
            return got


def blob_paths(staging: str, blob: Blob) -> tuple[str, str, str]:
    """BLOB's final, partial (a resumable send's) and growing (a send as it is compressed) paths."""
    return (cmd.blob_path(staging, blob.digest, blob.codec), cmd.partial_path(staging, blob.digest, blob.codec),
            cmd.growing_path(staging, blob.diff_id, blob.codec, blob.level))


def staged_sizes(conn: HostConn, staging: str, blob: Blob, give_up: GiveUp | None = None) -> dict[str, int | None]:
    """The sizes of BLOB's paths on the host (None: absent): stage_blob's look, or its LISTED."""
    return _sizes(conn, *blob_paths(staging, blob), give_up=give_up)


def held_bytes(sizes: Mapping[str, int | None], staging: str, blob: Blob) -> int:
    """How much of BLOB the host holds, by its STAGED_SIZES: all of it once staged, else its partial."""
    final, partial, _ = blob_paths(staging, blob)
    return blob.size if sizes.get(final) is not None else sizes.get(partial) or 0


def stage_blob(conn: HostConn, staging: str, blob: Blob, counter: Counter,
               note: Callable[[str], None] = lambda m: None, listed: Mapping[str, int | None] | None = None,
               via: Forward | None = None, give_up: GiveUp | None = None) -> bool:
    """Make sure the verified BLOB is at its final staging path; True when it was there already.

    LISTED: the blob dir's files and sizes (cmd.prepare_argv), saving this blob its own stat.
    A blob that arrives corrupt is sent once more from zero. VIA, GIVE_UP: send_tail's."""
    paths = blob_paths(staging, blob)
    final, partial, growing = paths
    sizes = staged_sizes(conn, staging, blob, give_up) if listed is None else {p: listed.get(p) for p in paths}
    if sizes.get(final) is not None:
        if _verify(conn, final, blob, final, give_up=give_up).ok:
            return True
        note(f"staged blob {blob.digest[7:19]} was corrupt; sending it again")
    if sizes.get(partial) is None and sizes.get(growing):
        # its head was sent while it was compressed (stream_blob), by a killed ship or before a drop
        kept = steps.name_blob(growing, partial, blob.digest, leftover=True)
        out = conn.run(kept.argv, what=kept.label, timeout=60, give_up=give_up).stdout.strip()
        sizes[partial] = int(out) if out.isdigit() else None
    known = sizes.get(partial) or 0
    for tries in (1, 2):
        got = send_tail(conn, staging, blob, counter, note, known=known, via=via, give_up=give_up)
        if got.status == "ok":
            return False
        known = 0  # the host deleted the bad file: the next send starts from zero
        if tries == 1:
            note(f"blob {blob.digest[7:19]} failed its sha256 check on the host; sending it again")
    raise TransferError(
        conn.name,
        f"layer blob {blob.digest} arrived corrupt twice (host computed {got.detail or 'nothing'})",
        hint="check the host's disk and memory, and the staging filesystem; then ship again",
    )


def stream_blob(conn: HostConn, staging: str, growing: Growing, exporter: Exporter, counter: Counter,
                note: Callable[[str], None] = lambda m: None, listed: Mapping[str, int | None] | None = None,
                give_up: GiveUp | None = None) -> Blob:
    """Send a blob while it is still being compressed (else the link waits for the compressor),
    and name it on the host once its size and sha256 there match the finished blob's.

    The host's copy is named by layer, codec and level: what a killed ship left there (LISTED)
    is resumed, since compressing the same layer again gives the same bytes (and the hash check
    says when it did not). A dropped link or a mismatch ends in stage_blob, which resumes from
    what the host holds (or starts over), so the guarantees are stage_blob's (GIVE_UP too).
    Returns the blob."""
    path = cmd.growing_path(staging, growing.diff_id, growing.codec, growing.level)
    held = (listed or {}).get(path) or 0
    step = steps.receive_growing(path, growing.diff_id, held)
    log.info("%s: %s%s", conn.name, step.label, f" from byte {held}" if held else "")
    counter.held_once(growing.diff_id, held)
    if held:
        note(f"resuming layer {growing.diff_id[7:19]} at byte {held}, where an earlier ship stopped")
    got: tuple[int, str] | None = None
    session = conn.session()
    try:
        chunks = _counting(_skip(exporter.follow(growing), held), counter)
        got = cmd.parse_growing(session.send(step.argv, chunks).stdout)
    except Exception as exc:
        if not is_transient(exc):
            raise
        conn.drop(session)
        note(f"{step.label} stopped ({str(exc).splitlines()[0]}); resuming it once it is compressed")
    blob = exporter.finished(growing)
    if got == (blob.size, blob.digest):
        named = steps.name_blob(path, cmd.blob_path(staging, blob.digest, blob.codec), blob.digest)
        conn.run(named.argv, what=named.label, timeout=60, give_up=give_up)
        return blob
    if got is not None:  # all of it arrived, but not as sent: start over
        note(f"layer {growing.diff_id[7:19]} arrived as {got[1][7:19]} ({got[0]} bytes), not {blob.digest[7:19]}; "
             "sending it again")
        conn.run(cmd.remove_argv([path]), what="removing a wrong blob", timeout=60, give_up=give_up)
        stage_blob(conn, staging, blob, counter, note, listed={}, give_up=give_up)
    else:  # what arrived is the blob's head: stage_blob resumes it
        stage_blob(conn, staging, blob, counter, note, give_up=give_up)
    return blob


def _skip(chunks: Iterator[bytes], n: int) -> Iterator[bytes]:
    """CHUNKS without their first N bytes."""
    for data in chunks:
        if n >= len(data):
            n -= len(data)
            continue
        yield data[n:] if n else data
        n = 0


def _counting(chunks: Iterator[bytes], counter: Counter) -> Iterator[bytes]:
    for data in chunks:
        counter.add(len(data))
        yield data


def tag_and_verify(conn: HostConn, docker: tuple[str, ...], source: str, ref: str, image_id: str) -> bool:
    """Tag SOURCE as REF, then check REF resolves to image_id on the host."""
    step = steps.tag(docker, source, ref)
    res = conn.run(step.argv, what=step.label, timeout=60)
    return res.stdout.strip() == image_id
