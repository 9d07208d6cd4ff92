"""`deploy ship` (wiring only): parse, call deployer.ship, render per-host results."""
from __future__ import annotations

import sys
from typing import Any

import click

from deployer.cli import output
from deployer.cli.app import cli
from deployer.cli.context import AppContext
from deployer.cli.inventory import PATTERN_HELP
from deployer.errors import DeployError, SpecError
from deployer.fleet import Outcome
from deployer.ship import VIA_CHOICES, ShipOptions, ShipResult, plan_ship, ship_image
from deployer.ship.plan import human_bytes
from deployer.ship.progress import PlainReporter, RichReporter
from deployer.ship.render import plan_json, render

EPILOG = """\b
Examples:
  deploy ship --host gpu01 --image trainer:v3                 # auto route per host
  deploy ship --host 'gpus:!gpu03' --image trainer:v3 --parallel 16
  deploy ship --host airgapped --image trainer:v3 --via tarball --level 9
  deploy ship --host gpus --image trainer:v3 --json | jq '.[] | select(.ok|not)'
  deploy ship --host gpu01 --image trainer:v3 --dry-run       # show the plan and remote commands

\b
Routes (--via, default: the host's deploy_via, else auto):
  registry  push once to deploy_registry from here, `docker pull` on the host
  tarball   send only the layers the host lacks (zstd) over SSH into deploy_staging_dir,
            resumable and sha256-checked, then `docker load` on the host
  auto      registry when the host has deploy_registry and reaches it, else tarball
Either way the image id on the host is checked against the local one before REF is tagged.
--json prints [{"host","ok","error","via","image_id","verified","layers_total",
"layers_sent","bytes_sent","seconds"}]; bytes_sent = bytes this ship put on the wire
for that host (SSH payload; for the registry route, the push, counted once).
"""


@cli.command("ship", epilog=EPILOG)
@click.option("--host", "-H", "pattern", required=True, metavar="PATTERN", help=PATTERN_HELP)
@click.option("--image", "image_ref", metavar="REF", help="Local image to ship (name:tag).")
@click.option("--via", type=click.Choice(VIA_CHOICES), default=None,
              help="Route; overrides the inventory's deploy_via.")
@click.option("--no-run", is_flag=True,
              help="Only ship, never start a container. (Shipping --image alone never runs anything.)")
@click.option("--parallel", type=click.IntRange(1, 512), default=8, show_default=True,
              help="Hosts shipped at once.")
@click.option("--level", type=click.IntRange(1, 19), default=3, show_default=True, help="zstd level for layers.")
@click.option("--break-lock", is_flag=True, help="Clear a host's stale deploy lock first (see the lock message).")
@click.option("--lock-wait", type=click.FloatRange(0), default=0, metavar="SECONDS",
              help="Wait this long for another deploy's lock on a host before failing.")
@click.option("--dry-run", is_flag=True, help="Plan only: show route, layers, bytes and remote commands.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per host on stdout.")
@click.pass_obj
def ship(app: AppContext, pattern: str, image_ref: str | None, via: str | None, no_run: bool, parallel: int,
         level: int, break_lock: bool, lock_wait: float, dry_run: bool, as_json: bool) -> None:
    """Ship a local image to hosts by the fastest safe route, verified by image id.

    Every selected host ends up with REF pointing at exactly the local image id, or its
    own error; hosts are shipped in parallel and one failure never stops the others
    (exit code 1 if any host failed). Interrupted transfers resume where they stopped.
    """
    if not image_ref:
        raise SpecError("--image REF is required", hint="e.g. deploy ship --host gpu01 --image trainer:v3")
    hosts = app.select(pattern)
    options = ShipOptions(via=via, level=level, parallel=parallel, break_lock=break_lock, lock_wait=lock_wait)
    if dry_run:
        _dry_run(hosts, image_ref, options, as_json)
        return
    if sys.stderr.isatty():
        with RichReporter() as reporter:
            outcomes = ship_image(hosts, image_ref, options, reporter)
    else:
        outcomes = ship_image(hosts, image_ref, options, PlainReporter())
    _report(outcomes, as_json)


def _result_of(outcome: Outcome[ShipResult]) -> ShipResult:
    if outcome.value is not None:
        return outcome.value
    partial = getattr(outcome.error, "ship_result", None)
    return partial if isinstance(partial, ShipResult) else ShipResult(host=outcome.host.name)


def _error_text(error: DeployError | None) -> str | None:
    if error is None:
        return None
    return getattr(error, "reason", None) or str(error)


def _report(outcomes: list[Outcome[ShipResult]], as_json: bool) -> None:
    records = [_result_of(o).to_json(_error_text(o.error)) for o in outcomes]
    if as_json:
        output.emit_json(records)
    else:
        output.table(
            ["host", "result", "via", "layers", "sent", "time", "image id"],
            [[r["host"], "ok" if r["ok"] else "FAILED", r["via"] or "-",
              f"{r['layers_sent']}/{r['layers_total']}", human_bytes(r["bytes_sent"]), f"{r['seconds']:.1f}s",
              (r["image_id"] or "")[7:19] + (" verified" if r["verified"] else "")] for r in records])
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        output.info(f"error: {o.error}")
    if failed:
        raise click.exceptions.Exit(1)


def _dry_run(hosts: list[Any], image_ref: str, options: ShipOptions, as_json: bool) -> None:
    outcomes = plan_ship(hosts, image_ref, options)
    if as_json:
        output.emit_json([plan_json(o.value, o.host) if o.value is not None
                          else {"host": o.host.name, "error": _error_text(o.error)} for o in outcomes])
    else:
        for o in outcomes:
            if o.value is not None:
                click.echo("\n".join(render(o.value, o.host)))
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        output.info(f"error: {o.error}")
    if failed:
        raise click.exceptions.Exit(1)
