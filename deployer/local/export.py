"""Export an image's layers once per ship: from the local layer store, else one streamed `docker
save`, compressed into the cache.

The SHIP side creates one Exporter for all hosts; senders wait on `.blob()`, iterate `.ready()`
or take `.next_blob()`, and can start on layer 1 while layer 2 is still being compressed, or on
a layer while it is compressed (`.follow()` reads the blob as it grows). The daemon's own
overlay2 store is read first when we can (no `docker save` start-up, layers in image order);
`docker save` is the fallback for whatever the store could not give. Nothing holds a whole
layer in memory: layers are read in 1 MiB chunks, hashed and fed to the compressors, which
write straight into the cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import tarfile
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import docker
import zstandard

from deployer.codec import CODECS
from deployer.errors import LocalError
from deployer.local.cache import Blob, BlobWriter, Cache
from deployer.local.chain import chain_ids
from deployer.local.client import docker_client, translated
from deployer.local.compress import (
    Compressor,
    codec_level,
    compressor,
    decompressor,
    sniff,
)
from deployer.local.image import ImageInfo, is_containerd
from deployer.local.savestream import StreamReader, classify, identify_v1, legacy_dir
from deployer.local.store import LayerStore

if TYPE_CHECKING:
    from deployer.local.content import ContentStore

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class _Cancelled(Exception):
    pass


class _Dropped(Exception):
    """The layer being compressed is no longer wanted (narrow())."""


@dataclass
class Growing:
    """A blob being compressed right now: its bytes so far are in PATH (the cache's temp file);
    BLOB once it is complete and in the cache, ERROR when it was given up (see Exporter.follow)."""

    diff_id: str
    codec: str
    level: int
    path: Path
    blob: Blob | None = None
    error: LocalError | None = None


class Exporter:
    """Produce the wanted compressed layer blobs (codec -> diff ids) and the image config."""

    def __init__(
        self,
        image: ImageInfo,
        wanted: Mapping[str, set[str]],
        level: int = 3,
        client: docker.DockerClient | None = None,
        cache: Cache | None = None,
        *,
        use_store: bool = True,
    ) -> None:
        for codec, ids in wanted.items():
            if codec not in CODECS:
                raise ValueError(f"unknown codec {codec!r} (expected one of {CODECS})")
            stray = set(ids) - set(image.diff_ids)
            if stray:
                raise ValueError(f"not layers of {image.ref}: {sorted(stray)}")
        self.image = image
        self.wanted = {codec: frozenset(ids) for codec, ids in wanted.items() if ids}
        self.level = level
        self.cache = cache or Cache()
        self._client = client
        self._cond = threading.Condition()
        self._blobs: dict[tuple[str, str], Blob] = {}
        self._order: list[Blob] = []
        self._growing: dict[tuple[str, str], Growing] = {}  # (codec, diff id) -> the blob being compressed
        self._config: bytes | None = None
        self._error: LocalError | None = None
        self._done = False
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: StreamReader | None = None
        self._store_bytes = 0
        self.use_store = use_store
        self.exported_blobs = 0  # blobs compressed by this export (not taken from the cache)
        # where the export read from: "cache" (nothing to read), "store" (the daemon's layer store
        # only) or "docker save" (used for at least part); None until known
        self.source: str | None = None

    # ---- public API -------------------------------------------------------------------
    def start(self) -> Exporter:
        """Take what the cache has; read what is missing in the background (store, else docker save)."""
        if self._thread is not None or self._done:
            return self  # already started
        for codec, ids in self.wanted.items():
            for diff_id in ids:
                blob = self.cached(diff_id, codec)
                if blob is not None:
                    self._add(blob)
        self._config = self.cache.get_config(self.image.config_digest)
        if self._config is not None and not self._pending():
            self.source = "cache"
            with self._cond:
                self._done = True
            return self
        self._thread = threading.Thread(target=self._run, name=f"export {self.image.ref}", daemon=True)
        self._thread.start()
        return self

    def cached(self, diff_id: str, codec: str) -> Blob | None:
        """The blob of this layer in the local cache at this export's level, if it is there."""
        return self.cache.lookup(diff_id, codec, codec_level(codec, self.level))

    def narrow(self, codec: str, keep: set[str] | frozenset[str]) -> bool:
        """Produce exactly KEEP's `codec` blobs from now on (a head start learns what hosts need).

        A layer being compressed that KEEP drops is abandoned; blobs already made stay available.
        Layers of KEEP this export was not making are taken from the cache; False (nothing
        changed) when the cache no longer has one."""
        with self._cond:
            made = {d for (c, d) in self._blobs if c == codec}
            extra = set(keep) - self.wanted.get(codec, frozenset()) - made
            cached = {d: self.cached(d, codec) for d in extra}
            if any(blob is None for blob in cached.values()):
                return False
            self.wanted = {**self.wanted, codec: frozenset(keep) | frozenset(made)}
            for blob in cached.values():
                assert blob is not None
                self._add(blob)
            self._cond.notify_all()
            return True

    def unmade(self, codec: str) -> frozenset[str]:
        """The CODEC layers this export has still to make."""
        with self._cond:
            return frozenset(d for d in self.wanted.get(codec, frozenset()) if (codec, d) not in self._blobs)

    def config(self, timeout: float | None = None) -> bytes:
        """The image's raw config JSON (its sha256 is the image id); blocks until known."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._config is not None or self._done, timeout):
                raise LocalError(f"timed out waiting for the config of {self.image.ref}")
            if self._config is None:
                raise self._error or LocalError(f"docker save of {self.image.ref} had no image config")
            return self._config

    def blob(self, diff_id: str, codec: str, timeout: float | None = None) -> Blob:
        """The compressed blob of one layer; blocks until ready, raises the export's error."""
        key = (codec, diff_id)
        if diff_id not in self.wanted.get(codec, ()):
            cached = self.cached(diff_id, codec)
            if cached is None:
                raise ValueError(f"{codec} blob of {diff_id} was not requested from this Exporter")
            return cached
        blob, done = self._wait(key, timeout)
        if blob is not None:
            return blob
        if not done:
            raise LocalError(f"timed out waiting for layer {diff_id[:19]} of {self.image.ref}")
        raise self._error or LocalError(f"docker save of {self.image.ref} did not contain layer {diff_id}")

    def wait_blob(self, diff_id: str, codec: str, timeout: float) -> Blob | None:
        """The compressed blob of one layer if it is ready within TIMEOUT seconds, else None (the
        export still makes it); raises the export's error."""
        blob, done = self._wait((codec, diff_id), timeout)
        if blob is None and done and self._error is not None:
            raise self._error
        return blob if blob is not None else self.cached(diff_id, codec)

    def _wait(self, key: tuple[str, str], timeout: float | None) -> tuple[Blob | None, bool]:
        """Until blob KEY is made or the export ended (at most TIMEOUT s): (the blob, whether it ended)."""
        with self._cond:
            self._cond.wait_for(lambda: key in self._blobs or self._done, timeout)
            return self._blobs.get(key), self._done

    def ready(self) -> Iterator[Blob]:
        """Every wanted blob as it becomes available; raises the export's error.

        Of the blobs available at once, the lowest layer comes first: a host registers layers
        bottom-up as they land (ship.loader), so a cached upper layer sent ahead of a lower one
        only waits there, and a whole image from the cache goes out in image order."""
        given: set[tuple[str, str]] = set()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: len(given) < len(self._order) or self._done)
                key = next(((c, d) for d in self.image.diff_ids for c in self.wanted
                            if (c, d) in self._blobs and (c, d) not in given), None)
                if key is None:
                    if self._error is not None:
                        raise self._error
                    return
            given.add(key)
            yield self._blobs[key]

    def next_blob(self, codec: str, order: Sequence[str], taken: set[str] | frozenset[str],
                  stream: bool = False) -> Blob | Growing | None:
        """Wait for the next CODEC blob of ORDER's layers not in TAKEN: the first in ORDER of those
        available; else, with STREAM, the first one being compressed right now (follow() reads it as
        it grows). None once the export ended without more of them (the cache may still have
        them: blob()). Raises the export's error."""
        with self._cond:
            while True:
                for diff_id in order:
                    if diff_id not in taken and (codec, diff_id) in self._blobs:
                        return self._blobs[codec, diff_id]
                if stream:
                    for diff_id in order:
                        growing = self._growing.get((codec, diff_id))
                        if growing is not None and diff_id not in taken:
                            return growing
                if self._done:
                    if self._error is not None:
                        raise self._error
                    return None
                self._cond.wait()

    def follow(self, growing: Growing, poll_s: float = 0.02) -> Iterator[bytes]:
        """GROWING's bytes as the compressor writes them, up to the end of the finished blob.
        LocalError when the blob is given up (the export failed or the layer is not wanted)."""
        try:
            fh = open(growing.path, "rb")  # closed below (the writer may rename it meanwhile)
        except FileNotFoundError:  # finished (renamed into the cache) or given up already
            fh = open(self.finished(growing).path, "rb")
        with fh:
            read = 0
            while True:
                data = fh.read(CHUNK)
                if data:
                    read += len(data)
                    yield data
                    continue
                with self._cond:
                    if growing.error is not None:
                        raise growing.error
                    if growing.blob is not None and read >= growing.blob.size:
                        return
                    if growing.blob is None:
                        self._cond.wait(poll_s)  # the compressor does not signal every write

    def finished(self, growing: Growing) -> Blob:
        """GROWING's blob once it is complete (waits); raises why not when it was given up."""
        with self._cond:
            self._cond.wait_for(lambda: growing.blob is not None or growing.error is not None)
            if growing.blob is None:
                assert growing.error is not None
                raise growing.error
            return growing.blob

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the export finished (True) or TIMEOUT passed (False); raise its error if it failed."""
        with self._cond:
            done = self._cond.wait_for(lambda: self._done, timeout)
            if self._error is not None:
                raise self._error
            if not done and self._thread is not None and not self._thread.is_alive():
                # cannot happen while _run's finally holds; a poller must still never spin forever
                raise LocalError(f"the export of {self.image.ref} ended without a result")
            return done

    @property
    def done(self) -> bool:
        return self._done

    @property
    def bytes_read(self) -> int:
        """Layer bytes read so far from the store and the `docker save` stream (progress; total ≈ image.size)."""
        return self._store_bytes + (self._reader.bytes_read if self._reader else 0)

    def close(self) -> None:
        """Stop the export (if running) and wait for its thread."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def __enter__(self) -> Exporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the worker ---------------------------------------------------------------------
    def _add(self, blob: Blob) -> None:
        with self._cond:
            key = (blob.codec, blob.diff_id)
            if key not in self._blobs:
                self._blobs[key] = blob
                self._order.append(blob)
                self._cond.notify_all()

    def _pending(self, diff_id: str | None = None) -> list[str]:
        """Codecs still missing for diff_id (any diff id when None)."""
        with self._cond:
            return [
                codec
                for codec, ids in self.wanted.items()
                for d in ids
                if (diff_id is None or d == diff_id) and (codec, d) not in self._blobs
            ]

    def _run(self) -> None:
        """The export thread. It owns its failure: whatever it raises becomes the LocalError its
        consumers get, and they are always woken (else ready()/blob()/config() would wait forever)."""
        error: LocalError | None = LocalError(f"export of {self.image.ref} stopped without a result")
        try:
            client = self._client or docker_client()
            if self.use_store and self._from_store(client):
                self.source = "store"
            else:
                self.source = "docker save"
                self._from_save(client)
            error = None
        except _Cancelled:
            error = LocalError(f"export of {self.image.ref} was cancelled")
        except LocalError as exc:
            error = exc
        except OSError as exc:
            error = _failed(self.image.ref, exc, "check free space in the cache dir")
        except (tarfile.TarError, zlib.error, ValueError) as exc:
            error = _failed(self.image.ref, exc, "the docker save stream or a layer is corrupt: "
                            "check the local Docker daemon, or rebuild the image")
        except zstandard.ZstdError as exc:  # compressing (memory), or a corrupt zstd layer in the stream
            error = _failed(self.image.ref, exc, "check free memory; if it persists, rebuild the image")
        except Exception as exc:  # a bug: still the consumers' error, not a silent hang
            log.debug("export of %s failed", self.image.ref, exc_info=True)
            error = _failed(self.image.ref, exc, "this is a bug in deployer: run with -v for the traceback")
        finally:
            with self._cond:
                self._error = error
                self._done = True
                self._cond.notify_all()

    def _from_store(self, client: docker.DockerClient) -> bool:
        """Config and pending layers from the daemon's layer store, in image order; False: use docker save."""
        store: LayerStore | ContentStore | None = LayerStore.open(client, self.image)
        if store is None:
            from deployer.local.content import ContentStore  # only a containerd-store workstation

            store = ContentStore.open(client, self.image) if is_containerd(client) else None
        if store is None:
            return False
        if self._config is None:
            self._take_config(store.config())
        for index, diff_id in enumerate(self.image.diff_ids):
            if self._cancel.is_set():
                raise _Cancelled()
            if not self._pending(diff_id):
                continue
            try:
                self._take_chunks(self._counted(store.open_layer(index)), diff_id, "the local layer store")
            except (LocalError, OSError, ValueError) as exc:
                log.info("layer %d (%s) of %s could not be read from the local layer store, using docker save "
                         "for the rest: %s", index, diff_id[:19], self.image.ref, exc)
                return False
        return True

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._store_bytes += len(chunk)
            yield chunk

    def _from_save(self, client: docker.DockerClient) -> None:
        """Whatever is still pending, from one streamed `docker save`."""
        with translated(f"exporting {self.image.ref} ({self.image.id[:19]}) with docker save"):
            chunks = client.api.get_image(self.image.id, chunk_size=CHUNK)
            try:
                self._consume(StreamReader(iter(chunks)))
            finally:
                close = getattr(chunks, "close", None)
                if close:
                    close()
        if self._config is None:
            raise LocalError(f"docker save of {self.image.ref} had no image config {self.image.config_digest}")
        missing = sorted({d for codec, ids in self.wanted.items() for d in ids if (codec, d) not in self._blobs})
        if missing:
            raise LocalError(f"docker save of {self.image.ref} did not contain layers {missing}")

    def _consume(self, reader: StreamReader) -> None:
        self._reader = reader
        diff_ids = frozenset(self.image.diff_ids)
        chain = chain_ids(self.image.diff_ids)
        dir_index: dict[str, int] = {}  # legacy layout: v1 dir -> layer index, from its json
        with tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK) as tar:
            for member in tar:
                if self._cancel.is_set():
                    raise _Cancelled()
                if not member.isfile():
                    continue
                entry = classify(member.name, self.image.config_digest, diff_ids)
                v1_dir = legacy_dir(member.name, "json")
                if entry.kind == "config":
                    self._take_config(_read_all(tar.extractfile(member)))
                elif v1_dir is not None:
                    index = identify_v1(_read_all(tar.extractfile(member)), chain)
                    if index is not None:
                        dir_index[v1_dir] = index
                elif entry.kind == "layer":
                    index = dir_index.get(legacy_dir(member.name, "layer.tar") or "")
                    diff_id = entry.diff_id or (self.image.diff_ids[index] if index is not None else None)
                    if diff_id is not None:
                        self._take_known(tar.extractfile(member), diff_id)
                    elif self._pending():
                        self._take_unknown(tar.extractfile(member), None, strict=True)
                elif entry.kind == "maybe-layer" and self._pending():
                    f = tar.extractfile(member)
                    head = f.read(CHUNK) if f is not None else b""
                    codec = sniff(head)
                    if codec is not None:  # else a manifest or an index
                        self._take_unknown(f, (codec, head), strict=False)
                if self._config is not None and not self._pending():
                    return  # everything wanted is here: no need to read the rest of the image

    def _take_config(self, data: bytes) -> None:
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != self.image.config_digest:
            raise LocalError(f"docker save of {self.image.ref}: config does not hash to {self.image.config_digest}")
        self.cache.put_config(self.image.config_digest, data)
        with self._cond:
            self._config = data
            self._cond.notify_all()

    def _take_known(self, f: IO[bytes] | None, diff_id: str) -> None:
        """A layer whose identity the stream told us: compress it if wanted, verify its hash."""
        if f is not None:
            self._take_chunks(_chunks(f), diff_id, "docker save")

    def _take_chunks(self, chunks: Iterator[bytes], diff_id: str, source: str) -> None:
        """Compress one layer's tar into every codec still pending for it; its sha256 must be diff_id."""
        codecs = self._pending(diff_id)
        if not codecs:
            return  # not wanted: the caller skips its bytes
        with self._writing(codecs, diff_id) as writers:
            try:
                actual, total = self._pipe(chunks, writers, wanted=(diff_id, codecs))
            except _Dropped:
                log.info("stopped compressing layer %s of %s: no host needs it", diff_id[:19], self.image.ref)
                return  # the writers were aborted; a docker save stream skips the rest of the member
            if actual != diff_id:
                for w, _ in writers:
                    w.abort()
                raise LocalError(
                    f"{source} of {self.image.ref}: layer {diff_id} hashes to {actual}",
                    hint="the local image store may be corrupt; rebuild or re-pull the image",
                )
            self._commit(writers, diff_id, total)

    def _take_unknown(self, f: IO[bytes] | None, compressed: tuple[str, bytes] | None, strict: bool) -> None:
        """A layer known only after hashing: spool it raw to disk, then compress if wanted."""
        if f is None:
            return
        spool = self.cache.writer("", "spool", 0)
        try:
            source = _chunks(f, compressed[1] if compressed else b"")
            actual, total = self._pipe(_inflated(source, compressed[0]) if compressed else source, [], spool)
            codecs = self._pending(actual) if actual in self.image.diff_ids else []
            if strict and actual not in self.image.diff_ids:
                raise LocalError(f"docker save of {self.image.ref} holds a layer {actual} that is not in the image")
            if codecs:
                spool.file.close()
                with self._writing(codecs, actual) as writers, open(spool.tmp, "rb") as fh:
                    self._pipe(_chunks(fh), writers)
                    self._commit(writers, actual, total)
        finally:
            spool.abort()

    @contextlib.contextmanager
    def _writing(self, codecs: list[str], diff_id: str) -> Iterator[list[tuple[BlobWriter, Compressor]]]:
        """The layer's writers, each one followable (Growing) until it is committed; on the way out,
        whoever follows them hears how it went."""
        writers = self._writers(codecs, diff_id)
        why: BaseException | None = None
        try:
            yield writers
        except BaseException as exc:
            why = exc
            raise
        finally:
            self._settle(writers, diff_id, why)

    def _writers(self, codecs: list[str], diff_id: str) -> list[tuple[BlobWriter, Compressor]]:
        writers = [
            (w, compressor(codec, self.level, w))
            for codec in dict.fromkeys(codecs)
            for w in [self.cache.writer(diff_id, codec, codec_level(codec, self.level))]
        ]
        with self._cond:
            for w, _ in writers:
                self._growing[w.codec, diff_id] = Growing(diff_id, w.codec, w.level, w.tmp)
            self._cond.notify_all()
        return writers

    def _settle(self, writers: list[tuple[BlobWriter, Compressor]], diff_id: str, why: BaseException | None) -> None:
        """The writers' blobs are committed or given up (WHY): whoever follows them hears which."""
        if not isinstance(why, LocalError):
            why = LocalError(f"compressing layer {diff_id[:19]} of {self.image.ref} stopped: "
                             + (f"{type(why).__name__}: {why}" if why is not None else "no host needs it any more"))
        with self._cond:
            for w, _ in writers:
                growing = self._growing.pop((w.codec, diff_id), None)
                if growing is not None and growing.blob is None:
                    growing.error = why
            self._cond.notify_all()

    def _pipe(
        self, chunks: Iterator[bytes], writers: list[tuple[BlobWriter, Compressor]], spool: BlobWriter | None = None,
        wanted: tuple[str, list[str]] | None = None,
    ) -> tuple[str, int]:
        """Hash raw chunks and feed them to every compressor; returns (sha256 digest, raw bytes).

        WANTED: the layer's diff id and codecs, to stop (_Dropped) as soon as no one wants it any more
        (a dict lookup per chunk: narrow() replaces self.wanted whole, so no lock is needed)."""
        h = _Hasher()
        total = 0
        try:
            for raw in chunks:
                if self._cancel.is_set():
                    raise _Cancelled()
                if wanted is not None and not any(wanted[0] in self.wanted.get(c, ()) for c in wanted[1]):
                    raise _Dropped()
                h.update(raw)
                total += len(raw)
                if spool is not None:
                    spool.write(raw)
                for _, c in writers:
                    c.write(raw)
            for _, c in writers:
                c.finish()
        except BaseException:
            h.hexdigest()  # ends its thread
            for w, _ in writers:
                w.abort()
            raise
        return f"sha256:{h.hexdigest()}", total

    def _commit(self, writers: list[tuple[BlobWriter, Compressor]], diff_id: str, raw_size: int) -> None:
        for w, _ in writers:
            blob = w.commit(raw_size, diff_id=diff_id)
            with self._cond:
                growing = self._growing.get((w.codec, diff_id))
                if growing is not None:
                    growing.blob = blob
            self._add(blob)
            self.exported_blobs += 1
            log.info("compressed layer %s of %s: %s, %d -> %d bytes", diff_id[:19], self.image.ref, w.codec,
                     raw_size, blob.size)


class _Hasher:
    """sha256 of a layer's chunks on a thread of its own: hashing the layer overlaps compressing it
    (hashlib and zstd both let go of the GIL on big buffers). Measured on the bench image's 183 MB
    layer (half random, half copies of one binary): 0.70 s to read, hash and compress it on one thread,
    of which 0.17 s was this hash. Chunks must not change once given (bytes)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # at most ~8 MiB behind
        self._thread = threading.Thread(target=self._run, name="layer sha256", daemon=True)
        self._thread.start()

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        """The digest of everything given; ends the thread (call it once)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self._hash.hexdigest()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)


def _failed(ref: str, exc: BaseException, hint: str) -> LocalError:
    """EXC, raised in the export thread, as the error its consumers raise (`raise ... from exc`)."""
    error = LocalError(f"exporting {ref} failed: {type(exc).__name__}: {exc}", hint=hint)
    error.__cause__ = exc
    return error


def _chunks(f: IO[bytes], head: bytes = b"") -> Iterator[bytes]:
    if head:
        yield head
    while chunk := f.read(CHUNK):
        yield chunk


def _inflated(chunks: Iterator[bytes], codec: str) -> Iterator[bytes]:
    inflate = decompressor(codec)
    for chunk in chunks:
        raw = inflate(chunk)
        if raw:
            yield raw


def _read_all(f: IO[bytes] | None) -> bytes:
    return f.read() if f is not None else b""
