"""The tarball route: resumable, verified blob transfer into staging, then load on the host.

Each missing layer's compressed blob is appended to `<blob>.partial` from the offset the host
already holds (its file size), sha256-checked on the host, and renamed to its final name. A
dropped link reconnects and sends only the tail; a final name always means "verified", so a
later run reuses complete blobs. The load dir is assembled from the blobs on the host.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from deployer.commands import ship as cmd
from deployer.errors import CommandError, TransferError
from deployer.local.cache import Blob
from deployer.ship.conn import HostConn
from deployer.transport.retry import is_transient, retrying

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_AGAIN = object()


@dataclass
class Counter:
    """Bytes put on the wire for one host, with a progress callback."""

    on_sent: Callable[[int], None] = lambda n: None
    sent: int = 0

    def add(self, n: int) -> None:
        self.sent += n
        self.on_sent(n)


def _read_from(path: str, offset: int, counter: Counter) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(offset)
        while True:
            data = fh.read(CHUNK)
            if not data:
                return
            counter.add(len(data))
            yield data


def _sizes(conn: HostConn, *paths: str) -> dict[str, int | None]:
    res = conn.run(cmd.stat_argv(paths), what="checking staged files", timeout=60)
    return cmd.parse_stat(res.stdout)


def _verify(conn: HostConn, src: str, blob: Blob, final: str) -> cmd.Verified:
    # hashing a multi-GB blob takes a while: no short timeout here
    res = conn.run(cmd.verify_argv(src, blob.digest, final), what="verifying a staged blob")
    return cmd.parse_verify(res.stdout)


def send_tail(conn: HostConn, partial: str, blob: Blob, counter: Counter,
              note: Callable[[str], None] = lambda m: None) -> None:
    """Append the part of BLOB the host lacks to PARTIAL, resuming across dropped links.

    An attempt that dies after the host acknowledged more bytes than before starts a fresh
    attempt at once; one that made no progress goes to the retry policy (backoff, budget).
    """
    last = {"offset": -1}

    def attempt() -> object:
        # single tries inside: this whole attempt is what the retry policy repeats
        session = conn.session()
        offset = cmd.parse_stat(session.run(cmd.stat_argv([partial]), timeout=60).stdout).get(partial) or 0
        if offset > blob.size:  # not ours / garbage: start over
            session.run(cmd.remove_argv([partial]), timeout=60)
            offset = 0
        progressed = offset > last["offset"]
        if last["offset"] >= 0:
            note(f"resuming {blob.digest[7:19]} at {offset} of {blob.size} bytes")
        last["offset"] = offset
        if offset == blob.size:
            return None
        try:
            session.send(cmd.append_argv(partial), _read_from(str(blob.path), offset, counter))
        except Exception as exc:
            if not is_transient(exc):
                raise
            conn.drop()
            if progressed:
                return _AGAIN
            raise
        return None

    while retrying(attempt, what=f"sending blob {blob.digest[7:19]}", host=conn.name,
                   on_retry=lambda _n, _e: conn.drop()) is _AGAIN:
        pass


def stage_blob(conn: HostConn, staging: str, blob: Blob, counter: Counter,
               note: Callable[[str], None] = lambda m: None) -> str:
    """Make sure the verified blob is at its final staging path (send what is missing)."""
    final = cmd.blob_path(staging, blob.digest, blob.codec)
    partial = cmd.partial_path(staging, blob.digest, blob.codec)
    if _sizes(conn, final).get(final) is not None:
        if _verify(conn, final, blob, final).ok:
            return final
        note(f"staged blob {blob.digest[7:19]} was corrupt; sending it again")
    for attempt in (1, 2):
        send_tail(conn, partial, blob, counter, note)
        verified = _verify(conn, partial, blob, final)
        if verified.ok:
            return final
        # the verify script deleted the bad file, so the next send starts from zero
        if attempt == 1:
            note(f"blob {blob.digest[7:19]} failed its sha256 check on the host; sending it again")
            continue
        raise TransferError(
            conn.name,
            f"layer blob {blob.digest} arrived corrupt twice (host computed {verified.actual or 'nothing'})",
            hint="check the host's disk and memory, and the staging filesystem; then ship again",
        )
    raise AssertionError("unreachable")


def write_file(conn: HostConn, path: str, data: bytes, counter: Counter) -> None:
    conn.run(cmd.write_argv(path), input=data, what=f"writing {path}", timeout=120)
    counter.add(len(data))


def decompress_layer(conn: HostConn, blob: Blob, staged: str, load: str) -> None:
    """`zstd -dc` a staged blob into the load dir on the host, checking sha256 == diff id."""
    dst = cmd.layer_path(load, blob.diff_id)
    res = conn.run(cmd.decompress_argv(staged, dst, blob.codec), what="decompressing a layer", check=False)
    actual = cmd.parse_sha256sum(res.stdout)
    if actual != blob.diff_id:
        raise TransferError(
            conn.name,
            f"layer {blob.diff_id} decompressed on the host to {actual or 'nothing'}"
            + (f": {res.stderr_tail()}" if res.stderr.strip() else ""),
            hint="check free space in the staging dir and that `zstd` works on the host",
        )


def load_and_verify(conn: HostConn, docker: tuple[str, ...], load: str, image_id: str) -> None:
    """`docker load` the assembled dir; the loaded image must be exactly image_id."""
    try:
        res = conn.run(cmd.load_argv(docker, load), what="docker load")
    except CommandError as exc:
        raise CommandError(conn.name, exc.result, what="docker load failed",
                           hint="see stderr; the staged blobs are kept, so shipping again resumes") from exc
    loaded = cmd.parse_loaded(res.stdout)
    actual = _inspect_id(conn, docker, image_id)
    if actual != image_id:
        for other in loaded:
            if other.startswith("sha256:") and other != image_id:
                conn.run(cmd.remove_image_argv(docker, other), what="removing a wrong image", check=False)
        raise TransferError(conn.name, f"docker load produced {', '.join(loaded) or 'no image'}, expected {image_id}",
                            hint="the local image may have changed during the ship; ship again")


def _inspect_id(conn: HostConn, docker: tuple[str, ...], ref: str) -> str | None:
    res = conn.run(cmd.inspect_id_argv(docker, ref), what="docker image inspect", check=False, timeout=60)
    out = res.stdout.strip()
    return out if res.ok and out.startswith("sha256:") else None


def tag_and_verify(conn: HostConn, docker: tuple[str, ...], source: str, ref: str, image_id: str) -> bool:
    """Tag SOURCE as REF, then check REF resolves to image_id on the host."""
    conn.run(cmd.tag_argv(docker, source, ref), what=f"docker tag {ref}", timeout=60)
    return _inspect_id(conn, docker, ref) == image_id


def inspect_id(conn: HostConn, docker: tuple[str, ...], ref: str) -> str | None:
    return _inspect_id(conn, docker, ref)


def elapsed(start: float) -> float:
    return time.monotonic() - start
