"""The registry route: push once per ship from the workstation, `docker pull` on each host.

Credentials come from the user's Docker config / credential helpers through the docker SDK on
the workstation (deployer.local.push); nothing secret ever appears on a remote command line.
Hosts pull with their own Docker login, if the registry needs one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import requests

from deployer import interrupt
from deployer.background import in_background
from deployer.commands import ship as cmd
from deployer.commands.layers import pulled_records
from deployer.errors import CommandError, LocalError, TransferError
from deployer.local import stages
from deployer.local.cache import Blob, Cache
from deployer.local.client import Client, docker_client
from deployer.local.export import Exporter, Growing
from deployer.local.image import ImageInfo, history_sizes, is_containerd
from deployer.local.push import distribution_digest, push_stream
from deployer.local.sizes import LayerSizes
from deployer.local.stages import STAGE_TAG
from deployer.refs import registry_ref
from deployer.ship import steps
from deployer.ship.blobpush import BlobUnknown, RegistryWriter, Streamed, push_image
from deployer.ship.conn import HostConn
from deployer.ship.exports import ExportPool
from deployer.ship.loader import Closing
from deployer.ship.plan import ShipPlan
from deployer.ship.registry_api import (
    ManifestReader,
    RegistryAPIError,
    image_manifest,
    other_manifests,
    split_repo,
)
from deployer.tarfmt import Descriptor
from deployer.transport.batch import Batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushStats:
    remote_ref: str
    layers_pushed: int
    layers_existing: int
    bytes_pushed: int  # raw (uncompressed) tar bytes Docker reported while pushing: progress only
    pushed_ids: frozenset[str] = frozenset()  # push-event ids of the layers this push uploaded
    digest: str | None = None  # the pushed manifest's digest, from the stream's aux record
    wire_bytes: int | None = None  # compressed bytes uploaded, from the manifest (None: unknown)
    # diff id -> the blob the pushed manifest names for it, when the manifest was read back: what a
    # containerd-store host holds each layer as once it pulled the image (deployer.commands.layers)
    records: tuple[tuple[str, Descriptor], ...] = ()
    records_from: str = ""  # the digest of the manifest (or index) the records were read from

    @property
    def bytes_sent(self) -> int:
        """Bytes put on the wire by this push: the compressed total, or the raw count if unknown."""
        return self.bytes_pushed if self.wire_bytes is None else self.wire_bytes


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def uploaded_bytes(manifest: Mapping[str, Any], diff_ids: Sequence[str], pushed_ids: Iterable[str],
                   others: Sequence[Mapping[str, Any]] = ()) -> int:
    """Compressed bytes of the layers a push uploaded, from the pushed manifest (pure).

    Push events name a layer by the first 12 hex digits of its diff id (of its blob digest on
    other stores); manifest layer i is diff id i. OTHERS: the other manifests of the pushed index
    (a containerd-store workstation pushes its image's attestation manifest too, whose blobs its
    push events name). A shared blob counts once. ValueError when a pushed layer is in none of
    them, TypeError when MANIFEST is no image manifest.
    """
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise TypeError("the manifest has no layer list")
    if not all(isinstance(desc, Mapping) for desc in layers):
        raise TypeError("the manifest's layers are not descriptors")
    by_id: dict[str, Mapping[str, Any]] = {}
    if len(layers) == len(diff_ids):
        for diff_id, desc in zip(diff_ids, layers, strict=True):
            by_id.setdefault(_short(diff_id), desc)
    more = [d for m in others for d in (*(m.get("layers") or ()), m.get("config"))]
    for desc in (*layers, *more):
        if isinstance(desc, Mapping):
            by_id.setdefault(_short(str(desc.get("digest", ""))), desc)
    total, counted = 0, set()
    for layer in pushed_ids:
        desc = by_id.get(layer)
        if desc is None or not isinstance(desc.get("size"), int):
            raise ValueError(f"pushed layer {layer} is not in the manifest")
        if desc["digest"] not in counted:
            counted.add(desc["digest"])
            total += int(desc["size"])
    return total


_AUTH_ERRORS = ("unauthorized", "authentication required", "no basic auth credentials", "denied")


def push_hint(remote_ref: str, message: str) -> str:
    """What to do about a failed push; a refused login names the registry to `docker login` to (pure)."""
    if any(word in message.lower() for word in _AUTH_ERRORS):
        registry = remote_ref.split("/", 1)[0]
        return (f"{registry} wants a login: run `docker login {registry}` on this workstation "
                "(deploy pushes with your Docker config: ~/.docker/config.json or $DOCKER_CONFIG)")
    return "check the registry is reachable from here and `docker login` if it needs auth"


def read_push_stream(chunks: Iterable[dict[str, Any]], remote_ref: str,
                     on_bytes: Callable[[int], None] = lambda n: None) -> PushStats:
    """Consume a decoded push stream: fail on any in-band error, count layers and bytes (pure)."""
    current: dict[str, int] = {}
    pushed: set[str] = set()
    existing: set[str] = set()
    digest: str | None = None
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error") or chunk.get("errorDetail"):
            detail = chunk.get("errorDetail") or {}
            message = chunk.get("error") or detail.get("message") or str(detail)
            raise LocalError(f"pushing {remote_ref} failed: {message}", hint=push_hint(remote_ref, str(message)))
        aux = chunk.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
            digest = aux["Digest"]
        layer = str(chunk.get("id") or "")
        status = str(chunk.get("status") or "")
        progress = chunk.get("progressDetail") or {}
        if status == "Pushing" and isinstance(progress.get("current"), int):
            before = current.get(layer, 0)
            now = max(before, int(progress["current"]))
            current[layer] = now
            if now > before:
                on_bytes(now - before)
        elif status == "Pushed":
            pushed.add(layer)
        elif status in ("Layer already exists",) or status.startswith("Mounted from"):
            existing.add(layer)
    return PushStats(remote_ref, len(pushed), len(existing), sum(current[k] for k in pushed if k in current),
                     frozenset(pushed), digest)


class Pusher:
    """Pushes an image to each registry at most once per ship, whichever host asks first."""

    def __init__(self, image: ImageInfo, client: Client | None = None, *,
                 zstd: Callable[[str], bool] | None = None, level: int = 3,
                 exports: ExportPool | None = None) -> None:
        """ZSTD: whether every host that pulls from a registry reads zstd layers (then the push
        uploads deployer's zstd blobs itself, at LEVEL: deployer.ship.blobpush); None: never.
        EXPORTS: the tarball hosts' exports, whose blobs the push takes instead of compressing
        the same layers again."""
        self.image = image
        self._client = client
        self._zstd, self._level = zstd, level
        self._pool = exports
        self._lock = threading.Lock()
        self._done: dict[str, PushStats | LocalError] = {}
        self._early: set[str] = set()  # pushed by start(): the first host to ask is charged with it
        self._feeds_lock = threading.Lock()
        self._feeds: dict[str, StageFeed] = {}  # a registry's push, begun: its stages as they are pushed

    def pushed(self, registry: str) -> bool:
        """Whether the push to REGISTRY is over (its stages no longer save a host any time)."""
        return registry in self._done

    def _feed(self, registry: str) -> tuple[StageFeed, bool]:
        """(the stage feed of REGISTRY's push, True if this call made it: the push is not begun)."""
        with self._feeds_lock:
            made = registry not in self._feeds
            if made:
                self._feeds[registry] = StageFeed()
            return self._feeds[registry], made

    def stages(self, registry: str) -> Iterator[tuple[str, int]]:
        """The stage images pushed ahead of the image (deployer.local.stages): (digest, layers),
        each as soon as it is in the registry; ends once the image's own push begins (or went
        without stages). Begins the push in the background if no one has."""
        feed, made = self._feed(registry)
        if made:
            self._begin(registry, feed)
        return feed.follow()

    def start(self, registry: str) -> None:
        """Push to registry in the background now (while the hosts are connected and checked): a
        host surely takes the registry route. push() then waits for it."""
        feed, made = self._feed(registry)
        if made:
            self._begin(registry, feed)

    def _begin(self, registry: str, feed: StageFeed) -> None:
        started = threading.Event()

        def run() -> None:
            with self._lock:
                started.set()
                if registry not in self._done:
                    self._early.add(registry)
                    self._push_once(registry, lambda n: None, feed)

        threading.Thread(target=run, name=f"push {registry}", daemon=True).start()
        started.wait(5)  # it holds the lock before any host asks

    def push(self, registry: str, on_bytes: Callable[[int], None] = lambda n: None) -> tuple[PushStats, bool]:
        """(stats, True if this call did the push, or is the first to take an early one). Raises the
        push's LocalError for every caller. Ctrl-C stops a host's work that waits for another's
        push, or that pushes (at its next progress report): deployer.interrupt."""
        def progress(n: int) -> None:
            interrupt.check()
            on_bytes(n)

        while not self._lock.acquire(timeout=0.5):
            interrupt.check()
        try:
            if registry not in self._done:
                outcome, mine = self._push_once(registry, progress, self._feed(registry)[0]), True
            else:
                outcome, mine = self._done[registry], registry in self._early
            self._early.discard(registry)
        finally:
            self._lock.release()
        if isinstance(outcome, LocalError):
            raise outcome
        return outcome, mine

    def _push_once(self, registry: str, on_bytes: Callable[[int], None], feed: StageFeed) -> PushStats | LocalError:
        """Push and record the outcome, a failure included (under self._lock)."""
        try:
            outcome: PushStats | LocalError = self._push(registry, on_bytes, feed)
        except LocalError as exc:
            outcome = exc
        finally:
            feed.close()  # no more stages, whatever happened
        self._done[registry] = outcome
        return outcome

    def _push(self, registry: str, on_bytes: Callable[[int], None], feed: StageFeed) -> PushStats:
        remote = registry_ref(registry, self.image.ref)
        repo = remote.rsplit(":", 1)[0]
        client = self._client or docker_client()
        log.info("pushing %s as %s", self.image.ref, remote)
        # once Docker uploads a layer, the reader of the pushed manifest finds its way to the
        # registry while the push goes on: the pull waits for the byte count, and a plain-http
        # registry costs a failed TLS handshake first
        reader: list[Future[ManifestReader]] = []

        def uploading(n: int) -> None:
            if not reader:
                reader.append(in_background("registry-reader", _settled_reader, client, repo))
            on_bytes(n)

        if self._zstd is not None and not is_containerd(client) and self._zstd(registry):
            try:
                return self._push_blobs(client, remote, feed, on_bytes)
            except (RegistryAPIError, LocalError, OSError, requests.exceptions.RequestException) as exc:
                # e.g. a login the API cannot use: Docker's own push may still get through
                log.warning("pushing the zstd layers of %s through the registry API failed (%s); "
                            "pushing with docker push instead", self.image.ref, exc)
        ahead = self._push_stages(client, repo, feed, uploading)
        if ahead:
            log.info("pushing %s itself, after %d stage(s)", self.image.ref, len(ahead))
        stream = push_stream(client, self.image.id, remote, hint="check the registry is reachable from this workstation")
        stats = with_stages(read_push_stream(stream, remote, uploading), ahead)
        try:
            Cache().remember_pushed(repo, self.image.diff_ids)  # the next push of these needs no stages
        except OSError as exc:
            log.info("could not note the layers pushed to %s: %s", repo, exc)
        return self._read_back(client, repo, reader[0] if reader else None, stats)

    def _push_blobs(self, client: Client, remote: str, feed: StageFeed, on_bytes: Callable[[int], None]) -> PushStats:
        """Push the image as deployer's zstd blobs (deployer.ship.blobpush), its stages put as their
        layers are up, exactly as _push_stages cuts them."""
        repo, tag = remote.rsplit(":", 1)
        diff_ids, cache = self.image.diff_ids, Cache()
        known, before = cache.registry_blobs(repo), cache.pushed(repo)
        staged = [] if sum(d not in before for d in diff_ids) < 2 else \
            stages.plan(self.image, self._layer_sizes(client), before)
        writer = RegistryWriter.for_docker(client, split_repo(repo))
        log.info("pushing %s as %s: its zstd blobs through the registry API", self.image.ref, remote)
        with self._exports({d for d in diff_ids if d not in known}, client) as exports:

            def blob(diff_id: str) -> Blob | Streamed:
                for export in exports:
                    if diff_id in export.wanted.get("zstd", ()):
                        if before and diff_id not in before and diff_id not in known:
                            # new to a repository pushed to before: up as it is compressed, unasked
                            got = export.next_blob("zstd", [diff_id], frozenset(), stream=True)
                            if isinstance(got, Growing):
                                return Streamed(functools.partial(export.follow, got),
                                                functools.partial(export.finished, got))
                        return export.blob(diff_id, "zstd")
                with Exporter(self.image, {"zstd": {diff_id}}, level=self._level, client=client).start() as one:
                    return one.blob(diff_id, "zstd")  # a blob the registry lost since it was pushed

            config = exports[0].config
            try:
                # what the last pushes left is named without asking (a re-ship's six HEADs: 10-30 ms)
                pushed = push_image(writer, tag, diff_ids, config, blob, known,
                                    {st.layers: st.config for st in staged}, feed.put, on_bytes, check_known=False)
            except BlobUnknown as exc:
                log.info("%s; pushing again, asking the registry for each blob first", exc)
                pushed = push_image(writer, tag, diff_ids, config, blob, known, on_bytes=on_bytes)
        records = pulled_records(diff_ids, [d.to_json() for d in pushed.layers])
        try:
            cache.remember_registry_blobs(repo, records)
            cache.remember_pushed(repo, diff_ids)
        except OSError as exc:
            log.info("could not note the layers pushed to %s: %s", repo, exc)
        uploaded = frozenset(_short(d) for d in pushed.uploaded)
        return PushStats(remote, len(uploaded), len(diff_ids) - len(uploaded), pushed.sent, uploaded, pushed.digest,
                         wire_bytes=pushed.sent, records=records, records_from=pushed.digest)

    def _push_stages(self, client: Client, repo: str, feed: StageFeed,
                     uploading: Callable[[int], None]) -> list[PushStats]:
        """Push the image's stages (deployer.local.stages), each one's digest to FEED as it is in the
        registry, then close FEED; none on a containerd-store workstation (its stage would need a
        layout of its own) or when the layers to upload are few. A stage that fails only ends the
        stages: the image's own push does it all. The local stage images go once pushed."""
        done: list[PushStats] = []
        staged: list[stages.Stage] = []
        try:
            before = Cache().pushed(repo)
            if sum(d not in before for d in self.image.diff_ids) < 2 or is_containerd(client):
                return done  # a re-ship's push (no docker call spent on stages), or no layout for a stage
            staged = stages.plan(self.image, self._layer_sizes(client), before)
            if staged:
                stages.load(client, staged, self.image.diff_ids)
            remote = f"{repo}:{STAGE_TAG}"
            for k, st in enumerate(staged, 1):
                log.info("pushing stage %d/%d of %s (its first %d layers) as %s", k, len(staged), self.image.ref,
                         st.layers, remote)
                stream = push_stream(client, st.id, remote, hint="check the registry is reachable from this workstation")
                pushed = read_push_stream(stream, remote, uploading)
                if pushed.digest is None:
                    break  # no digest to pull it by
                done.append(pushed)
                feed.put(pushed.digest, st.layers)
        except LocalError as exc:
            log.info("pushing %s without (more) stages: %s", self.image.ref, exc)
        finally:
            feed.close()
            for st in staged:
                stages.remove(client, st)
        return done

    @contextlib.contextmanager
    def _exports(self, wanted: set[str], client: Client) -> Iterator[list[Exporter]]:
        """Exports that make these layers' zstd blobs: the tarball hosts' where they make them (the
        pool closes those), else this push's own."""
        if self._pool is not None and self._pool.level == self._level:
            yield self._pool.share("zstd", wanted)
            return
        with Exporter(self.image, {"zstd": wanted}, level=self._level, client=client).start() as export:
            yield [export]

    def _layer_sizes(self, client: Client) -> list[int] | None:
        """Each layer's size: exact from the cache or a readable layer store, else from `docker
        history` when its entries tell the layers apart (None: they do not)."""
        known = LayerSizes(self.image, client).known()
        if all(d in known for d in self.image.diff_ids):
            return [known[d] for d in self.image.diff_ids]
        return stages.layer_sizes(history_sizes(client, self.image), len(self.image.diff_ids))

    def _read_back(self, client: Client, repo: str, early: Future[ManifestReader] | None,
                   stats: PushStats) -> PushStats:
        """STATS with the compressed size of the uploaded layers and the blob of each layer, read
        back from the pushed manifest (None and none if it cannot be). A push that uploaded nothing
        reads nothing (the pull it is waited for by would wait for the read): 0 bytes, no records."""
        if not stats.pushed_ids:
            return dataclasses.replace(stats, wire_bytes=0)
        read_back = (RegistryAPIError, ValueError, KeyError, TypeError, LocalError,
                     requests.exceptions.RequestException)
        try:
            digest = stats.digest or distribution_digest(client, stats.remote_ref)
            reader = early.result() if early is not None else ManifestReader.for_docker(client, split_repo(repo))
            manifest = image_manifest(reader, digest, self.image.config_digest)
            stats = dataclasses.replace(stats, records=pulled_records(self.image.diff_ids, manifest.get("layers")),
                                        records_from=digest)
            try:
                Cache().remember_registry_blobs(repo, stats.records)  # a zstd push names these blobs
            except OSError as exc:
                log.info("could not note the blobs pushed to %s: %s", repo, exc)
            try:
                wire = uploaded_bytes(manifest, self.image.diff_ids, stats.pushed_ids)
            except ValueError:  # blobs of the index's other manifests (an attestation) were pushed too
                wire = uploaded_bytes(manifest, self.image.diff_ids, stats.pushed_ids,
                                      other_manifests(reader, digest, manifest))
            return dataclasses.replace(stats, wire_bytes=wire)
        except read_back as exc:
            # the push itself succeeded: only the byte count is less exact
            log.warning("could not read the manifest of %s back (%s); bytes_sent counts raw layer bytes",
                        stats.remote_ref, exc)
            return dataclasses.replace(stats, wire_bytes=None)


def with_stages(stats: PushStats, ahead: Sequence[PushStats]) -> PushStats:
    """The image's push STATS counting the stage pushes AHEAD of it too (pure): their uploads
    are layers of the image, which its own push then found in the registry."""
    if not ahead:
        return stats
    pushed = frozenset().union(stats.pushed_ids, *(a.pushed_ids for a in ahead))
    return dataclasses.replace(stats, layers_pushed=stats.layers_pushed + sum(a.layers_pushed for a in ahead),
                               layers_existing=max(0, stats.layers_existing - sum(a.layers_pushed for a in ahead)),
                               bytes_pushed=stats.bytes_pushed + sum(a.bytes_pushed for a in ahead),
                               pushed_ids=pushed)


class StageFeed:
    """A push's stages as they are pushed, for every host that pulls them: (digest, how many of
    the image's bottom layers it holds)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._digests: list[tuple[str, int]] = []
        self._closed = False

    def put(self, digest: str, layers: int) -> None:
        with self._cond:
            self._digests.append((digest, layers))
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def follow(self) -> Iterator[tuple[str, int]]:
        """Each digest once it is put, until closed (the push thread closes it in a finally)."""
        i = 0
        while True:
            with self._cond:
                while i >= len(self._digests) and not self._closed:
                    self._cond.wait(1.0)
                if i >= len(self._digests):
                    return
                digest = self._digests[i]
            i += 1
            yield digest


def _settled_reader(client: Client, repo: str) -> ManifestReader:
    reader = ManifestReader.for_docker(client, split_repo(repo))
    reader.settle()
    return reader


@dataclass(frozen=True)
class PullStats:
    layers_pulled: int
    layers_present: int


def pull_and_tag(conn: HostConn, docker_argv: tuple[str, ...], plan: ShipPlan, image_ids: Sequence[str],
                 pushed: PushStats, closing: Closing | None = None, staging: str = "",
                 drop: Sequence[str] = ()) -> tuple[PullStats, str | None]:
    """docker pull PLAN's registry ref on the host, check its id is one of IMAGE_IDS and the image
    complete, tag it as PLAN's ref; then, in the same round trip and only if all that succeeded,
    CLOSING's steps. PUSHED: this ship's push, whose manifest's pull gives IMAGE_IDS[0] and whose
    records (the blob each layer has in that manifest) a containerd-store host's STAGING dir then
    keeps if that manifest is what it pulled. DROP: the stage images pulled ahead, removed after.

    (stats, the id REF was tagged with)."""
    assert plan.registry_ref is not None
    remote_ref, ref = plan.registry_ref, plan.ref
    step = steps.pull(plan, docker_argv, image_ids, pushed.digest or "", staging=staging, records=pushed.records,
                      records_from=pushed.records_from, drop=drop)
    if closing is None:
        res = conn.run(step.argv, what=step.label, check=False)
    else:
        batch = Batch([step.argv, *closing.steps(image_ids[0])], stop_on_failure=True)
        res, *after = batch.split(conn.run(batch.argv, what=step.label, check=False))
        closing.ran(after)
    actual, tagged = cmd.parse_pulled(res.stdout)
    if res.exited == cmd.PULLED_ANOTHER_ID:  # done, under an id the closing did not expect: its own round trip
        if closing is not None:
            batch = Batch(closing.steps(tagged or ""), stop_on_failure=True)
            closing.ran(batch.split(conn.run(batch.argv, what="history record, unlock", check=False)))
        res = dataclasses.replace(res, exited=0)
    if res.exited == 2:
        raise CommandError(conn.name, res, what=f"{step.label} failed on the host",
                           hint="check the host reaches the registry (and is logged in if it needs auth), "
                           "or use --via tarball")
    if res.exited == 3:
        raise TransferError(conn.name, f"pulled {remote_ref} is {actual or 'missing'}, expected "
                            f"{' or '.join(image_ids)}",
                            hint="someone may have pushed another image under that tag; ship again")
    if res.exited == 8 and actual is not None:
        # Docker 28's containerd store skips downloading a layer it has unpacked from elsewhere
        # (moby#49784): the image runs but is incomplete (unlisted, cannot be saved or pushed)
        conn.run(cmd.remove_image_argv(docker_argv, remote_ref), what=f"removing {remote_ref}", check=False,
                 timeout=60)
        raise IncompletePull(conn.name, remote_ref, actual)
    if res.exited == 7:
        raise CommandError(conn.name, res, what=f"docker tag {ref} failed on the host")
    if not res.ok:
        raise CommandError(conn.name, res, what=f"{step.label} failed on the host")
    pulled, present = cmd.parse_pull(res.stdout)
    return PullStats(pulled, present), actual if res.ok and tagged == actual else None


class IncompletePull(TransferError):
    """The pull left an incomplete image (Docker 28, containerd store: moby#49784); the tarball route can
    complete it."""

    def __init__(self, host: str, remote_ref: str, image_id: str) -> None:
        super().__init__(host, f"docker pull {remote_ref} left an incomplete image: Docker skipped layers it had "
                         "unpacked from another source (moby#49784, containerd image store before Docker 29)",
                         hint="ship to this host with --via tarball, or upgrade Docker")
        self.remote_ref, self.image_id = remote_ref, image_id
