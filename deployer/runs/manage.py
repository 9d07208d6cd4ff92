"""`deploy stop` and `deploy rm`: act on a named deployer container wherever it exists."""
from __future__ import annotations

import difflib
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from deployer import history
from deployer.commands import gang as gang_cmd
from deployer.commands import run as cmd
from deployer.errors import CommandError, DeployError, UsageError
from deployer.fleet import Outcome, for_each_host
from deployer.inventory.host import Host
from deployer.transport.retry import connect_retrying
from deployer.transport.session import Session


@dataclass(frozen=True)
class Acted:
    """What happened to the container on one host (found False: no such container there)."""

    host: str
    name: str
    found: bool
    action: str = ""
    names: tuple[str, ...] = ()  # the deployer containers on the host, for "did you mean"
    job_hosts: tuple[str, ...] = ()  # the container is a rank of a multi-node job on these hosts


def unknown_name(name: str, names: Iterable[str], hosts: Iterable[str]) -> UsageError:
    """The exit-2 error for a name none of hosts has, with the closest of the names they do have."""
    names = sorted(set(names))
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else None
    listing = ", ".join(names) if names else "none"
    return UsageError(f"no deployer container named {name!r} on {', '.join(hosts)} (containers there: {listing})",
                      hint=hint)


def _act(host: Host, name: str, timeout: float, fn: Callable[[Session, Host, tuple[str, ...]], str],
         action: str) -> Acted:
    with connect_retrying(host, timeout=timeout) as session:
        found = cmd.parse_names(session.run(cmd.names_argv(host.docker, jobs=True)).stdout)
        names = tuple(found)
        if name not in names:
            return Acted(host.name, name, False, names=names)
        argv_text = ""
        try:
            argv_text = fn(session, host, found[name])
        except CommandError as exc:
            _record(session, host, history.record(action, command=exc.result.command, name=name,
                                                  result=f"failed: exit {exc.result.exited}"))
            raise
        _record(session, host, history.record(action, command=argv_text, name=name, result="ok"))
        return Acted(host.name, name, True, action, names, found[name])


def _record(session: Session, host: Host, rec: dict) -> None:
    try:
        history.append(session, host.staging_dir, rec)
    except DeployError:
        pass  # the container was stopped/removed; a failed history write must not say otherwise


def _require_found(name: str, outcomes: list[Outcome[Acted]]) -> list[Outcome[Acted]]:
    # With a host unreachable we cannot say the name is unknown; the per-host errors tell.
    if all(o.ok for o in outcomes) and not any(o.value and o.value.found for o in outcomes):
        raise unknown_name(name, [n for o in outcomes if o.value for n in o.value.names],
                           [o.host.name for o in outcomes if o.ok])
    return outcomes


def stop(hosts: Sequence[Host], name: str, *, timeout_s: int | None = None, remove: bool = False,
         parallel: int = 8, timeout: float = 10.0,
         resolve: Callable[[Sequence[str]], Sequence[Host]] | None = None) -> list[Outcome[Acted]]:
    """Stop (and with remove, delete) the container on every host that has it. A rank of a multi-node
    job stops the whole job: its other nodes (RESOLVE: host names -> Hosts) are stopped too."""

    def fn(session: Session, host: Host, job_hosts: tuple[str, ...]) -> str:
        if job_hosts:  # its watcher goes first, so a stop by hand is not taken for a rank's failure
            session.run(gang_cmd.end_watcher_argv(gang_cmd.gang_dir(host.staging_dir, name)), check=False, timeout=30)
        argv = cmd.stop_argv(host.docker, name, timeout_s)
        session.run(argv, timeout=(timeout_s or 10) + 60)
        done = shlex.join(argv)
        if remove:
            rm = cmd.rm_argv(host.docker, name)
            session.run(rm)
            done += " && " + shlex.join(rm)
        return done

    outcomes = _require_found(name, for_each_host(hosts, lambda h: _act(h, name, timeout, fn, "stop"), parallel))
    asked = {h.name for h in hosts}
    rest = sorted({j for o in outcomes if o.value for j in o.value.job_hosts} - asked)
    if rest and resolve is not None:
        outcomes += for_each_host(resolve(rest), lambda h: _act(h, name, timeout, fn, "stop"), parallel)
    return outcomes


def rm(hosts: Sequence[Host], name: str, *, force: bool = False, parallel: int = 8,
       timeout: float = 10.0) -> list[Outcome[Acted]]:
    """Remove the container on every host that has it (a running one only with force)."""

    def fn(session: Session, host: Host, _job: tuple[str, ...]) -> str:
        argv = cmd.rm_argv(host.docker, name, force=force)
        res = session.run(argv, check=False)
        if not res.ok:
            hint = "stop it first (deploy stop), or pass --force" if "running" in res.stderr.lower() else None
            raise CommandError(host.name, res, what=f"cannot remove {name}", hint=hint)
        return shlex.join(argv)

    return _require_found(name, for_each_host(hosts, lambda h: _act(h, name, timeout, fn, "rm"), parallel))
