"""`deploy prune` and `deploy rollback`: image versions on the hosts (wiring only)."""
from __future__ import annotations

from typing import Any

import click

from deployer.cli import output
from deployer.cli.app import cli, finish
from deployer.cli.context import AppContext
from deployer.cli.inventory import host_pattern_option
from deployer.errors import UsageError

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
PRUNE_COLUMNS = ("HOST", "ACTION", "KIND", "NAME", "SIZE", "WHY")


def _ctx() -> AppContext:
    ctx = click.get_current_context().find_object(AppContext)
    return ctx if ctx is not None else AppContext()


@cli.command("prune", context_settings=_SETTINGS, epilog="""\b
Examples:
  deploy prune --host gpus --dry-run       # what would go, and what stays and why
  deploy prune --host gpu01 --keep 2
  deploy prune --host gpus --older-than 2d --repo scratch/notebook
\b
Per repository deployer shipped to a host (from its history log), the newest --keep
versions stay (newest by when each was last shipped there), and so does any image a
container uses, running or not: `deploy rollback` needs them. Older versions are removed,
with exited deployer containers that finished before --older-than, stand-in images of
unfinished ships and the staging dir's leftovers (blobs kept for resuming a ship). Images
deployer did not ship are never touched unless their repository is named with --repo.
Sizes are Docker's unique size of each image (layers other images share are not counted).
Runs under the host's deploy lock: a ship in progress there makes prune skip that host.""")
@host_pattern_option(required=True)
@click.option("--keep", default=3, show_default=True, type=click.IntRange(min=0),
              help="Newest versions to keep per repository.")
@click.option("--older-than", default="7d", show_default=True,
              help="Remove exited deployer containers that finished longer ago than this (30m, 12h, 7d).")
@click.option("--repo", "repos", multiple=True, metavar="REPOSITORY",
              help="Also prune this repository's images, even ones deployer did not ship. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option("--parallel", default=8, show_default=True, help="Hosts handled at once.")
@click.option("--timeout", default=10.0, show_default=True, help="SSH connect timeout, seconds.")
@click.option("--json", "as_json", is_flag=True,
              help="Per host: ok, error, hint, removed, kept (with reasons), failed, bytes_freed (also when "
                   "Ctrl-C or SIGTERM stops it).")
def prune_cmd(pattern: str, keep: int, older_than: str, repos: tuple[str, ...], dry_run: bool, parallel: int,
              timeout: float, as_json: bool) -> None:
    """Free disk on hosts: old image versions, old exited containers, unfinished ships' leftovers."""
    from deployer.runs import prune, pruning
    from deployer.sizes import human_bytes

    age = pruning.parse_duration(older_than)
    hosts = _ctx().select(pattern)
    with output.outcomes_on_stop(as_json, hosts, prune.Pruned, prune.to_json):
        outcomes = prune.prune(hosts, keep=keep, older_than=age, repos=repos, dry_run=dry_run, parallel=parallel,
                               timeout=timeout)
    if as_json:
        output.emit_json(prune.to_json(outcomes))
    else:
        rows: list[list[Any]] = []
        for o in outcomes:
            if o.value is None:
                continue
            failed = dict((id(i), why) for i, why in o.value.failed)
            for item in o.value.plan.remove:
                action = "would remove" if dry_run else ("FAILED" if id(item) in failed else "removed")
                rows.append([o.host.name, action, item.kind, item.name, human_bytes(item.bytes),
                             failed.get(id(item), item.reason)])
            rows += [[o.host.name, "kept", i.kind, i.name, human_bytes(i.bytes), i.reason] for i in o.value.plan.keep]
        output.table(PRUNE_COLUMNS, rows)
    for o in outcomes:
        if o.error is not None or o.value is None:
            output.info(f"error: {o.error}")
            continue
        p = o.value
        verb = "would free" if dry_run else "freed"
        note = f"; {len(p.failed)} could not be removed" if p.failed else ""
        output.info(f"{o.host.name}: {verb} {human_bytes(p.bytes_freed)} ({len(p.removed)} removed, "
                    f"{len(p.plan.keep)} image(s) kept){note}")
    finish([o for o in outcomes if not o.ok or (o.value is not None and o.value.failed)])


@cli.command("rollback", context_settings=_SETTINGS, epilog="""\b
Examples:
  deploy rollback train-1 --host gpu01
  deploy rollback train-1 --host gpus --json
\b
Restarts NAME with the image it ran before the current one, as the host's history log
records it, with the same options (GPUs, volumes, environment, command, limits). The old
container is replaced only once every host's checks pass. If that image is no longer on a
host (pruned), nothing is changed there and the command says which image to ship again.""")
@click.argument("name")
@host_pattern_option(required=True)
@click.option("--parallel", default=8, show_default=True, help="Hosts handled at once.")
@click.option("--timeout", default=10.0, show_default=True, help="SSH connect timeout, seconds.")
@click.option("--json", "as_json", is_flag=True,
              help="Per host: ok, error, hint, the image rolled back to, the container (also when Ctrl-C or "
                   "SIGTERM stops it).")
def rollback_cmd(name: str, pattern: str, parallel: int, timeout: float, as_json: bool) -> None:
    """Restart a container with the image it ran before, with the same options."""
    from deployer.runs import rollback
    from deployer.runs.start import Started

    if not name:
        raise UsageError("give the container's name")
    hosts = _ctx().select(pattern)
    with output.outcomes_on_stop(as_json, hosts, Started, rollback.to_json):
        outcomes = rollback.rollback(hosts, name, parallel=parallel, timeout=timeout,
                                     reporter=lambda h, m: output.info(f"{h}: {m}"))
    if as_json:
        output.emit_json(rollback.to_json(outcomes))
    for o in outcomes:
        if o.error is not None:
            output.info(f"error: {o.error}")
        elif o.value is None:
            output.info(f"{o.host.name}: {name} never ran here (skipped)")
        else:
            output.info(f"{o.host.name}: {name} runs {o.value.image_id[:19]} again ({o.value.container_id[:12]})")
    finish([o for o in outcomes if not o.ok])
