"""`deploy prune`: old image versions, old exited containers and unfinished ships' leftovers, off each host.

Holds the host's deploy lock while it removes (a ship in progress there is never pruned under),
so stand-ins and staging files it removes belong to no running ship. One host's failure never
hides the others'.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from deployer import history
from deployer import lock as locks
from deployer.commands import prune as cmd
from deployer.errors import DeployError, error_fields
from deployer.fleet import Outcome, for_each_host
from deployer.inventory.host import Host
from deployer.runs.pruning import Item, PrunePlan, plan
from deployer.transport.retry import connect_retrying
from deployer.transport.session import Session


@dataclass(frozen=True)
class Pruned:
    """What prune did (or, with dry_run, would do) on one host."""

    host: str
    plan: PrunePlan
    dry_run: bool
    failed: tuple[tuple[Item, str], ...] = ()  # removals Docker refused, with its reason

    @property
    def removed(self) -> list[Item]:
        bad = {id(item) for item, _ in self.failed}
        return [i for i in self.plan.remove if id(i) not in bad]

    @property
    def bytes_freed(self) -> int:
        return sum(i.bytes for i in self.removed)


def to_json(outcomes: Sequence[Outcome[Pruned]]) -> list[dict[str, Any]]:
    """`prune --json`: per host, what went (or would go), what stayed and why, bytes freed."""

    def item(i: Item) -> dict[str, Any]:
        return {"kind": i.kind, "name": i.name, "bytes": i.bytes, "reason": i.reason}

    out = []
    for o in outcomes:
        p = o.value
        out.append({"host": o.host.name, "ok": o.ok, **error_fields(o.error),
                    "dry_run": p.dry_run if p else None,
                    "removed": [item(i) for i in p.removed] if p else [],
                    "kept": [item(i) for i in p.plan.keep] if p else [],
                    "failed": [{**item(i), "error": why} for i, why in p.failed] if p else [],
                    "bytes_freed": p.bytes_freed if p else 0})
    return out


def _remove(session: Session, host: Host, items: Sequence[Item]) -> list[tuple[Item, str]]:
    failed = []
    for item in items:
        if item.kind == "container":
            argv = cmd.rm_containers_argv(host.docker, item.refs)
        elif item.kind == "staging":
            argv = cmd.remove_leftovers_argv(host.staging_dir, item.refs)
        else:
            argv = cmd.rmi_argv(host.docker, item.refs)
        res = session.run(argv, check=False, timeout=300)
        if not res.ok:
            failed.append((item, res.stderr_tail(1).strip() or f"exit {res.exited}"))
    return failed


def prune_host(host: Host, *, keep: int, older_than: timedelta, repos: Sequence[str] = (), dry_run: bool = False,
               timeout: float = 10.0) -> Pruned:
    """Decide and (unless dry_run) remove, under the host's deploy lock."""
    with connect_retrying(host, timeout=timeout) as session:
        # the ship's lock: a prune never removes what a ship is loading, and a killed prune's lock is
        # taken over by the next ship or prune like a killed ship's
        held = None if dry_run else locks.acquire(session, host.staging_dir, "deploy prune")
        try:
            res = session.run(cmd.inventory_argv(host.staging_dir, host.docker), timeout=300)
            holdings = cmd.parse_inventory(res.stdout, history.parse)
            decided = plan(holdings, keep=keep, older_than=older_than, now=datetime.now(timezone.utc),
                           staging=host.staging_dir, repos=repos)
            if dry_run:
                return Pruned(host.name, decided, True)
            done = Pruned(host.name, decided, False, tuple(_remove(session, host, decided.remove)))
            try:
                history.append(session, host.staging_dir, history.record(
                    "prune", result="ok" if not done.failed else f"{len(done.failed)} not removed",
                    removed=[f"{i.kind} {i.name}" for i in done.removed], bytes_freed=done.bytes_freed))
            except DeployError:
                pass  # the removals happened; a failed history write must not say otherwise
            return done
        finally:
            if held is not None:
                try:
                    held.release(session)
                except DeployError:
                    pass  # a lock that stays is taken over once this process is gone


def prune(hosts: Sequence[Host], *, keep: int = 3, older_than: timedelta = timedelta(days=7),
          repos: Sequence[str] = (), dry_run: bool = False, parallel: int = 8,
          timeout: float = 10.0) -> list[Outcome[Pruned]]:
    """prune_host on every host in parallel."""
    return for_each_host(hosts, lambda h: prune_host(h, keep=keep, older_than=older_than, repos=repos,
                                                      dry_run=dry_run, timeout=timeout), parallel)
