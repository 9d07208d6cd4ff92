"""`deploy ship` (wiring only): parse, call deployer.ship, render per-host results."""
from __future__ import annotations

import sys
from typing import Any

import click
from click.core import ParameterSource

from deployer.cli import output
from deployer.cli.app import cli, finish
from deployer.cli.context import AppContext
from deployer.cli.inventory import host_pattern_option
from deployer.codec import CODECS
from deployer.errors import SpecError, error_fields
from deployer.fleet import Outcome
from deployer.inventory.host import ORIGIN_MODES
from deployer.oneshot.pipeline import OneShotOptions
from deployer.playbook.deploy import DEFAULT_LEVEL
from deployer.ship import VIA_CHOICES, ShipOptions, ShipResult, plan_ship, ship_image
from deployer.ship.plan import human_bytes
from deployer.ship.progress import PlainReporter, RichReporter
from deployer.ship.render import plan_json, render

EPILOG = """\b
Examples:
  deploy ship                                                 # the default playbook: build, ship, run
  deploy ship -p playbooks/sample.yml --host gpu01,airgap01   # the playbook on two hosts
  deploy ship -p playbooks/sample.yml --dry-run               # plan + exact commands, changes nothing
  deploy ship -p playbooks/sample.yml --no-build --no-run     # ship the last build, start nothing
  deploy ship --host gpu01 --image trainer:v3                 # ship a local image (never runs it)
  deploy ship --host 'gpus:!gpu03' --image trainer:v3 --parallel 16
  deploy ship --host airgapped --image trainer:v3 --via tarball --level 9
  deploy ship --host gpus --image trainer:v3 --origin-pull never   # send the base too
  deploy ship --host gpus --image trainer:v3 --via registry --codec gzip   # an image Docker 20.10 pulls too
  deploy ship --host gpus --image trainer:v3 --json | jq '.[] | select(.ok|not)'

\b
With a playbook (-p, or the default one when neither -p nor --image is given), every
selected host (--host, else the playbook's hosts:) is rendered first, so a typo stops the
deploy before anything is built or sent. Then: build the image through the local Docker
(tagged <name>:<git revision>, -dirty with uncommitted changes; --no-build ships that tag
if it exists, else <name>:latest; --image REF ships REF instead), ship it, and start the
playbook's run: section on the hosts whose ship succeeded (every one preflighted before
any starts; --no-run skips this). One line per host: route, layers and bytes sent,
verified image id, container and state. --json adds to the ship keys below: route, image,
playbook, git_rev, shipped, ship_error, container, container_id, state, run_error, command.

\b
Routes (--via, default: the playbook's ship.via, else the host's deploy_via, else auto):
  registry  push once to deploy_registry from here, `docker pull` on the host; the push
            uploads deployer's zstd layers (an OCI image) when every host that pulls it runs
            Docker 23+, else it is `docker push` (gzip; also with --codec gzip)
  tarball   send only the layers the host lacks (zstd) over SSH into deploy_staging_dir,
            resumable and sha256-checked, then `docker load` on the host
  auto      registry when the host has deploy_registry and reaches it, else tarball
Origin pull (tarball route): when the image is built on a base the local Docker pulled from a
registry (it has a repo digest), a host that lacks the base and reaches that registry pulls it
there by digest, with its own credentials, while only the layers above it are sent; if the pull
fails, the base layers are sent instead. Off per host with deploy_origin_pull: never, or for the
whole ship with --origin-pull never. Air-gapped hosts are never asked to pull.
Either way the host's image is checked to be the local one (same config, same layers) before
REF is tagged. The "image id" column is the id the host's `docker images` shows: the config
digest on the classic store, the manifest digest on the containerd image store.
--json prints [{"host","ok","error","hint","via","image_id","host_image_id","config_digest","verified",
"layers_total","layers_sent","origin","layers_from_origin","relay","relay_bytes","relay_fallback","bytes_sent",
"seconds","phases"}]; error is what failed (null when ok), hint what to do about it (as in every command's
--json); image_id is the local id (`docker images` here), host_image_id the host's; bytes_sent = bytes this
ship put on the wire for that host (SSH payload; for the registry route, the push, counted once);
origin the base the host pulled itself (layers_from_origin layers); relay the site node that passed
it blobs (relay_bytes over the LAN), relay_fallback true when that relay could not serve it and it
got the rest straight from the workstation; phases the seconds per phase.
Stopped by Ctrl-C, SIGTERM or SIGHUP, each host's work ends at its next step (the lock released,
a partial blob kept: running the command again resumes), --json still prints every host's record
("error": "interrupted (SIGTERM)" where it was stopped), and the exit code is 130, 143 or 129.
"""


@cli.command("ship", epilog=EPILOG)
@click.option("-p", "--playbook", "playbook_path", envvar="DEPLOY_PLAYBOOK", type=click.Path(), default=None,
              help="Playbook: build, ship and run it. Default without --image: $DEPLOY_PLAYBOOK, "
              "playbooks/default.yml, or the only file in playbooks/.")
@host_pattern_option(default=None, note="Default with a playbook: its hosts:.")
@click.option("--image", "image_ref", metavar="REF", help="Local image to ship (name:tag); with -p, instead of building.")
@click.option("--via", type=click.Choice(VIA_CHOICES), default=None,
              help="Route; overrides the playbook's ship.via and the inventory's deploy_via.")
@click.option("--origin-pull", type=click.Choice(ORIGIN_MODES), default="auto", show_default=True,
              help="auto: hosts that reach the registry the image's base came from pull it there; never: send it.")
@click.option("--no-build", is_flag=True, help="With a playbook: ship the last build instead of building.")
@click.option("--no-run", is_flag=True,
              help="Only ship, never start a container. (Shipping --image alone never runs anything.)")
@click.option("--parallel", type=click.IntRange(1, 512), default=8, show_default=True,
              help="Hosts shipped at once.")
@click.option("--level", type=click.IntRange(1, 19), default=None,
              help="zstd level for layers. Default: the playbook's ship.level, else 3.")
@click.option("--codec", type=click.Choice(CODECS), default=None,
              help="Layer compression. Default: the playbook's ship.codec, else zstd where the hosts read it "
                   "(Docker 23+), else gzip. "
                   "gzip: the registry route pushes with `docker push`, an image any Docker pulls.")
@click.option("--break-lock", is_flag=True, help="Clear a host's stale deploy lock first (see the lock message).")
@click.option("--lock-wait", type=click.FloatRange(0), default=0, metavar="SECONDS",
              help="Wait this long for another deploy's lock on a host before failing.")
@click.option("--dry-run", is_flag=True,
              help="Plan only: route, layers, bytes and the exact remote commands. Builds and changes nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per host on stdout.")
@click.pass_obj
def ship(app: AppContext, playbook_path: str | None, pattern: str | None, image_ref: str | None, via: str | None,
         origin_pull: str, no_build: bool, no_run: bool, parallel: int, level: int | None, codec: str | None,
         break_lock: bool, lock_wait: float, dry_run: bool, as_json: bool) -> None:
    """Build, ship and run a playbook, or ship a local image, on hosts; verified by image id.

    Every selected host ends up with the image pointing at exactly the local image id, or its
    own error; hosts are shipped in parallel and one failure never stops the others
    (exit code 1 if any host failed). Interrupted transfers resume where they stopped.
    """
    source = click.get_current_context().get_parameter_source("playbook_path")
    explicit = playbook_path is not None and source == ParameterSource.COMMANDLINE
    if explicit or not image_ref:
        from deployer.cli.ship_playbook import ship_playbook

        ship_playbook(app, playbook_path, pattern, OneShotOptions(
            via=via, level=level, codec=codec, parallel=parallel, break_lock=break_lock, lock_wait=lock_wait,
            origin_pull=origin_pull, image=image_ref, build=not no_build, run=not no_run), dry_run=dry_run, as_json=as_json)
        return
    if not pattern:
        raise SpecError("--host PATTERN is required with --image", hint="e.g. deploy ship --host gpu01 --image trainer:v3")
    if no_build:
        raise SpecError("--no-build needs a playbook (-p): --image ships an image that is already built")
    hosts = app.select(pattern)
    options = ShipOptions(via=via, level=level or DEFAULT_LEVEL, codec=codec, parallel=parallel, break_lock=break_lock,
                          lock_wait=lock_wait, origin_pull=origin_pull, relays=app.relays(hosts))
    if dry_run:
        _dry_run(hosts, image_ref, options, as_json)
        return
    with output.outcomes_on_stop(as_json, hosts, ShipResult, lambda outcomes: [_record(o) for o in outcomes]):
        if sys.stderr.isatty():
            with RichReporter() as reporter:
                outcomes = ship_image(hosts, image_ref, options, reporter)
        else:
            outcomes = ship_image(hosts, image_ref, options, PlainReporter())
    _report(outcomes, as_json)


def _result_of(outcome: Outcome[ShipResult]) -> ShipResult:
    return outcome.value if outcome.value is not None else ShipResult(host=outcome.host.name)


def _record(outcome: Outcome[ShipResult]) -> dict[str, Any]:
    return _result_of(outcome).to_json(**error_fields(outcome.error))


def _via(record: dict[str, Any]) -> str:
    """The table's route: 'tarball', 'tarball (relay airgap01)', and whether a relay failed the host."""
    via, relay = record["via"] or "-", record["relay"]
    if record["relay_fallback"]:
        return f"{via} (relay {relay} failed, then direct)" if relay else f"{via} (direct, its relay failed)"
    return f"{via} (relay {relay})" if relay else via


def _report(outcomes: list[Outcome[ShipResult]], as_json: bool) -> None:
    records = [_record(o) for o in outcomes]
    if as_json:
        output.emit_json(records)
    else:
        output.table(
            ["host", "result", "via", "layers", "sent", "time", "image id"],
            [[r["host"], "ok" if r["ok"] else "FAILED", _via(r),
              f"{r['layers_sent']}/{r['layers_total']}", human_bytes(r["bytes_sent"]), f"{r['seconds']:.1f}s",
              (r["host_image_id"] or r["image_id"] or "")[7:19] + (" verified" if r["verified"] else "")]
             for r in records])
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        output.info(f"error: {o.error}")
    finish(failed)


def _dry_run(hosts: list[Any], image_ref: str, options: ShipOptions, as_json: bool) -> None:
    outcomes = plan_ship(hosts, image_ref, options)
    if as_json:
        output.emit_json([plan_json(o.value, o.host) if o.value is not None
                          else {"host": o.host.name, **error_fields(o.error)} for o in outcomes])
    else:
        for o in outcomes:
            if o.value is not None:
                click.echo("\n".join(render(o.value, o.host)))
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        output.info(f"error: {o.error}")
    finish(failed)
