"""Ship one local image to many hosts: plan every host, export once, then transfer in parallel.

    ship_image(hosts, ref, options, reporter) -> list[Outcome[ShipResult]]
    plan_ship(hosts, ref, options)            -> list[Outcome[ShipPlan]]   (dry run, changes nothing)

Per host, in parallel: connect -> lock + facts + image state + present layers (one round
trip) -> plan -> preflight -> an export from the shared pool (deployer.ship.exports: one
`docker save` for the first wave of hosts) -> transfer -> load -> verify id -> tag -> clean
staging -> history + unlock.
A failed host's Outcome carries the error and, as its value, the partial ShipResult.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from deployer import history, layercache
from deployer import lock as locks
from deployer.background import in_background
from deployer.codec import CODECS
from deployer.commands import load as ld
from deployer.commands import ship as cmd
from deployer.commands.facts import probe_argv
from deployer.commands.layers import (
    content_argv,
    enough_for,
    missing_layers,
    parse_content,
    parse_listing,
    present_layers_argv,
)
from deployer.errors import CommandError, DeployError, HostError, Interrupted, PreflightError, SpecError, TransferError
from deployer.facts import PROBE_TIMEOUT_S, read_probe
from deployer.fleet import Outcome, Unfinished, carry, for_each_host
from deployer.inventory.host import ORIGIN_MODES, Host
from deployer.local.cache import Blob, Cache
from deployer.local.client import Client, docker_client, prefetch_info
from deployer.local.compress import codec_level
from deployer.local.export import Exporter
from deployer.local.image import ImageInfo, history_sizes, inspect
from deployer.local.sizes import LayerSizes
from deployer.refs import split_ref
from deployer.runs.start import Reused
from deployer.ship.conn import EarlyConnects, HostConn
from deployer.ship.exports import ExportPool
from deployer.ship.loader import IncompleteImage
from deployer.ship.model import ShipOptions, ShipResult
from deployer.ship.origin import Origin, find_origin, with_blobs
from deployer.ship.plan import ShipPlan, human_bytes, make_plan, name_layers, needs_layer_sizes, preflight, pulled_ids
from deployer.ship.progress import NullReporter, Reporter
from deployer.ship.pullers import Pullers
from deployer.ship.recall import Recalled, light_listing, probe_key, recalled_facts, recalled_facts_of
from deployer.ship.registry import IncompletePull, Pusher
from deployer.ship.relay import Hop, Site, hops_of, sites_of
from deployer.ship.route import Leg, OriginPullFailed, run_registry, run_tarball
from deployer.ship.tarball import Counter, tag_and_verify
from deployer.tarfmt import Descriptor
from deployer.transport.batch import Batch, run_batch
from deployer.transport.result import TIMEOUT_EXIT, Result

log = logging.getLogger(__name__)

# after a registry pull left an incomplete image (moby#49784), auto sends an image with the same
# present layers for this long (on the same Docker install): its pulls stay incomplete while the
# host holds layers it loaded
PULL_MEMORY_S = 7 * 24 * 3600.0


@dataclass
class Job:
    """One host's ship in progress, the runner's own (mutable: filled in as the phases run; the
    routes get a frozen Leg and return the host's image id)."""

    host: Host
    conn: HostConn
    image: ImageInfo
    started: float = field(default_factory=time.monotonic)
    lock: locks.Lock | None = None
    facts: Any = None
    plan: ShipPlan | None = None
    counter: Counter = field(default_factory=Counter)  # bytes and layers sent so far
    host_id: str | None = None  # the id the host's Docker gives the image (its store's kind of id), once verified
    record: tuple[tuple[str, str], ...] = ()  # extra history fields (ShipOptions.record)
    site: Site | None = None  # the site relay it receives its blobs through, if its tarball route uses one
    staged: dict[str, int | None] | None = None  # the staging dir's blobs and sizes, once prepared under the lock
    recorded: bool = False  # the ship's history record is on the host (an install's closing appended it)
    probed: Result | None = None  # the host's probe (GPUs included with ShipOptions.gpu_facts)
    light: bool = False  # planned from what the last ship left (deployer.ship.recall), not checked in full

    def result(self, phases: tuple[tuple[str, float], ...] = ()) -> ShipResult:
        plan = self.plan
        return ShipResult(
            host=self.host.name, via=plan.via if plan else None, route=plan.route if plan else None,
            image_id=self.image.id, verified=self.host_id is not None, host_image_id=self.host_id,
            config_digest=self.image.config_digest,
            layers_total=len(self.image.diff_ids), layers_sent=self.counter.layers,
            bytes_sent=self.counter.sent, seconds=time.monotonic() - self.started, phases=phases,
            origin=plan.origin if plan and self.host_id else None,
            layers_from_origin=len(plan.from_origin) if plan and self.host_id else 0,
            relay=self.counter.relay, relay_bytes=self.counter.lan, relay_fallback=self.counter.fell_back,
        )


def _oci_state(image: ImageInfo, state: cmd.ImageState, named: dict[str, Descriptor]) -> cmd.ImageState:
    """On a containerd-store host: REF already names the image if it names the manifest deployer's
    load would make there now (every layer NAMED as plan.name_layers does)."""
    config = Cache().get_config(image.config_digest)
    if config is None or state.ref_id is None or any(d not in named for d in image.diff_ids):
        return state
    expected = ld.load_head("oci", config, image.diff_ids, [], named).image_id
    return cmd.ImageState(state.ref_id, state.ids | {expected}) if state.ref_id == expected else state


class Bases:
    """The image's origin (deployer.ship.origin) for a ship: looked for locally once, in a thread
    while the hosts connect; the registry's manifest read once, by the first host that needs it (a
    containerd-store host that lacks the base)."""

    def __init__(self, image: ImageInfo, client: Client, options: ShipOptions,
                 layer_sizes: Sequence[int] | None = None) -> None:
        self._client, self._lock = client, threading.RLock()
        self._read = False
        self._found: Future[Origin | None] | None = None
        self.origin: Origin | None = None
        if options.origin_pull != "never":
            self._found = in_background("find-origin", find_origin, image, client, layer_sizes)

    def for_host(self, host: Host, options: ShipOptions) -> Origin | None:
        """The origin for HOST, unless it or the ship says never (deploy_origin_pull, --origin-pull)."""
        mode = host.origin_pull if "deploy_origin_pull" in host.vars else options.origin_pull
        if mode not in ORIGIN_MODES:
            raise SpecError(f"{host.name}: deploy_origin_pull is {mode!r}",
                            hint=f"use one of: {', '.join(ORIGIN_MODES)}")
        return self._origin() if mode == "auto" else None

    def _origin(self) -> Origin | None:
        """The origin, once the lookup started in __init__ is done (raising what it raised)."""
        with self._lock:
            if self._found is not None:
                self.origin, self._found = self._found.result(), None
            return self.origin

    def with_blobs(self) -> Origin | None:
        with self._lock:
            self._origin()
            if self.origin is not None and not self._read:
                self.origin, self._read = with_blobs(self.origin, self._client), True
            return self.origin


CHECK_TIMEOUT_S = PROBE_TIMEOUT_S + 120  # a ship's one round trip of reads: the probe, the image listing


def _observe(job: Job, options: ShipOptions, history_sizes: Sequence[int], reporter: Reporter,
             take_lock: bool, sizes: LayerSizes, bases: Bases | None = None, relay: Hop | None = None) -> Job:
    """Connect, (lock,) gather facts and what the host has, plan and preflight."""
    host, image, conn = job.host, job.image, job.conn
    reporter.phase(host.name, "connecting")
    conn.connect()
    base = bases.for_host(host, options) if bases is not None else None  # found meanwhile
    session = conn.session()
    docker_argv = host.docker
    via = options.via or host.via
    if take_lock and (options.lock_wait > 0 or options.break_lock):
        # waiting for another deploy (or breaking its lock): read the host only once it is done
        reporter.phase(host.name, "locking")
        job.lock = locks.acquire(session, host.staging_dir, image.ref, break_lock=options.break_lock,
                                 wait_s=options.lock_wait)
        take_lock = False
    # The lock, the reads and (while the lock is ours) the staging dir's listing go in one round
    # trip (deployer.commands.batch): the lock first, then the others at once.
    reporter.phase(host.name, "checking")
    claim = locks.Claim(host.name, host.staging_dir, image.ref) if take_lock else None
    token = claim.token if claim is not None else job.lock.token if job.lock is not None else ""
    remembered = layercache.remembered(host)  # only images new since the last listing get inspected
    light = _light(job, options, remembered, claim is not None, base, relay)
    if light is not None:
        # a re-ship onto the host as its last ship left it: no docker call (deployer.ship.recall)
        if light.facts.image_store == "containerd" and via != "registry":
            sizes.prefetch()  # its plan names the layers it lacks by their sizes: read them meanwhile
        steps = [cmd.prepare_argv(host.staging_dir, token), content_argv(host.staging_dir)]
    else:
        steps = [
            # a ship needs no GPU facts; whether the host reaches the base's registry, if there is one
            probe_argv(host, gpus=options.gpu_facts, origin=base.registry if base else "", versions=False),
            # the image REF names, and the host's images (all but that one, after a build that changed
            # only the top layer, when the workstation knows its layers); whether the image is there
            # under its id, the listing says
            present_layers_argv(docker_argv, host.staging_dir, remembered, image.ref,
                                enough_for(image.diff_ids, remembered)),
            *([cmd.prepare_argv(host.staging_dir, token)] if token else []),  # a dry run changes nothing
        ]
    if claim is not None:
        steps.insert(0, claim.argv)
    try:
        replies = run_batch(session, steps, timeout=CHECK_TIMEOUT_S, parallel=True, lead=claim is not None)
    except DeployError as exc:
        if claim is not None:  # the lock may be ours by now (the reply was lost): released, if so, as a failed ship's is
            job.lock = locks.Lock(host.name, host.staging_dir, claim.token)
        if not (isinstance(exc, CommandError) and exc.result.exited == TIMEOUT_EXIT):
            raise
        raise HostError(host.name, f"checking the host: no answer within {CHECK_TIMEOUT_S:g}s from its Docker "
                        "(its state and images) or its staging dir",
                        hint="Docker on the host may be hung: see that `docker info` answers there (a hung "
                             "daemon needs a restart), and that the staging dir's filesystem responds") from exc
    if claim is not None:
        job.lock = claim.settle(session, replies.pop(0))
    if light is not None:  # the replies of a full check, from what is remembered and what was read
        prepared, records = replies
        replies = [Result(("the last ship's probe",), 0, light.probe, host=host.name),
                   replace(records, stdout=records.stdout + light.listing), prepared]
        log.info("%s: the host as its last ship left it: no probe, no image reads (the install verifies)",
                 host.name)
    probed, listed = replies[:2]
    job.probed, job.light = probed, light is not None
    # None: not prepared (a dry run, or a lock taken over from a dead owner after the batch)
    job.staged = cmd.parse_stat(replies[2].stdout) if token and replies[2].ok else None
    job.facts = light.facts if light is not None else read_probe(host.name, probed)
    if light is None and probed.ok and job.facts.docker is not None:
        layercache.remember_probe(host, probe_key(host), probed.stdout)  # for the next re-ship's light check
    image_state = cmd.parse_image_state(listed.stdout)
    if image_state is None:
        raise CommandError(host.name, listed, what="reading the image's state on the host failed")
    have = frozenset[str]()
    listed_ids = frozenset[str]()
    listing = parse_listing(listed.stdout) if listed.ok else None
    if listing is not None:
        have, listed_ids = listing.present(remembered), listing.ids
        if listing.complete:
            layercache.remember(host, listing, remembered)
    # on the classic store the image's id is its config digest: there if listed, or if REF names it
    # (the containerd store's ids are manifest digests: _oci_state and pulled_ids below)
    if image.config_digest == image_state.ref_id or image.config_digest in listed_ids:
        image_state = replace(image_state, ids=image_state.ids | {image.config_digest})
    try:
        content = parse_content(listed.stdout)
        missing = missing_layers(image.diff_ids, have)
        if base is not None and bases is not None and getattr(job.facts, "origin_reachable", None) \
                and any(base.covers(i) for i in missing) and base.unread(job.facts.image_store):
            base = bases.with_blobs()
        if job.facts.image_store == "containerd":
            # read (on a containerd workstation, computed) only when a load or the check needs them
            known = sizes.known() if needs_layer_sizes(image.diff_ids, content, missing, via) else {}
            image_state = _oci_state(image, image_state, name_layers(image.diff_ids, content, known))
            if listing is not None:
                pulled = pulled_ids(image, listing, remembered)
                image_state = replace(image_state, ids=image_state.ids | pulled)
            present = _layers_but(image, missing)
            job.plan = make_plan(host, image, job.facts, image_state, have, history_sizes, via,
                                 options.codec, known_sizes=known, host_content=content, origin=base,
                                 pulls_incomplete=layercache.pull_incomplete(host, _docker_install(job), present,
                                                                             PULL_MEMORY_S))
        else:
            job.plan = make_plan(host, image, job.facts, image_state, have, history_sizes, via,
                                 options.codec, origin=base)
        if relay is not None and job.plan.route == "tarball":
            job.plan = replace(job.plan, relay=relay.relay.name, relay_staging=relay.relay.staging_dir,
                               relay_feeds=relay.feeds)
        preflight(job.plan, job.facts, image.architecture)
    except PreflightError as exc:
        if light is None:
            raise
        # remembered facts may be stale (disk space, the registry): check the host in full (the lock is ours)
        log.info("%s: %s; checking the host in full", host.name, exc)
        return _observe(job, options, history_sizes, reporter, take_lock=False, sizes=sizes, bases=bases,
                        relay=relay)
    reporter.phase(host.name, "planned", job.plan.reason)
    return job


def _light(job: Job, options: ShipOptions, remembered: Mapping[str, Sequence[str]], locking: bool,
           base: Origin | None, relay: Hop | None) -> Recalled | None:
    """The last ship's probe and the image state as remembered, when this check may be a
    light one (deployer.ship.recall): a ship that takes the lock in the check's round trip, with
    nothing else to ask the host (no GPUs, no relay, no layer of a base it may pull from its
    origin to send), of an image whose lower layers the host's images were remembered to hold.
    The route is chosen from the remembered facts too: a registry the host no longer reaches
    fails the pull, and the host is checked in full."""
    host = job.host
    if not locking or options.gpu_facts or relay is not None or job.site is not None:
        return None
    listing = light_listing(job.image.diff_ids, remembered)
    recalled = recalled_facts(host) if listing is not None else None
    if listing is None or recalled is None:
        return None
    if base is not None and (options.via or host.via) != "registry":  # a registry host pulls it all
        # a base pulled from its origin matters only if some layer it holds is to go: the host may pull it
        missing = missing_layers(job.image.diff_ids, parse_listing(listing).present(remembered))
        if any(base.covers(i) for i in missing):
            return None
    probe, facts = recalled
    return Recalled(probe, facts, listing) if facts.docker is not None else None


def _layers_but(image: ImageInfo, missing: Sequence[int]) -> list[str]:
    left_out = set(missing)
    return [d for i, d in enumerate(image.diff_ids) if i not in left_out]


def _present(job: Job) -> list[str]:
    """The image's layers the host had when it was planned."""
    return _layers_but(job.image, job.plan.missing if job.plan is not None else ())


def _docker_install(job: Job) -> str:
    """The host's Docker as installed: its version and engine id (a reinstall, the same version
    included, forgets what the last install did)."""
    docker = getattr(job.facts, "docker", None)
    return f"{getattr(docker, 'server_version', '')} {getattr(docker, 'engine_id', '')}"


def _transfer(job: Job, pusher: Pusher, exporter: Exporter | None, reporter: Reporter) -> str | None:
    """Run the plan's route; the id REF resolves to on the host, None when it is not the shipped image."""
    host, plan = job.host, job.plan
    assert plan is not None
    if plan.route == "noop":
        return plan.host_id
    if plan.route == "tag":
        assert plan.host_id is not None
        reporter.phase(host.name, "tagging")
        ok = tag_and_verify(job.conn, host.docker, plan.host_id, job.image.ref, plan.host_id)
        return plan.host_id if ok else None
    leg = Leg(host, job.conn, job.image, plan, job.counter, job.site if plan.relay else None, job.staged,
              _Closing(job), light=job.light)
    if plan.route == "registry":
        return run_registry(leg, pusher, reporter)
    return run_tarball(leg, exporter, reporter)


def _finish(job: Job, pusher: Pusher, exporter: Exporter | None, reporter: Reporter) -> ShipResult:
    job.host_id = _transfer(job, pusher, exporter, reporter)
    if job.host_id is None:
        raise TransferError(job.host.name, f"{job.image.ref} on the host does not resolve to the shipped image "
                            f"(config {job.image.config_digest})",
                            hint="another process may have re-tagged it; ship again")
    layercache.add(job.host, job.host_id, job.image.diff_ids)  # what REF names at the next re-ship
    return job.result()


def _ship_record(job: Job, outcome: str, error: str | None = None, host_id: str | None = None) -> dict[str, Any]:
    res = job.result()
    return history.record("ship", image=job.image.ref, image_id=host_id or job.host_id or job.image.id,
                          result=outcome, config_digest=job.image.config_digest,
                          via=res.via, route=res.route, bytes_sent=res.bytes_sent,
                          layers_sent=res.layers_sent, seconds=round(res.seconds, 3), error=error,
                          **dict(job.record))


class _Closing:
    """A tarball install's last steps, in its own round trip once the image is verified and
    tagged (deployer.ship.loader.Closing): the ship's history record (its time and bytes as of
    the install's start), then the unlock."""

    def __init__(self, job: Job) -> None:
        self._job = job

    def steps(self, host_id: str) -> list[tuple[str, ...]]:
        job = self._job
        out = [history.append_command(job.host.staging_dir, _ship_record(job, "ok", host_id=host_id), inline=True)[0]]
        return out + [job.lock.release_argv] if job.lock is not None else out

    def ran(self, results: Sequence[Result]) -> None:
        job = self._job
        job.recorded = bool(results) and results[0].ok
        if job.lock is not None and len(results) > 1 and results[1].ok:
            job.lock = None


def _wrap_up(job: Job, outcome: str, error: DeployError | None = None, close: bool = True) -> None:
    """The history record and the unlock (what an install's closing did not do) in one round trip,
    then close the connection (unless not CLOSE). Best effort: never hides the ship's real outcome."""
    if error is not None and error.transient:
        _release(job)  # a dead link cannot take a history record
        return
    if not job.recorded:
        reason = str(error).splitlines()[0] if error is not None else None
        argv, line = history.append_command(job.host.staging_dir, _ship_record(job, outcome, reason))
        batch = Batch([argv, *([job.lock.release_argv] if job.lock is not None else [])], stdin_step=0)
        try:
            results = batch.split(job.conn.run(batch.argv, input=line, what="history record, unlock", check=False,
                                               timeout=60))
        except DeployError as exc:
            results = []
            log.warning("%s: could not append to the history log: %s", job.host.name, exc)
        if results and not results[0].ok:
            log.warning("%s: could not append to the history log: %s", job.host.name,
                        results[0].stderr_tail() or f"exit {results[0].exited}")
        if job.lock is not None and len(results) > 1 and results[1].ok:
            job.lock = None
    _release(job, close)  # the unlock again if the batch did not get to it; closes the connection


def _release(job: Job, close: bool = True) -> None:
    if job.lock is not None:
        try:
            job.lock.release(job.conn.session())
            job.lock = None
        except DeployError as exc:
            log.warning("%s: could not release the deploy lock: %s", job.host.name, exc)
    if close:
        job.conn.close()


def ship_image(hosts: Sequence[Host], image_ref: str, options: ShipOptions | None = None,
               reporter: Reporter | None = None, client: Client | None = None,
               image: ImageInfo | None = None, handover: dict[str, Reused] | None = None) -> list[Outcome[ShipResult]]:
    """Ship a local image to every host; one Outcome per host, in host order.

    HANDOVER: each host that shipped leaves its live session (and its probe) there for what comes
    next (`ship -p` starts the run on it), instead of closing it; the caller closes them."""
    options = options or ShipOptions()
    reporter = reporter or NullReporter()
    split_ref(image_ref)
    # the hosts' SSH handshakes overlap the local Docker's answers (a re-ship's first 0.05 s)
    conns = {h.name: HostConn(h, timeout=options.connect_timeout) for h in hosts}
    early = EarlyConnects(list(conns.values()), options.parallel)
    exports: ExportPool | None = None
    try:
        client = client or docker_client()
        prefetch_info(client)  # the export and the push need it soon; meanwhile the image is inspected
        image = image or inspect(image_ref, client)
        if image.ref != image_ref:
            image = replace(image, ref=image_ref)
        # the push is zstd blobs if every host that pulls it reads them (deployer.ship.blobpush)
        pullers = Pullers(hosts, options.via, options.codec, options.parallel)
        exports = ExportPool(image, options.level, expected=min(len(hosts), options.parallel), client=client,
                             head_start=_head_start(hosts, image, options, client))
        # the push takes the blobs the tarball hosts' exports make (each layer compressed once)
        pusher = Pusher(image, client, zstd=pullers.read_zstd, level=options.level, exports=exports)
        for registry in sorted({h.registry for h in hosts if h.registry and (options.via or h.via) == "registry"}):
            pusher.start(registry)  # a host that must take the registry route: push while it is checked
        layer_history = history_sizes(client, image)
        relay_of, hops = sites_of(hosts, options.relays), hops_of(hosts, options.relays)
        sites = {name: Site(options.relays[name], [h for h in hosts if relay_of.get(h.name) == name],
                            timeout=options.connect_timeout) for name in set(relay_of.values())}
        jobs = {h.name: Job(h, conns[h.name], image, record=options.record,
                            site=sites.get(relay_of.get(h.name, ""))) for h in hosts}
        bases = Bases(image, client, options, layer_history)
        sizes = LayerSizes(image, client)
    except BaseException as exc:
        early.cancel()  # nothing was shipped: the connections made meanwhile go
        if exports is not None:
            exports.close()  # nor is anything exported
        if isinstance(exc, DeployError):  # the local image or Docker: each host's record says it (--json)
            carry(exc, [Outcome(h, error=exc) for h in hosts])
        raise

    def again(job: Job, why: str, options: ShipOptions) -> None:
        """Plan the host once more (the lock is still ours) and send what it still lacks."""
        reporter.note(job.host.name, why)
        _observe(job, options, layer_history, reporter, take_lock=False, sizes=sizes, bases=bases,
                 relay=hops.get(job.host.name))
        plan = job.plan
        assert plan is not None
        # a light check's host may be planned for the registry route again (or found to have the image)
        codec = plan.codec if plan.route == "tarball" else None
        exporter = exports.late(codec.name, {image.diff_ids[i] for i in plan.missing}) if codec is not None else None
        _finish(job, pusher, exporter, reporter)

    def work(host: Host) -> ShipResult:
        job = jobs[host.name]
        reported = False  # every host reports to the export pool exactly once
        try:
            try:
                _observe(job, options, layer_history, reporter, take_lock=True, sizes=sizes, bases=bases,
                         relay=hops.get(host.name))
            finally:
                docker = job.facts.docker if job.facts is not None and job.plan is not None else None
                pullers.checked(host.name, docker.server_version if docker is not None else None,
                                registry_route=job.plan is not None and job.plan.route == "registry")
            plan = job.plan
            assert plan is not None
            exporter = None
            reported = True
            if plan.route == "tarball" and plan.codec is not None:
                exporter = exports.join(plan.codec.name, {image.diff_ids[i] for i in plan.missing})
            else:
                exports.leave()
            try:
                _finish(job, pusher, exporter, reporter)
                if plan.route == "registry" and plan.image_store == "containerd":
                    layercache.note_pull(host, _docker_install(job), _present(job), complete=True)
            except OriginPullFailed as exc:
                again(job, f"{exc.reason}; sending the base layers instead", replace(options, origin_pull="never"))
            except IncompletePull as exc:
                # the image is complete only with the layers' blobs: plan the host again as a
                # tarball host and send what its content store lacks (and, on the next ship, at once)
                layercache.note_pull(host, _docker_install(job), _present(job), complete=False)
                again(job, f"{exc.reason}; sending the image as a tarball instead", replace(options, via="tarball"))
                if job.host_id != exc.image_id:  # the incomplete pull, unless a container still uses it
                    job.conn.run(cmd.remove_image_argv(host.docker, exc.image_id), what="removing an incomplete image",
                                 check=False, timeout=60)
            except DeployError as exc:
                if not job.light or exc.transient or isinstance(exc, Interrupted):
                    raise
                # planned from what the last ship left, and the host is not as it left it: check it
                # in full (the lock is still ours) and send what it lacks
                job.light = False
                why = ("a layer it had is gone" if isinstance(exc, IncompleteImage)
                       else str(exc).splitlines()[0].removeprefix(f"{host.name}: "))
                again(job, f"the host is not as its last ship left it ({why}): checking it in full", options)
        except DeployError as exc:
            reporter.done(host.name, False, str(exc).splitlines()[0].removeprefix(f"{host.name}: "))
            if job.plan is not None and job.lock is not None:
                _wrap_up(job, "failed", exc)
            else:
                _release(job)
            raise Unfinished(exc, job.result(reporter.timings(host.name))) from exc
        except BaseException:
            _release(job)
            raise
        finally:
            if not reported:
                exports.leave()
        reporter.phase(host.name, "finishing", "closing" if job.recorded else "history, unlock")
        _wrap_up(job, "ok", close=handover is None)
        if handover is not None and job.lock is None and (session := job.conn.detach()) is not None:
            handover[host.name] = Reused(session, job.probed)
        result = job.result(reporter.timings(host.name))  # seconds include the history record and the unlock
        log.info("%s: %.2fs: %s", host.name, result.seconds, ", ".join(f"{k} {v:.2f}s" for k, v in result.phases))
        reporter.done(host.name, True, _summary(result))
        return result

    outcomes: list[Outcome[ShipResult]] = []
    try:
        outcomes = for_each_host(hosts, work, options.parallel)
        return outcomes
    finally:
        for job in jobs.values():
            _release(job)
        exports.close()
        ok = {o.host.name for o in outcomes if o.ok}
        done = {name: all(h.name in ok for h in site.hosts) for name, site in sites.items()}
        blobs = _cached_blobs(image, options.level) if any(done.values()) else []  # for a relay's leftovers
        for name, site in sites.items():
            site.close(all_ok=done[name], image_blobs=blobs)


def _cached_blobs(image: ImageInfo, level: int) -> list[Blob]:
    """The image's layer blobs the local cache holds, in every codec: what a relay may hold of it."""
    cache = Cache()
    found = (cache.lookup(d, codec, codec_level(codec, level)) for d in image.diff_ids for codec in CODECS)
    return [b for b in found if b is not None]


def _head_start(hosts: Sequence[Host], image: ImageInfo, options: ShipOptions,
                client: Client) -> Exporter | None:
    """Start exporting every layer while the hosts are connected and planned, if some host will
    take the tarball route (the pool narrows it to what they lack, or cancels it)."""
    if not _some_take_tarball(hosts, options):
        return None
    return Exporter(image, {options.codec or "zstd": set(image.diff_ids)}, level=options.level, client=client).start()


def _some_take_tarball(hosts: Sequence[Host], options: ShipOptions) -> bool:
    """Whether some host will take the tarball route, as far as is known before they are checked:
    its route says so, or it is `auto` and has no registry, or did not reach it when last checked
    (an air-gapped host in an inventory or playbook that names a registry for all)."""
    vias = [(h, options.via or h.via) for h in hosts]
    if any(via == "tarball" or (via == "auto" and not h.registry) for h, via in vias):
        return True
    auto = [h for h, via in vias if via == "auto"]  # each with a registry: their last checks tell
    return any(r is not None and r[1].registry_reachable is False for r in recalled_facts_of(auto))


def _summary(result: ShipResult) -> str:
    if result.route == "noop":
        return "already there"
    if result.route == "tag":
        return "tagged (image was there)"
    return (f"{result.via}: {result.layers_sent}/{result.layers_total} layers, "
            f"{human_bytes(result.bytes_sent)} sent{_from_relay(result)}, {result.seconds:.1f}s, id verified")


def _from_relay(result: ShipResult) -> str:
    """What a host behind a site relay got over the LAN (the bytes it cost the uplink say little),
    and whether the relay failed it."""
    if result.relay and result.relay != result.host and result.relay_bytes:
        rest = ", the rest directly" if result.relay_fallback else ""
        return f" ({human_bytes(result.relay_bytes)} from the relay {result.relay}{rest})"
    if result.relay_fallback:
        who = f"relay {result.relay}" if result.relay else "its relay"
        return f" ({who} failed; the rest directly)"
    return ""


def plan_ship(hosts: Sequence[Host], image_ref: str, options: ShipOptions | None = None,
              client: Client | None = None) -> list[Outcome[ShipPlan]]:
    """Dry run: what ship_image would do on each host. Reads only; takes no lock, sends nothing."""
    options = options or ShipOptions()
    split_ref(image_ref)
    client = client or docker_client()
    image = replace(inspect(image_ref, client), ref=image_ref)
    layer_history = history_sizes(client, image)
    sizes = LayerSizes(image, client)
    bases = Bases(image, client, options, layer_history)
    hops = hops_of(hosts, options.relays)

    def one(host: Host) -> ShipPlan:
        job = Job(host, HostConn(host, timeout=options.connect_timeout), image)
        try:
            _observe(job, options, layer_history, NullReporter(), take_lock=False, sizes=sizes, bases=bases,
                     relay=hops.get(host.name))
            assert job.plan is not None
            return job.plan
        finally:
            job.conn.close()

    return for_each_host(hosts, one, options.parallel)
