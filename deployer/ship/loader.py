"""Register an image's layers with Docker on the host as they land, then install the image.

`docker load` unpacks and registers layers only after it has read its whole input, so a load
after the last blob adds all of that work to the end of the ship. Instead, whenever the next
layers (in image order) are staged, a stand-in image made of the layers so far is loaded
(deployer.commands.load): Docker registers them while later blobs are still in flight. A run
may end with the layer whose blob is arriving right now (`arriving`): its load reads the blob
as the host receives it, so Docker has it unpacked when its last byte lands, not a load later.
The last run of layers (the one that completes the image) is left to `install`, which loads it
with the real config, verifies the id, removes the stand-ins and the staged blobs, and tags:
one round trip less than a last stand-in load followed by the install (a re-ship of one
layer is that one run). Except when that run ends with the blob arriving (the route sends a small
top layer just before the layer below it): then the loader loads the image itself, with its real
config, as that blob lands, and `install` only checks, cleans up and tags (`loaded`); when that
load makes the image whole by construction (`made_whole`), it names the image's ref too, and `install`
only cleans up (`named`). Anything else the loader did not get to, `install` loads too.
"""
from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from deployer import interrupt
from deployer.commands import load as ld
from deployer.commands import ship as cmd
from deployer.errors import CommandError, DeployError, TransferError
from deployer.local.cache import Blob
from deployer.local.image import ImageInfo
from deployer.refs import normalize
from deployer.ship import steps
from deployer.ship.conn import HostConn
from deployer.ship.tarball import Counter
from deployer.tarfmt import OCI_LAYER, Descriptor
from deployer.transport.batch import Batch
from deployer.transport.result import Result

log = logging.getLogger(__name__)
LOAD_TIMEOUT_S = 600.0
LOAD_MIN_RATE = 5e6  # bytes/s a stand-in load may not be slower than before it counts as hung
STREAM_MIN_RATE = 50e3  # the same for a load that reads its last blob as it arrives (the link's pace)
STREAM_STALL_S = 60  # such a load gives up after this long without a new byte of that blob


class LayerLoader:
    """Loads the staged layers in image order while the sender goes on (one thread per host)."""

    def __init__(self, conn: HostConn, docker: tuple[str, ...], image: ImageInfo, staging: str, mode: str,
                 missing: Sequence[int], counter: Counter,
                 note: Callable[[str], None] = lambda m: None, enabled: bool = True,
                 fmt: str = "legacy", reused: Mapping[str, Descriptor] | None = None,
                 config: Callable[[], bytes] | None = None, light: bool = False) -> None:
        """LIGHT: MISSING is what the last ship left, not what was read: a failed load is the sender's
        to act on (failure) at once, not install's to load again at the end."""
        self._conn, self._docker, self._image, self._staging, self._mode = conn, docker, image, staging, mode
        self._config = config  # the image's real config, for a last run that completes the image
        self._fmt, self._reused = fmt, dict(reused or {})
        self._missing = frozenset(missing)
        self._counter, self._note = counter, note
        self._staged: dict[str, Blob] = {}
        self._arriving: Blob | None = None  # the blob being sent now (not staged yet)
        self._following: str | None = None  # the diff id of the arriving blob the running load reads
        self._cond = threading.Condition()
        self._closed = False
        self.next = min(self._missing, default=len(image.diff_ids))  # first layer not registered yet
        self.named = False  # the last load made the image whole and named its ref (final after close())
        self._light = light
        self.failure: DeployError | None = None  # why a load failed (LIGHT only): the host is not as remembered
        self._thread = threading.Thread(target=self._run, name=f"load-{conn.name}", daemon=True) if enabled else None

    def start(self) -> LayerLoader:
        if self._thread is not None:
            self._thread.start()
        return self

    def arriving(self, blob: Blob) -> None:
        """BLOB (its digest known) is being sent to its staging path now; `add` follows once it is
        staged. A load may read it while it lands."""
        with self._cond:
            self._arriving = blob
            self._cond.notify_all()

    def add(self, blob: Blob) -> None:
        """A layer's blob is staged and verified on the host."""
        with self._cond:
            self._staged[blob.diff_id] = blob
            if self._arriving is not None and self._arriving.diff_id == blob.diff_id:
                self._arriving = None
            self._cond.notify_all()

    def close(self) -> None:
        """Stop after the load in progress (if any); `next` is final afterwards. A load still
        reading a blob that never got staged (the send failed) is not waited for: it gives up by
        itself once that blob stops growing, and loads nothing."""
        with self._cond:
            self._closed = True
            self._arriving = None  # the sending is over: a blob still arriving now never lands
            self._cond.notify_all()
            abandoned = self._following is not None and self._following not in self._staged
        if self._thread is not None and self._thread.ident is not None and not abandoned:
            self._thread.join()

    def _staged_upto(self, start: int) -> int:
        """End of the run of layers from START whose blobs are staged (or that the host has)."""
        diff_ids = self._image.diff_ids
        end = start
        while end < len(diff_ids) and (end not in self._missing or diff_ids[end] in self._staged):
            end += 1
        return end

    @property
    def loaded(self) -> bool:
        """The loader loaded the image itself (final: after close())."""
        return self.next == len(self._image.diff_ids) and bool(self._missing)

    def _ready(self) -> tuple[int, Blob | None]:
        """End of the next run to load now, past `next`, and the arriving blob it takes in when
        every layer below that blob is staged (with the staged ones above it). A run to the image's
        top is install's, unless it takes in the arriving blob and a staged layer above it (the
        route sent a small top layer first) and the real config is known here."""
        diff_ids = self._image.diff_ids
        end, arriving = self._staged_upto(self.next), self._arriving
        above = end + 1  # the first layer above the arriving one
        if end < len(diff_ids) and arriving is not None and diff_ids[end] == arriving.diff_id:
            end = self._staged_upto(above)
        else:
            arriving = None
        if end < len(diff_ids) or (arriving is not None and end > above and self._config is not None):
            return end, arriving
        return self.next, None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._ready()[0] > self.next)
                end, arriving = self._ready()
                if end == self.next:
                    return  # closed, nothing more to load before install's run
                blobs = dict(self._staged)
                if arriving is not None:
                    blobs[arriving.diff_id] = arriving
                    self._following = arriving.diff_id
            try:
                self._load(self.next, end, blobs, streamed=arriving is not None)
            except Exception as exc:  # this thread owns its failure: install loads what is left, the usual way
                if not isinstance(exc, DeployError):
                    log.debug("%s: the layer loader failed", self._conn.name, exc_info=True)
                why = str(exc).splitlines()[0]
                # Ctrl-C stopped the send it was loading from (no end to load at); or, LIGHT, the
                # sender acts on the failure (the runner says why it checks the host)
                stopped = interrupt.requested()
                if self._light and isinstance(exc, DeployError) and not stopped:
                    self.failure = exc
                if stopped or self.failure is not None:
                    log.info("%s: loading layers as they arrived stopped (%s)", self._conn.name, why)
                else:
                    self._note(f"loading layers as they arrived stopped ({why}); loading the rest at the end")
                return
            finally:
                with self._cond:
                    self._following = None
            self.next = end

    def _load(self, start: int, end: int, blobs: dict[str, Blob], streamed: bool = False) -> None:
        image = self._image
        final = end == len(image.diff_ids)
        config = (self._config() if final and self._config is not None
                  else ld.partial_config(image.os, image.architecture, image.diff_ids[:end], self._staging))
        files = load_files(image, range(start, end), self._missing, blobs, self._staging, self._mode)
        layers = named_layers(self._fmt, image.diff_ids[:end], self._reused, blobs.values(), self._mode)
        # the image itself, whole by construction, names its ref as it loads: install neither checks nor tags
        whole = final and made_whole(self._fmt, image.diff_ids, (image.diff_ids[i] for i in self._missing))
        tags = (normalize(image.ref),) if whole else ()
        head = ld.load_head(self._fmt, config, image.diff_ids[:end], files, layers, tags=tags)
        # bounded, so a hung `docker load` cannot hang the ship (close() joins this thread)
        timeout = LOAD_TIMEOUT_S + sum(f.size for f in files) / (STREAM_MIN_RATE if streamed else LOAD_MIN_RATE)
        # the image itself is no stand-in: not on record for removal (its config has no partial label)
        step = steps.stand_in_load(self._docker, self._staging, image.id, self._mode, head.blocks, files,
                                   list(layers.items()), f"{start + 1}-{end}", "" if final else head.image_id,
                                   STREAM_STALL_S if streamed else 0)
        res = self._conn.run(step.argv, input=head.data, what=step.label, check=False, timeout=timeout)
        self._counter.add(len(head.data))
        if not res.ok or not ld.loaded_as(res.stdout, head):
            raise CommandError(self._conn.name, res, what=step.label)
        self.named = bool(head.tags)
        log.info("%s: layers %d-%d registered %s%s", self._conn.name, start + 1, end,
                 "with the image's config" if final else "while the rest arrive",
                 " (the last as it landed)" if streamed else "")


def made_whole(fmt: str, diff_ids: Sequence[str], loaded: Iterable[str]) -> bool:
    """Whether a load of the image DIFF_IDS that succeeds made it whole, with the id it was given,
    so that nothing need check it. A "legacy" load checks every layer against its diff id, and the
    image's id is its config's digest. The containerd store can load an image whose left-out layers
    it lacks (moby#49784): an OCI load only when this ship's own loads took in every layer (LOADED:
    their diff ids; none was on the host before, in whatever form)."""
    return fmt == "legacy" or set(loaded) >= set(diff_ids)


def load_files(image: ImageInfo, indices: Sequence[int] | range, missing: frozenset[int],
               blobs: dict[str, Blob], staging: str, mode: str) -> list[ld.LoadFile]:
    """The layer files a load of INDICES carries: each missing layer's staged blob, once (pure)."""
    out: dict[str, ld.LoadFile] = {}
    for i in indices:
        diff_id = image.diff_ids[i]
        if i in missing and diff_id not in out:
            blob = blobs[diff_id]
            size = blob.size if mode == "link" else blob.raw_size
            out[diff_id] = ld.LoadFile(diff_id, cmd.blob_path(staging, blob.digest, blob.codec), size)
    return list(out.values())


class IncompleteImage(TransferError):
    """The image (.image_id) loaded, but the host's content store lacks a blob of a layer it was not sent."""

    def __init__(self, host: str, image_id: str) -> None:
        super().__init__(host, f"{image_id} loaded, but the host's content store lacks a layer it already had "
                         "in another form (e.g. from a registry pull)",
                         hint="deployer sends those layers too; if this persists, ship again")
        self.image_id = image_id


def named_layers(fmt: str, diff_ids: Sequence[str], reused: Mapping[str, Descriptor], sent: Iterable[Blob],
                 mode: str) -> dict[str, Descriptor]:
    """For an OCI load (else empty): the blob that names each layer, the layers left out as REUSED
    says and the SENT ones by their blob, which goes in as it is (the containerd store reads it)."""
    if fmt != "oci":
        return {}
    if mode != "link":
        raise ValueError(f"an OCI load carries the blobs as they are, not {mode!r}")
    layers = dict(reused)
    for blob in sent:
        layers[blob.diff_id] = Descriptor(f"{OCI_LAYER}+{blob.codec}", blob.digest, blob.size)
    return {d: layers[d] for d in diff_ids if d in layers}


class Closing(Protocol):
    """What else an install's round trip does once the image is verified and tagged (the runner's
    history record and unlock): `steps` for the id the image gets; `ran` hears how they went."""

    def steps(self, host_id: str) -> Sequence[tuple[str, ...]]: ...

    def ran(self, results: Sequence[Result]) -> None: ...


def install(conn: HostConn, docker: tuple[str, ...], image: ImageInfo, staging: str, mode: str,
            config: bytes, files: Sequence[ld.LoadFile], sent: Sequence[Blob], staged: Sequence[Blob],
            counter: Counter, fmt: str = "legacy", reused: Mapping[str, Descriptor] | None = None,
            closing: Closing | None = None, loaded: bool = False, named: bool = False,
            previous: str | None = None) -> str | None:
    """Load FILES with the real config, verify, drop stand-ins and STAGED blobs, tag; then, in the
    same round trip and only if all that succeeded, CLOSING's steps.

    SENT: the blobs this ship staged (an OCI load names those layers by them, the others as REUSED
    says). Returns the id REF now resolves to on the host when it is the loaded image's id (the
    config digest on the classic store, the manifest digest on the containerd store), else None.
    LOADED: the layer loader loaded the image (FILES is empty): no load, no head sent; NAMED: and
    named REF, whole (LayerLoader.named): no check, no tag.
    PREVIOUS: the id REF named on the host when it was checked (a failed check names it again)."""
    layers = named_layers(fmt, image.diff_ids, reused or {}, sent, mode)
    # the load names REF itself (one docker call less); a check after it that fails undoes that
    tags = (normalize(image.ref),) if not loaded else ()
    head = ld.load_head(fmt, config, image.diff_ids, files, layers, tags=tags)
    names = sorted({posixpath.basename(cmd.blob_path(staging, b.digest, b.codec)) for b in staged})
    # the loader's load named it whole, or this one makes it whole: nothing to check after it
    whole = named if loaded else made_whole(fmt, image.diff_ids, (b.diff_id for b in sent))
    step = steps.install(docker, staging, image.id, head.image_id, image.ref, names, mode, head.blocks, files,
                         list(layers.items()), tagged=bool(head.tags), previous=previous or "", loaded=loaded,
                         whole=whole)
    data = b"" if loaded else head.data
    counter.add(len(data))
    if closing is None:
        res = conn.run(step.argv, input=data, what=step.label, check=False)
    else:
        batch = Batch([step.argv, *closing.steps(head.image_id)], stop_on_failure=True, stdin_step=0)
        res, *after = batch.split(conn.run(batch.argv, input=data, what=step.label, check=False))
        closing.ran(after)
    out = ld.parse_install(res.stdout)
    if res.exited == 6:
        for other in ld.parse_loaded(res.stdout):
            if other.startswith("sha256:") and other != head.image_id:
                conn.run(cmd.remove_image_argv(docker, other), what="removing a wrong image", check=False)
        raise TransferError(conn.name, f"docker load produced {out.loaded or 'no image'}, expected {head.image_id}",
                            hint="the local image may have changed during the ship; ship again")
    if res.exited == 8:
        raise IncompleteImage(conn.name, head.image_id)
    if res.exited == 9:  # REF names another image right after the load that tagged it: the runner says so
        return None
    if res.exited == 5 and "invalid diffID" in res.stderr:
        raise TransferError(conn.name, f"a staged layer does not match the image: {res.stderr_tail()}",
                            hint="clear the local blob cache (deployer's cache dir) and ship again")
    if not res.ok:
        what = {3: "writing the load's tar head failed", 5: "docker load failed", 7: "docker tag failed"}
        raise CommandError(conn.name, res, what=what.get(res.exited, "installing the image failed"),
                           hint="see stderr; staged blobs are kept, so shipping again resumes")
    return out.tagged if out.tagged == head.image_id else None


def remove_partials(conn: HostConn, docker: tuple[str, ...], staging: str) -> None:
    """Best effort after a failure: drop the stand-in images (their layers go unless shared)."""
    try:
        conn.run(ld.remove_partials_argv(docker, staging), what="removing stand-in images", check=False, timeout=120)
    except DeployError as exc:
        log.info("%s: stand-in images stay until the next ship: %s", conn.name, exc)
