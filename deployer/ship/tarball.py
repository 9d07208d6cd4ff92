"""The tarball route: resumable, verified blob transfer into staging, then load on the host.

Each missing layer's compressed blob is appended to `<blob>.partial` from the offset the host
already holds (its file size), sha256-checked on the host, and renamed to its final name. A
dropped link reconnects and sends only the tail; a final name always means "verified", so a
later run reuses complete blobs. The load dir is assembled from the blobs on the host.
"""
from __future__ import annotations

import io
import logging
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from deployer.commands import ship as cmd
from deployer.errors import CommandError, TransferError
from deployer.local.cache import Blob
from deployer.ship.conn import HostConn
from deployer.transport.result import Result
from deployer.transport.retry import is_transient, retrying

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_AGAIN = object()


@dataclass
class Counter:
    """Bytes put on the wire for one host, with a progress callback (thread-safe)."""

    on_sent: Callable[[int], None] = lambda n: None
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self._lock:
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
              note: Callable[[str], None] = lambda m: None, known: int | None = None) -> None:
    """Append the part of BLOB the host lacks to PARTIAL, resuming across dropped links.

    An attempt that dies after the host acknowledged more bytes than before starts a fresh
    attempt at once; one that made no progress goes to the retry policy (backoff, budget).
    """
    last = {"offset": -1}
    first = {"known": known}

    def attempt() -> object:
        # single tries inside: this whole attempt is what the retry policy repeats
        session = conn.session()
        progressed = False
        try:
            offset = first.pop("known", None)  # the caller's fresh stat saves a round trip, once
            if offset is None:
                offset = cmd.parse_stat(session.run(cmd.stat_argv([partial]), timeout=60).stdout).get(partial) or 0
            if offset > blob.size:  # not ours / garbage: start over
                session.run(cmd.remove_argv([partial]), timeout=60)
                offset = 0
            progressed = offset > last["offset"]
            if last["offset"] >= 0:
                note(f"resuming {blob.digest[7:19]} at {offset} of {blob.size} bytes")
            last["offset"] = offset
            if offset < blob.size:
                session.send(cmd.append_argv(partial), _read_from(str(blob.path), offset, counter))
        except Exception as exc:
            if not is_transient(exc):
                raise
            conn.drop(session)
            if progressed:
                return _AGAIN
            raise
        return None

    while retrying(attempt, what=f"sending blob {blob.digest[7:19]}", host=conn.name) is _AGAIN:
        pass


def send_blob(conn: HostConn, staging: str, blob: Blob, counter: Counter,
              note: Callable[[str], None] = lambda m: None, listed: Mapping[str, int | None] | None = None) -> bool:
    """Send what the host lacks of BLOB into its .partial; True when it was already staged and verified.

    LISTED: the blob dir's files and sizes (cmd.prepare_argv), saving this blob its own stat."""
    final = cmd.blob_path(staging, blob.digest, blob.codec)
    partial = cmd.partial_path(staging, blob.digest, blob.codec)
    sizes = _sizes(conn, final, partial) if listed is None else {p: listed.get(p) for p in (final, partial)}
    if sizes.get(final) is not None:
        if _verify(conn, final, blob, final).ok:
            return True
        note(f"staged blob {blob.digest[7:19]} was corrupt; sending it again")
    send_tail(conn, partial, blob, counter, note, known=sizes.get(partial) or 0)
    return False


def finish_blob(conn: HostConn, staging: str, blob: Blob, counter: Counter,
                note: Callable[[str], None] = lambda m: None) -> str:
    """Verify a sent .partial and move it into place; a bad hash re-sends it once from zero."""
    final = cmd.blob_path(staging, blob.digest, blob.codec)
    partial = cmd.partial_path(staging, blob.digest, blob.codec)
    verified = _verify(conn, partial, blob, final)
    if verified.ok:
        return final
    # the verify script deleted the bad file, so this send starts from zero
    note(f"blob {blob.digest[7:19]} failed its sha256 check on the host; sending it again")
    send_tail(conn, partial, blob, counter, note, known=0)
    verified = _verify(conn, partial, blob, final)
    if verified.ok:
        return final
    raise TransferError(
        conn.name,
        f"layer blob {blob.digest} arrived corrupt twice (host computed {verified.actual or 'nothing'})",
        hint="check the host's disk and memory, and the staging filesystem; then ship again",
    )


def stage_blob(conn: HostConn, staging: str, blob: Blob, counter: Counter,
               note: Callable[[str], None] = lambda m: None) -> str:
    """Make sure the verified blob is at its final staging path (send what is missing)."""
    if send_blob(conn, staging, blob, counter, note):
        return cmd.blob_path(staging, blob.digest, blob.codec)
    return finish_blob(conn, staging, blob, counter, note)


def load_dir_tar(image_id_hex: str, config: bytes, manifest: bytes) -> bytes:
    """The small tar (manifest.json + config) that seeds the load dir on the host."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("manifest.json", manifest), (f"{image_id_hex}.json", config)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def seed_load_dir(conn: HostConn, load: str, seed: bytes, counter: Counter, replace: bool = True) -> None:
    """Extract the seed tar into the load dir (REPLACE: into a fresh one, else next to what is there)."""
    argv = cmd.unpack_argv(load) if replace else cmd.extract_argv(load)
    conn.run(argv, input=seed, what="preparing the load dir", timeout=120)
    counter.add(len(seed))


def _bad_layer(conn: HostConn, res: Result, diff: str, actual: str, mode: str) -> TransferError:
    return TransferError(conn.name, f"layer {diff} decompressed on the host to {actual}"
                         + (f": {res.stderr_tail()}" if res.stderr.strip() else ""),
                         hint=f"check free space in the staging dir and that `{mode}` works on the host")


def unpack_layer(conn: HostConn, mode: str, src: str, dst: str, diff_id: str) -> None:
    """Decompress a verified blob into the load dir now, checking its diff id (install skips it then)."""
    res = conn.run(cmd.unpack_layer_argv(mode, src, dst, diff_id), what="decompressing a layer", check=False)
    out = cmd.parse_install(res.stdout)
    if res.exited == 4 and out.bad_layer:
        raise _bad_layer(conn, res, *out.bad_layer, mode)
    if not res.ok:
        raise CommandError(conn.name, res, what="decompressing a staged layer failed",
                           hint="check free space in the staging dir; staged blobs are kept, so shipping again resumes")


def install(conn: HostConn, docker: tuple[str, ...], load: str, image_id: str, ref: str, mode: str,
            layers: list[tuple[str, str, str]]) -> bool:
    """Assemble, load, verify the id, clean staging and tag, in one remote command; True if REF verified."""
    res = conn.run(cmd.install_argv(docker, load, image_id, ref, mode, layers), what="docker load", check=False)
    out = cmd.parse_install(res.stdout)
    if res.exited == 4 and out.bad_layer:
        raise _bad_layer(conn, res, *out.bad_layer, mode)
    if res.exited == 6:
        for other in cmd.parse_loaded(res.stdout):
            if other.startswith("sha256:") and other != image_id:
                conn.run(cmd.remove_image_argv(docker, other), what="removing a wrong image", check=False)
        raise TransferError(conn.name, f"docker load produced {out.loaded or 'no image'}, expected {image_id}",
                            hint="the local image may have changed during the ship; ship again")
    if not res.ok:
        what = {3: "assembling the load dir failed", 5: "docker load failed", 7: "docker tag failed"}
        raise CommandError(conn.name, res, what=what.get(res.exited, "installing the image failed"),
                           hint="see stderr; staged blobs are kept, so shipping again resumes")
    return out.tagged == image_id


def inspect_id(conn: HostConn, docker: tuple[str, ...], ref: str) -> str | None:
    res = conn.run(cmd.inspect_id_argv(docker, ref), what="docker image inspect", check=False, timeout=60)
    out = res.stdout.strip()
    return out if res.ok and out.startswith("sha256:") else None


def tag_and_verify(conn: HostConn, docker: tuple[str, ...], source: str, ref: str, image_id: str) -> bool:
    """Tag SOURCE as REF, then check REF resolves to image_id on the host."""
    res = conn.run(cmd.tag_verify_argv(docker, source, ref), what=f"docker tag {ref}", timeout=60)
    return res.stdout.strip() == image_id


def elapsed(start: float) -> float:
    return time.monotonic() - start
