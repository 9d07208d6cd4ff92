"""`deploy status`: deployer containers and GPU use on every host, asked in parallel.

A host that cannot be asked is reported with the reason (never dropped); one SSH round trip
per host, one connect attempt bounded by the timeout, so a cut host never stalls the table.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from deployer.commands import run as cmd
from deployer.errors import CommandError, DeployError, HostError
from deployer.fleet import for_each_host
from deployer.inventory.host import Host
from deployer.transport import connect

RECENT = timedelta(hours=24)
ACTIVE = ("created", "running", "restarting", "paused", "removing")


@dataclass(frozen=True)
class HostStatus:
    """What one host reported, or why it could not."""

    host: str
    reachable: bool
    error: str | None = None
    containers: tuple[cmd.ContainerStatus, ...] = ()
    gpus: tuple[Any, ...] = ()  # deployer.commands.facts.Gpu


def wanted(c: cmd.ContainerStatus, *, name: str | None, show_all: bool, now: datetime) -> bool:
    """Default: active containers and those that finished within RECENT; --all: every one."""
    if name is not None and c.name != name:
        return False
    if show_all or name is not None or c.state in ACTIVE:
        return True
    finished = cmd.parse_time(c.finished_at)
    return finished is None or now - finished <= RECENT


def ask(host: Host, *, timeout: float) -> HostStatus:
    """One host's containers and GPUs; unreachable/failed hosts become a HostStatus with the reason."""
    from deployer.commands.facts import parse_nvidia_smi

    try:
        with connect(host, timeout=timeout) as session:
            res = session.run(cmd.status_argv(host.docker), timeout=max(timeout, 30.0))
    except CommandError as exc:  # reachable, but docker did not answer
        tail = exc.result.stderr_tail(2).replace("\n", " ").strip() or f"exit {exc.result.exited}"
        return HostStatus(host.name, True, f"docker failed: {' '.join(tail.split())}")
    except HostError as exc:  # cannot connect, auth or host key refused, link dropped
        return HostStatus(host.name, False, _reason(exc))
    containers_text, gpu_text = cmd.split_status(res.stdout)
    try:
        containers = cmd.parse_inspect(containers_text)
    except ValueError as exc:
        return HostStatus(host.name, True, f"cannot parse docker inspect output: {exc}")
    return HostStatus(host.name, True, None, tuple(containers), tuple(parse_nvidia_smi(gpu_text)) if gpu_text else ())


def gather(hosts: Sequence[Host], *, parallel: int = 16, timeout: float = 5.0) -> list[HostStatus]:
    """Every host's status (in host order), unfiltered."""
    outcomes = for_each_host(hosts, lambda h: ask(h, timeout=timeout), parallel)
    return [o.value if o.value is not None else HostStatus(o.host.name, False, _reason(o.error))
            for o in outcomes]


def _reason(err: DeployError | None) -> str:
    if isinstance(err, HostError):
        return err.reason.splitlines()[0] + (f" ({err.hint})" if err.hint else "")
    return str(err) if err else "unknown error"


def select(statuses: Sequence[HostStatus], *, name: str | None = None, show_all: bool = False,
           now: datetime | None = None) -> list[HostStatus]:
    """Keep the containers `wanted` says (pure)."""
    now = now or datetime.now(timezone.utc)
    return [HostStatus(hs.host, hs.reachable, hs.error,
                       tuple(c for c in hs.containers if wanted(c, name=name, show_all=show_all, now=now)), hs.gpus)
            for hs in statuses]


def snapshot(hosts: Sequence[Host], *, name: str | None = None, show_all: bool = False, parallel: int = 16,
             timeout: float = 5.0) -> list[HostStatus]:
    """What `deploy status` shows: every host asked, then filtered. UsageError (exit 2) for a name
    that no host has, when every host answered (with one unanswered, its error tells instead)."""
    raw = gather(hosts, parallel=parallel, timeout=timeout)
    if name is not None and not any(c.name == name for hs in raw for c in hs.containers) and not failed(raw):
        from deployer.runs.manage import unknown_name

        raise unknown_name(name, [c.name for hs in raw for c in hs.containers], [h.name for h in hosts])
    return select(raw, name=name, show_all=show_all)


def failed(statuses: Sequence[HostStatus]) -> list[str]:
    """The hosts that could not be asked, or whose docker did not answer."""
    return [hs.host for hs in statuses if not hs.reachable or hs.error]


def assigned_gpus(c: cmd.ContainerStatus, host_gpus: Sequence[Any]) -> list[str] | None:
    """GPU indexes/uuids a container holds, with `all` spelled out when the host's GPUs are known."""
    if c.gpus is None:
        return None
    out: list[str] = []
    for g in c.gpus:
        out += [str(x.index) for x in host_gpus] if g == "all" and host_gpus else [g]
    return out


def to_json(statuses: Sequence[HostStatus]) -> list[dict[str, Any]]:
    """The issue's --json shape: one object per container, one per host that could not be asked."""
    rows: list[dict[str, Any]] = []
    for hs in statuses:
        if not hs.reachable or hs.error:
            rows.append({"host": hs.host, "reachable": hs.reachable, "error": hs.error, "name": None,
                         "image": None, "image_id": None, "state": None, "exit_code": None,
                         "oom_killed": None, "started_at": None, "finished_at": None, "gpus": None})
            continue
        for c in hs.containers:
            rows.append({"host": hs.host, "reachable": True, "error": None, "name": c.name,
                         "image": c.label("deployer.image") or c.image, "image_id": c.image_id,
                         "state": c.state, "exit_code": c.exit_code, "oom_killed": c.oom_killed,
                         "started_at": c.started_at, "finished_at": c.finished_at,
                         "gpus": assigned_gpus(c, hs.gpus)})
    return rows
