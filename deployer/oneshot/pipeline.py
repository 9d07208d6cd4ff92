"""`deploy ship -p`: render for every host, build, ship, then start on the hosts that got the image.

    prepare(playbook, hosts, options)      render + validate everything (errors before any work)
    deploy(prepared, ...) -> [HostReport]  build -> ship -> preflight all -> start
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from deployer.errors import DeployError, SpecError
from deployer.fleet import Outcome, carry, stopped_outcomes
from deployer.inventory.host import Host
from deployer.oneshot import image as images
from deployer.oneshot.platform import Arches, decide
from deployer.oneshot.report import FAILED, NOT_RUN, SKIPPED, STARTED, HostReport
from deployer.playbook.deploy import render_all, run_specs, ship_codec, ship_hosts, ship_level
from deployer.playbook.model import Playbook, RenderedPlaybook
from deployer.runs.spec import RunSpec
from deployer.runs.start import Reused, Started
from deployer.ship.model import ShipOptions, ShipResult
from deployer.ship.progress import NullReporter, Reporter

Say = Callable[[str], None]
Progress = Callable[[], AbstractContextManager[Reporter]]
PLACEHOLDER_IMAGE = "deployer-check/image:placeholder"  # stands in for the ref a build will produce


@dataclass(frozen=True)
class OneShotOptions:
    """The flags of `deploy ship` with a playbook."""

    via: str | None = None  # --via beats the playbook's ship.via, which beats the inventory
    origin_pull: str = "auto"  # --origin-pull never: no host pulls the base from its registry
    level: int | None = None  # --level; None: the playbook's ship.level, else the default
    codec: str | None = None  # --codec gzip|zstd; None: the playbook's ship.codec, else zstd where hosts read it
    parallel: int = 8
    break_lock: bool = False
    lock_wait: float = 0.0
    image: str | None = None  # --image REF instead of the playbook's image
    build: bool = True  # False: --no-build
    run: bool = True  # False: --no-run
    connect_timeout: float = 10.0
    relays: Mapping[str, Host] = field(default_factory=dict)  # the hosts named by deploy_relay


@dataclass(frozen=True)
class Prepared:
    """Everything checked before any work: per-host renders, ship hosts, the image decision."""

    playbook: Playbook
    hosts: tuple[Host, ...]
    ship_hosts: tuple[Host, ...]  # with the playbook's ship.via / ship.registry applied
    rendered: Mapping[str, RenderedPlaybook]
    image: images.ImageChoice
    options: OneShotOptions

    @property
    def runs(self) -> bool:
        return self.options.run and self.playbook.run is not None

    def ship_options(self, git_rev: str | None) -> ShipOptions:
        o = self.options
        record = (("playbook", self.playbook.name),) + ((("git_rev", git_rev),) if git_rev else ())
        return ShipOptions(via=o.via, level=ship_level(self.playbook, o.level), codec=ship_codec(self.playbook, o.codec),
                           parallel=o.parallel, break_lock=o.break_lock, lock_wait=o.lock_wait, connect_timeout=o.connect_timeout,
                           origin_pull=o.origin_pull, record=record, relays=o.relays, gpu_facts=self.runs)

    def specs(self, ref: str, git_rev: str | None, names: Sequence[str] | None = None) -> dict[str, RunSpec]:
        """host -> RunSpec of the shipped ref (labels carry the playbook and git revision)."""
        chosen = self.rendered if names is None else {n: self.rendered[n] for n in names}
        return run_specs(chosen, ref, git_rev=git_rev)


def prepare(playbook: Playbook, hosts: Sequence[Host], options: OneShotOptions,
            exists: Callable[[str], bool] | None = None) -> Prepared:
    """Render for every host and check every run spec; PlaybookError/SpecError before anything happens."""
    from deployer.runs.start import prepare as check_specs

    if not hosts:
        raise SpecError("no hosts selected")
    if options.image and not options.build:
        raise SpecError("--no-build and --image together: --image already names a built image")
    rendered = render_all(playbook, hosts)
    choice = images.choose(playbook, image_ref=options.image, no_build=not options.build, exists=exists)
    prepared = Prepared(playbook, tuple(hosts), tuple(ship_hosts(playbook, hosts)), rendered, choice, options)
    if prepared.runs:
        # env_file contents, names, volumes, GPU requests: checked with a stand-in ref before the build
        check_specs(list(hosts), prepared.specs(choice.ref or PLACEHOLDER_IMAGE, None))
    return prepared


def deploy(prepared: Prepared, *, say: Say, on_line: Say, progress: Progress | None = None,
           client: Any = None, arches: Arches | None = None) -> list[HostReport]:
    """Build (if the playbook says so) for the hosts' platform, ship to every host, start where the ship
    succeeded. `arches(hosts)`: each host's architecture (default: asked over SSH)."""
    from deployer.local.client import docker_client
    from deployer.ship import ship_image

    client = client or docker_client()
    choice = prepared.image
    # until the build names it: the image's name, for a stop's records
    ref, git_rev = choice.ref or (choice.build.tag if choice.build else None) or "", None
    # the run starts on the connection (and with the probe) each host's ship just used
    handover: dict[str, Reused] = {}
    shipped: list[Outcome[ShipResult]] = []
    specs: dict[str, RunSpec] = {}
    started: dict[str, Outcome[Started]] = {}
    try:
        ref, git_rev = _image(prepared, client, say, on_line, arches)
        say(f"shipping {ref} to {', '.join(h.name for h in prepared.hosts)}")
        specs = prepared.specs(ref, git_rev) if prepared.playbook.run is not None else {}
        with (progress or (lambda: nullcontext(NullReporter())))() as reporter:
            shipped = ship_image(list(prepared.ship_hosts), ref, prepared.ship_options(git_rev), reporter,
                                 client=client, handover=handover if prepared.runs else None)
        ok_hosts = [o.host.name for o in shipped if o.ok]
        if prepared.runs and ok_hosts:
            started = _start(prepared, {n: specs[n] for n in ok_hosts}, say, handover)
        elif prepared.runs:
            say("nothing started: no host got the image")
    except KeyboardInterrupt as stop:  # what each host got so far (nothing, if building), for --json (deployer.cli)
        if shipped:  # stopped while starting
            ok = [o.host for o in shipped if o.ok]
            started = {o.host.name: o for o in stopped_outcomes(stop, ok, Started)}
        else:
            shipped = stopped_outcomes(stop, list(prepared.ship_hosts), ShipResult)
        carry(stop, [_report(prepared, o, started.get(o.host.name), specs.get(o.host.name), ref, git_rev)
                     for o in shipped])
        raise
    except DeployError as exc:  # before any host got the image (the build failed): each one's record says so
        if not shipped:
            carry(exc, [_report(prepared, Outcome(h, error=exc), None, specs.get(h.name), ref, git_rev)
                        for h in prepared.ship_hosts])
        raise
    finally:
        for reused in handover.values():  # start took those it used
            reused.session.close()
    return [_report(prepared, o, started.get(o.host.name), specs.get(o.host.name), ref, git_rev) for o in shipped]


def _image(prepared: Prepared, client: Any, say: Say, on_line: Say,
           arches: Arches | None) -> tuple[str, str | None]:
    """(ref to ship, its git revision): built now, or the chosen local image."""
    from deployer.local.build import LEGACY, build, workstation_arch

    choice = prepared.image
    if choice.note:
        say(f"note: {choice.note}")
    if choice.build is None:
        assert choice.ref is not None
        return choice.ref, images.git_rev_label(client, choice.ref)
    target = decide(choice.build.platform, prepared.hosts, workstation_arch(client), arches)  # refuses before building
    say(f"building {choice.build.tag} from {choice.build.context} {target.reason}")
    for warning in target.warnings:
        say(f"warning: {warning}")
    result = build(choice.build, on_line=on_line, client=client, platforms=target.platforms)
    if result.builder == LEGACY:
        say("warning: docker buildx is not installed: built with Docker's legacy builder (no BuildKit features)")
    rev = result.revision
    if rev is None:
        say(f"{choice.build.context} is not in a git work tree: tagged by image id ({result.ref})")
    elif rev.dirty:
        say(f"uncommitted changes in the build context: tagged {result.ref}")
    say(f"built {', '.join(result.refs)} ({result.image_id[:19]})")
    return result.ref, rev.tag if rev else None


def _start(prepared: Prepared, specs: Mapping[str, RunSpec], say: Say,
           handover: dict[str, Reused]) -> dict[str, Outcome[Started]]:
    from deployer.runs.start import start

    hosts = [h for h in prepared.hosts if h.name in specs]
    reuse = dict(handover)  # start uses or closes every one of them
    handover.clear()
    say(f"starting on {', '.join(specs)}: preflight every host first")
    try:
        outcomes = start(hosts, dict(specs), parallel=prepared.options.parallel,
                         reporter=lambda h, m: say(f"{h}: {m}"), timeout=prepared.options.connect_timeout,
                         reuse=reuse)
    except DeployError as exc:  # a spec problem for all hosts: report it on each
        return {h.name: Outcome(h, error=exc) for h in hosts}
    return {o.host.name: o for o in outcomes}


def _report(prepared: Prepared, shipped: Outcome[ShipResult], started: Outcome[Started] | None,
            spec: RunSpec | None, ref: str, git_rev: str | None) -> HostReport:
    name = shipped.host.name
    result = shipped.value or ShipResult(host=shipped.host.name)
    base: dict[str, Any] = {"host": name, "ship": result, "image": ref, "playbook": prepared.playbook.name,
                            "git_rev": git_rev, "container": spec.name if spec else None}
    if not shipped.ok:
        return HostReport(**base, ship_error=shipped.error, state=SKIPPED if prepared.runs else NOT_RUN)
    if started is None:
        return HostReport(**base, state=NOT_RUN)
    if not started.ok:
        return HostReport(**base, run_error=started.error, state=FAILED)
    return HostReport(**base, started=started.value, state=STARTED)
