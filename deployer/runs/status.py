"""`deploy status`: deployer containers and GPU use on every host, asked in parallel.

A host that cannot be asked is reported with the reason (never dropped); one SSH round trip
per host, one connect attempt bounded by the timeout, so a cut host never stalls the table.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from deployer.commands import run as cmd
from deployer.errors import CommandError, DeployError, HostError
from deployer.fleet import for_each_host
from deployer.inventory.host import Host
from deployer.runs import gang
from deployer.runs.gpuuse import Busy, GpuUse, gpu_use
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
    gpu_use: tuple[GpuUse, ...] = ()  # from every container, before `select` hides any
    docker_version: str | None = None
    image_store: str | None = None  # "overlay2", "containerd", ...
    disk_free_bytes: int | None = None  # at Docker's root dir


def wanted(c: cmd.ContainerStatus, *, name: str | None, show_all: bool, now: datetime) -> bool:
    """Default: active containers and those that finished within RECENT; --all: every one."""
    if name is not None and c.name != name:
        return False
    if show_all or name is not None or c.state in ACTIVE:
        return True
    finished = cmd.parse_time(c.finished_at)
    return finished is None or now - finished <= RECENT


def ask(host: Host, *, timeout: float, engine: bool = False) -> HostStatus:
    """One host's containers and GPUs; unreachable/failed hosts become a HostStatus with the reason."""
    try:
        with connect(host, timeout=timeout) as session:
            res = session.run(cmd.status_argv(host.docker, engine=engine), timeout=max(timeout, 30.0))
    except CommandError as exc:  # reachable, but docker did not answer
        tail = exc.result.stderr_tail(2).replace("\n", " ").strip() or f"exit {exc.result.exited}"
        return HostStatus(host.name, True, f"docker failed: {' '.join(tail.split())}")
    except HostError as exc:  # cannot connect, auth or host key refused, link dropped
        return HostStatus(host.name, False, _reason(exc))
    return parse(host.name, res.stdout)


def parse(host: str, stdout: str, busy: Busy | None = None) -> HostStatus:
    """A reachable host's HostStatus from status_argv's output (pure)."""
    from deployer.commands.facts import parse_df, parse_nvidia_smi
    from deployer.commands.sections import json_object
    from deployer.stores import image_store

    sections = cmd.status_sections(stdout)
    try:
        containers = tuple(cmd.parse_inspect(sections.get("containers", "")))
    except ValueError as exc:
        return HostStatus(host, True, f"cannot parse docker inspect output: {exc}")
    gpu_text = sections.get("gpus", "")
    gpus = tuple(parse_nvidia_smi(gpu_text)) if gpu_text else ()
    info = json_object(sections.get("engine", "")) or {}
    version = str(info.get("ServerVersion") or "") or None
    return HostStatus(host, True, None, containers, gpus, gpu_use(gpus, containers, busy),
                      version, image_store(info) if info else None, parse_df(sections.get("disk", "")))


def gather(hosts: Sequence[Host], *, parallel: int = 16, timeout: float = 5.0,
           engine: bool = False) -> list[HostStatus]:
    """Every host's status (in host order), unfiltered; the engine's version, store and free disk
    only with ENGINE."""
    outcomes = for_each_host(hosts, lambda h: ask(h, timeout=timeout, engine=engine), parallel)
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
    return [replace(hs, containers=tuple(c for c in hs.containers if wanted(c, name=name, show_all=show_all, now=now)))
            for hs in statuses]


def snapshot(hosts: Sequence[Host], *, name: str | None = None, show_all: bool = False, parallel: int = 16,
             timeout: float = 5.0, engine: bool = False) -> list[HostStatus]:
    """What `deploy status` shows: every host asked, then filtered. UsageError (exit 2) for a name
    that no host has, when every host answered (with one unanswered, its error tells instead)."""
    raw = gather(hosts, parallel=parallel, timeout=timeout, engine=engine)
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


def container_json(c: cmd.ContainerStatus, host_gpus: Sequence[Any]) -> dict[str, Any]:
    """One container in `status --json` (and `run --json`'s neighbours): what docker inspect says."""
    out = {"name": c.name, "image": c.label("deployer.image") or c.image, "image_id": c.image_id,
           "state": c.state, "exit_code": c.exit_code, "oom_killed": c.oom_killed,
           "started_at": c.started_at, "finished_at": c.finished_at, "gpus": assigned_gpus(c, host_gpus)}
    hosts = gang.job_hosts(c)
    if hosts:  # a rank of a multi-node job
        out.update(rank=gang.rank_of(c), nodes=gang.nodes_of(c), job_hosts=hosts)
    return out


def to_json(statuses: Sequence[HostStatus]) -> list[dict[str, Any]]:
    """`status --json`: one object per selected host, reachable or not (README: "JSON contract")."""
    out: list[dict[str, Any]] = []
    for hs in statuses:
        out.append({"host": hs.host, "reachable": hs.reachable, "error": hs.error,
                    "docker_version": hs.docker_version, "image_store": hs.image_store,
                    "disk_free_bytes": hs.disk_free_bytes,
                    "gpus": [g.to_json() for g in hs.gpu_use],
                    "containers": [container_json(c, hs.gpus) for c in hs.containers]})
    return out
