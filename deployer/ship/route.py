"""The two transfer routes for one host (tarball: stage, assemble, load; registry: push, pull).

Each takes a Leg (what it works on) and returns the id the host's Docker now gives the image,
or None when the ref does not resolve to it. Bytes and layers sent accumulate in the Leg's
Counter as they go, so a failure part-way still tells how far it got.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from deployer import interrupt
from deployer.commands import ship as cmd
from deployer.errors import DeployError, Interrupted, TransferError
from deployer.inventory.host import Host
from deployer.local.cache import Blob
from deployer.local.export import Exporter, Growing
from deployer.local.image import ImageInfo
from deployer.ship import steps
from deployer.ship.conn import HostConn
from deployer.ship.loader import Closing, IncompleteImage, LayerLoader, install, load_files, remove_partials
from deployer.ship.plan import ShipPlan
from deployer.ship.progress import Reporter
from deployer.ship.registry import Pusher, pull_and_tag
from deployer.ship.relay import Relayed, Site
from deployer.ship.tarball import Counter, stage_blob, stream_blob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leg:
    """One host's transfer: where to, over which connection, what, by which plan, counted where."""

    host: Host
    conn: HostConn
    image: ImageInfo
    plan: ShipPlan
    counter: Counter
    site: Site | None = None  # the site relay the blobs come through (deployer.ship.relay), if any
    staged: Mapping[str, int | None] | None = None  # the prepared staging dir's blobs (None: prepare it first)
    closing: Closing | None = None  # what the install's round trip does too once the image is verified
    light: bool = False  # planned from what the last ship left (deployer.ship.recall): the runner re-checks on failure


ORIGIN_PULL_TIMEOUT_S = 3 * 3600.0  # a base image of tens of GB, pulled at data-centre speed


class OriginPullFailed(TransferError):
    """The host could not pull the base from its registry: the runner sends those layers instead."""

    def __init__(self, host: str, ref: str, why: str) -> None:
        super().__init__(host, f"pulling the base {ref} from its registry failed: {why}",
                         hint="deployer sends the base layers instead; set deploy_origin_pull: never to skip the pull")
        self.ref = ref


class OriginPull:
    """The host pulls the base from its registry in a thread while the layers above it are sent;
    then(fn) runs once the base is there (the loads may begin). wait() raises what went wrong."""

    def __init__(self, leg: Leg, then: Callable[[], object]) -> None:
        self._leg, self._then = leg, then
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"origin-{leg.host.name}", daemon=True)
        self._work = interrupt.host()  # Ctrl-C stops the pull as it stops the host's work

    def start(self) -> OriginPull:
        self._thread.start()
        return self

    def _run(self) -> None:
        leg = self._leg
        ref = str(leg.plan.origin)
        if self._work is not None:
            interrupt.begin_work(self._work)
        try:
            step = steps.origin_pull(leg.host.docker, ref)
            res = leg.conn.run(step.argv, what=step.label, check=False, timeout=ORIGIN_PULL_TIMEOUT_S)
            layers = cmd.parse_origin_pull(res.stdout)
            if not res.ok:
                raise OriginPullFailed(leg.conn.name, ref, res.stderr_tail() or f"exit {res.exited}")
            wanted = leg.image.diff_ids[:max(leg.plan.from_origin) + 1]
            if not layers:
                # the containerd store of Docker 28 skips layers it has from elsewhere (moby#49784)
                leg.conn.run(cmd.remove_image_argv(leg.host.docker, ref), what=f"removing {ref}", check=False,
                             timeout=60)
                raise OriginPullFailed(leg.conn.name, ref, "the pulled image is incomplete (moby#49784)")
            if layers[:len(wanted)] != wanted:
                raise OriginPullFailed(leg.conn.name, ref, "its layers are not the image's base (another platform?)")
            self._then()
        except BaseException as exc:  # noqa: BLE001 - handed to the sender's thread by wait()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if isinstance(self._error, Interrupted):
            interrupt.check()  # the host's work is interrupted here too (once), so its clean-up runs whole
        if self._error is not None:
            raise self._error


def _estimate_total(plan_raw: int, known: list[Blob]) -> int:
    """Bytes to send: exact for blobs compressed so far, the same ratio for the rest."""
    size = sum(b.size for b in known)
    raw = sum(b.raw_size for b in known)
    rest = max(0, plan_raw - raw)
    return size + (int(rest * size / raw) if raw else rest)


# A top layer blob this small (a code change's) goes out before the layer below it, once both are
# compressed: the loader then loads the image itself while that layer lands (deployer.ship.loader),
# and the install has no load left. A bigger one keeps image order: sent first, it would only wait
# on the host for the layer below, whose registration then could not overlap its sending.
SMALL_TOP = 2 << 20
# A relay's queue is filled as fast as blobs are compressed, so the layer below the top is ready
# while the top still compresses; waiting this long for the top lets a small one go first there too.
RELAY_TOP_WAIT_S = 2.0


def _as_available(exporter: Exporter, codec: str, diff_ids: list[str], stream: bool = False,
                  small_top: int = 0, top_wait_s: float = 0.0) -> Iterator[Blob | Growing]:
    """This host's blobs as the export makes them available, the lowest layer first among those
    ready at once (docker save's layer order is not the image's; the cache has some at once).
    STREAM: when none is ready, the lowest one being compressed, to send as it grows. SMALL_TOP:
    the last one goes before the one below it when both are ready and it is no bigger than that;
    TOP_WAIT_S: how long to wait for the last one to be ready, once only those two are left (a
    relay's queue is filled ahead of its sending, when the top is usually still compressing)."""
    taken: set[str] = set()
    while len(taken) < len(diff_ids):
        order = diff_ids
        if small_top and len(diff_ids) - len(taken) == 2 and not taken.intersection(diff_ids[-2:]):
            top = exporter.cached(diff_ids[-1], codec)
            if top is None and top_wait_s > 0:
                top = exporter.wait_blob(diff_ids[-1], codec, top_wait_s)
            if top is not None and top.size <= small_top and exporter.cached(diff_ids[-2], codec) is not None:
                order = [*diff_ids[:-2], diff_ids[-1], diff_ids[-2]]
        item = exporter.next_blob(codec, order, taken, stream)
        if item is None:
            break
        taken.add(item.diff_id)
        yield item
    for diff_id in diff_ids:  # not produced by this export: the cache has it, or this raises why not
        if diff_id not in taken:
            yield exporter.blob(diff_id, codec)


def run_tarball(leg: Leg, exporter: Exporter | None, reporter: Reporter) -> str | None:
    """Stage the missing blobs (resumable, verified), registering layers as they land; then install.

    Blobs go out as the export makes them available, the lowest layer first of those ready (image
    order when it reads Docker's store or has them all cached); when none is ready, the layer
    being compressed goes out as it grows (stream_blob; to the relay, through one). Each is hashed by
    the host as it arrives; the loader thread registers every run of staged layers with Docker
    while the next blobs are sent, the last of a run as it lands when it is sent whole (directly
    or through a relay); install loads what is left, verifies the id, cleans the staging dir and tags.
    """
    host, plan, conn, image, counter = leg.host, leg.plan, leg.conn, leg.image, leg.counter
    assert plan.codec is not None
    assert exporter is not None  # the runner starts one export whenever a host takes this route
    name, staging, codec = host.name, host.staging_dir, plan.codec
    counter.on_sent = lambda n: reporter.sent(name, n)
    counter.on_held = lambda n: reporter.held(name, n)
    note = partial(reporter.note, name)
    mode = codec.name if codec.host_decompress else "link"
    wanted = list(dict.fromkeys(image.diff_ids[i] for i in plan.missing))
    got: dict[str, Blob] = {}
    fmt, reused = plan.load_format, dict(plan.reused)
    loader = LayerLoader(conn, host.docker, image, staging, mode, plan.missing, counter, note, fmt=fmt,
                         reused=reused, config=exporter.config, light=leg.light)
    host_id: str | None = None
    relayed = Relayed(leg.site, conn, host, counter, note, exporter) if leg.site is not None else None
    # with a base to pull, the loads wait for it: the loader starts once the pull is done
    puller = OriginPull(leg, loader.start).start() if plan.origin else None
    try:
        listed = dict(leg.staged) if leg.staged is not None else None
        if listed is None:
            prepare = steps.prepare(staging)
            listed = cmd.parse_stat(conn.run(prepare.argv, what=prepare.label, timeout=120).stdout)
        if relayed is not None:
            reporter.phase(name, "relay", f"authorizing {leg.site.name if leg.site else ''}'s key")
            relayed.open()
        if puller is None:
            loader.start()
        if wanted:  # else only the head goes (e.g. another name for an image a containerd store holds)
            reporter.phase(name, "compressing", f"layer 1/{len(wanted)}")
            reporter.total(name, plan.raw_bytes)  # an upper bound, until the first blob's ratio says better
        items: Iterator[Blob | Growing] = (
            relayed.prefetch(_as_available(exporter, codec.name, wanted, stream=True, small_top=SMALL_TOP,
                                           top_wait_s=RELAY_TOP_WAIT_S)) if relayed is not None
            else _as_available(exporter, codec.name, wanted, stream=True, small_top=SMALL_TOP))
        for k, item in enumerate(items, 1):
            if loader.failure is not None:
                # Docker could not register what was sent on top of what the last ship left: the
                # runner checks the host in full now (what is staged stays), not after every blob
                raise loader.failure
            reporter.phase(name, "sending", f"layer {k}/{len(wanted)}")
            if isinstance(item, Growing):
                blob, fresh = stream_blob(conn, staging, item, exporter, counter, note, listed), False
            else:
                blob = item
                loader.arriving(blob)  # the loader may read it as it lands, from the relay too
                fresh = (relayed.stage(staging, blob, listed) if relayed is not None
                         else stage_blob(conn, staging, blob, counter, note, listed))
            got[blob.diff_id] = blob
            reporter.total(name, _estimate_total(plan.raw_bytes, list(got.values())))
            if not fresh:
                counter.add_layers()
            loader.add(blob)
        reporter.total(name, counter.sent if relayed is None or relayed.direct else counter.lan)
        if relayed is not None:
            relayed.close()  # every blob is here: the relay's key goes at once
        if puller is not None:
            reporter.phase(name, "pulling", f"the base {plan.origin}")
            puller.wait()  # before close(): the loader starts in the puller's thread
        reporter.phase(name, "loading", "docker load")
        loader.close()
        if loader.failure is not None:
            raise loader.failure  # as above: a load of the rest would fail the same way, after reading it all
        rest = load_files(image, range(loader.next, len(image.diff_ids)), frozenset(plan.missing), got, staging,
                          mode)
        reporter.phase(name, "verifying", "image id")
        staged = _staged_blobs(exporter, codec.name, image.diff_ids, got)
        try:
            host_id = install(conn, host.docker, image, staging, mode, exporter.config(), rest, list(got.values()),
                              staged, counter, fmt, reused, closing=leg.closing, loaded=loader.loaded,
                              named=loader.named, previous=plan.ref_was)
        except IncompleteImage as incomplete:
            if leg.light:  # the layers left out were remembered, not read: the runner checks the host in full
                conn.run(cmd.remove_image_argv(host.docker, incomplete.image_id), what="removing an incomplete image",
                         check=False, timeout=120)
                raise
            # The host had some left-out layers only in another form (a registry pull keeps them
            # compressed, under other digests), or no more: send those blobs too, and load the image
            # again with every layer named by the blob it carries (all staged now).
            others = [i for i in range(len(image.diff_ids)) if i not in plan.missing]
            note(f"the host's content store lacks some of {len(others)} layer(s) it has unpacked (e.g. from a "
                 "registry pull); sending them too")
            try:
                sent = {**got, **_send_more(leg, exporter, codec.name, others, listed, got, reporter)}
                every = range(len(image.diff_ids))
                files = load_files(image, every, frozenset(every), sent, staging, mode)
                staged = _staged_blobs(exporter, codec.name, image.diff_ids, sent)
                host_id = install(conn, host.docker, image, staging, mode, exporter.config(), files,
                                  list(sent.values()), staged, counter, fmt, closing=leg.closing,
                                  previous=plan.ref_was)
            finally:
                # the incomplete image goes either way (Docker does not even list it)
                if host_id != incomplete.image_id:
                    conn.run(cmd.remove_image_argv(host.docker, incomplete.image_id),
                             what="removing an incomplete image", check=False, timeout=120)
        return host_id
    except Exception as exc:
        if relayed is not None:
            relayed.close()
        if puller is not None:
            try:
                puller.wait()  # the pull stops when it stops; the loader must not start after close()
            except BaseException:  # noqa: BLE001 - the first error is the one to report
                pass
        loader.close()  # Ctrl-C does not wait for a load in progress: the next ship cleans up
        if not (isinstance(exc, DeployError) and exc.transient):
            remove_partials(conn, host.docker, staging)  # the verified blobs stay for the next attempt
        raise


def _send_more(leg: Leg, exporter: Exporter, codec: str, indices: Sequence[int], listed: dict[str, int | None],
               got: dict[str, Blob], reporter: Reporter) -> dict[str, Blob]:
    """Export and stage the blobs of more layers (after the first load said they are needed)."""
    image, name = leg.image, leg.host.name
    wanted = {image.diff_ids[i] for i in indices} - set(got)
    more = Exporter(image, {codec: wanted}, level=exporter.level, cache=exporter.cache).start()
    try:
        extra: dict[str, Blob] = {}
        for blob in more.ready():
            reporter.phase(name, "sending", f"layer {len(extra) + 1}/{len(wanted)} again")
            if not stage_blob(leg.conn, leg.host.staging_dir, blob, leg.counter, partial(reporter.note, name), listed):
                leg.counter.add_layers()
            extra[blob.diff_id] = blob
        return extra
    finally:
        more.close()


def _staged_blobs(exporter: Exporter, codec: str, diff_ids: Sequence[str], got: dict[str, Blob]) -> list[Blob]:
    """The blobs install removes from staging: this ship's, and those of the image's other layers
    that an earlier, killed ship staged and loaded (the local cache knows their names)."""
    others = (exporter.cached(d, codec) for d in diff_ids if d not in got)
    return [*got.values(), *(b for b in others if b is not None)]


def run_registry(leg: Leg, pusher: Pusher, reporter: Reporter) -> str | None:
    """Push once (shared by all hosts of this ship), pull on the host, verify the id, tag."""
    host, plan, conn, image = leg.host, leg.plan, leg.conn, leg.image
    assert plan.registry_ref is not None and host.registry
    name = host.name
    reporter.phase(name, "pushing", plan.registry_ref)
    # progress counts Docker's raw layer bytes as they go; bytes_sent is what crossed the wire
    # (compressed), charged to the host that pushed: the others reuse the push
    stages = _pull_stages(leg, pusher, reporter)
    try:
        stats, pushed_here = pusher.push(host.registry, on_bytes=lambda n: reporter.sent(name, n))
    except BaseException:
        if stages:  # the image's pull would have removed them
            conn.run(cmd.remove_image_argv(host.docker, *stages), what="removing the stage images", check=False,
                     timeout=60)
        raise
    if pushed_here:
        leg.counter.add(stats.bytes_sent)
    else:
        reporter.note(name, f"{plan.registry_ref} already pushed by this ship")
    reporter.phase(name, "pulling", plan.registry_ref)
    # the pulled image's id is the config digest on the classic store, the pushed manifest's (or
    # index's) digest on the containerd store; that manifest names exactly our config and layers.
    # A containerd-store workstation pushes its own manifest (or index): its id is that digest.
    # The likeliest first: the history record, appended in the pull's round trip, names it.
    likely = (stats.digest, image.id) if plan.image_store == "containerd" else (image.config_digest,)
    expected = tuple(dict.fromkeys(d for d in (*likely, image.config_digest, stats.digest, image.id) if d))
    # a pull that got the manifest pushed here got exactly the first of EXPECTED: no inspect for the
    # id (the containerd store's layers are still counted, beside the tag: moby#49784)
    pulled, host_id = pull_and_tag(conn, host.docker, plan, expected, stats, leg.closing, staging=host.staging_dir,
                                   drop=stages)
    leg.counter.add_layers(pulled.layers_pulled)
    return host_id


def _pull_stages(leg: Leg, pusher: Pusher, reporter: Reporter) -> list[str]:
    """Pull each stage pushed ahead of the image (deployer.local.stages) as soon as it is pushed,
    while the push goes on: the image's own pull then has only the layers above the last one.
    A stage holding no layer the host lacks is skipped, and so is every stage once the push is
    over (the image's pull does it in one go); one that fails to pull ends them. The stages
    pulled (`repo@digest`), for the image's pull to remove."""
    host, plan, conn = leg.host, leg.plan, leg.conn
    assert plan.registry_ref is not None and host.registry
    repo = plan.registry_ref.rsplit(":", 1)[0]
    pulled: list[str] = []
    for k, (digest, layers) in enumerate(pusher.stages(host.registry), 1):
        if pusher.pushed(host.registry):
            break
        if not any(i < layers for i in plan.missing):
            continue
        reporter.phase(host.name, "pulling", f"stage {k} while the push goes on")
        step = steps.stage_pull(host.docker, f"{repo}@{digest}", k)
        res = conn.run(step.argv, what=step.label, check=False)
        if not res.ok:
            reporter.note(host.name, f"{step.label} failed ({res.stderr_tail() or f'exit {res.exited}'}); "
                          "the image's pull gets its layers")
            break
        pulled.append(f"{repo}@{digest}")
        log.info("%s: pulled stage %d (the image's first %d layers) while the push goes on", host.name, k, layers)
        leg.counter.add_layers(cmd.parse_pull(res.stdout)[0])
        reporter.phase(host.name, "pushing", plan.registry_ref)
    return pulled
