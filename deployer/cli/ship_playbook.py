"""`deploy ship` with a playbook (wiring only): load, call deployer.oneshot, render one line per host."""
from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import click

from deployer.cli import output
from deployer.cli.app import finish
from deployer.cli.context import AppContext
from deployer.errors import DeployError, HostError, LocalError, SpecError
from deployer.fleet import carried
from deployer.oneshot import OneShotOptions, Prepared, deploy, prepare, preview
from deployer.oneshot.preview import host_json, host_lines
from deployer.oneshot.report import COLUMNS, HostReport, row
from deployer.ship.progress import PlainReporter, Reporter, RichReporter


class _LocalDocker:
    """The local Docker client, opened on first use (a bad playbook fails before Docker is asked)."""

    def __init__(self) -> None:
        self._client: Any = None

    def __call__(self) -> Any:
        if self._client is None:
            from deployer.local.client import docker_client

            self._client = docker_client()
        return self._client

    def exists(self, ref: str) -> bool:
        from deployer.oneshot.image import local_exists

        return bool(local_exists(self())(ref))


def ship_playbook(app: AppContext, playbook_path: str | None, pattern: str | None, options: OneShotOptions,
                  *, dry_run: bool, as_json: bool) -> None:
    """Render for every host, then build, ship and run (or, with dry_run, show the plan)."""
    from deployer.playbook import load_default

    playbook = load_default(playbook_path)
    pattern = pattern or playbook.hosts
    if not pattern:
        raise SpecError(f"{playbook.file} has no hosts: and no --host was given",
                        hint="pass --host PATTERN, or set hosts: in the playbook")
    hosts = app.select(pattern)
    local = _LocalDocker()
    prepared = prepare(playbook, hosts, replace(options, relays=app.relays(hosts)), exists=local.exists)
    output.info(f"{playbook.file}: {playbook.name}, rendered for {len(hosts)} host(s): "
                + ", ".join(h.name for h in hosts))
    if dry_run:
        _dry_run(prepared, local(), as_json)
        return
    with output.records_on_stop(as_json, _reports_carried):
        reports = deploy(prepared, say=output.info, on_line=_line_printer(), progress=_progress(), client=local())
    if as_json:
        output.emit_json([r.to_json() for r in reports])
    else:
        output.table(COLUMNS, [row(r) for r in reports])
    _errors([(r.host, r.error) for r in reports])


def _reports_carried(stop: BaseException) -> list[dict[str, Any]] | None:
    """Each host's record as the stopped (or failed) deploy left it (deployer.oneshot.pipeline carries them)."""
    said = carried(stop)
    if isinstance(said, list) and all(isinstance(r, HostReport) for r in said):
        return [r.to_json() for r in said]
    return None


def _line_printer() -> Callable[[str], None]:
    from deployer.cli.playbook import _line_printer as printer

    return printer()  # type: ignore[no-any-return]


def _progress() -> Callable[[], AbstractContextManager[Reporter]]:
    if sys.stderr.isatty():
        return RichReporter
    return lambda: nullcontext(PlainReporter())


def _dry_run(prepared: Prepared, client: Any, as_json: bool) -> None:
    view = preview(prepared, client=client)
    plans = {o.host.name: o for o in view.plans}
    for note in view.notes:
        output.info(f"note: {note}")
    if as_json:
        output.emit_json([host_json(prepared, view, h, plans.get(h.name)) for h in prepared.hosts])
    else:
        for host in prepared.hosts:
            click.echo("\n".join(host_lines(prepared, view, host, plans.get(host.name))))
    output.info("dry run: nothing was built, sent, locked or started")
    errors: list[tuple[str, DeployError | None]] = [(o.host.name, o.error) for o in view.plans]
    if view.planned_with is None and prepared.image.build is None:
        # nothing to build and nothing to ship: the real command would fail on every host
        errors.append(("local", LocalError(f"{view.ref} is not in the local Docker",
                                           hint="build or pull it first, or check the name with `docker images`")))
    _errors(errors)


def _errors(errors: list[tuple[str, DeployError | None]]) -> None:
    failed = [(host, e) for host, e in errors if e is not None]
    for host, error in failed:
        output.info(f"error: {error}" if isinstance(error, HostError) else f"error: {host}: {error}")
    finish(failed)
