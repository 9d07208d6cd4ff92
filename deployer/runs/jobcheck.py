"""The preflight of a multi-node job's nodes (runs.multinode), in two phases run on every node.

Phase 1 (check_node): the single-host preflight plus what a job needs: python3, /dev/infiniband,
the image's content identity, GPUs not held by another deployer run, and on rank 0 the route to
rank 1 (its source address is MASTER_ADDR). Phase 2 (check_network): MASTER_PORT and the gang
watcher's port free on rank 0; from every worker the route to rank 0 and a short TCP connect to both.
Every problem of a node is listed at once; nothing here changes a host.
"""
from __future__ import annotations

from dataclasses import dataclass

from deployer.commands import gang as gcmd
from deployer.commands import run as cmd
from deployer.errors import PreflightError
from deployer.inventory.host import Host
from deployer.runs import gang
from deployer.runs.preflight import Ready, preflight
from deployer.runs.start import Prepared
from deployer.transport.session import Session


@dataclass(frozen=True)
class Checked:
    """A node after phase 1: the single-host preflight's answer and what the job needs to know."""

    ready: Ready
    probe: gcmd.NodeProbe
    identity: str  # the image's content identity (commands.gang.image_identity)


def _gpu_holders(session: Session, host: Host, p: Prepared) -> list[str]:
    """Problems: requested GPUs that a running deployer container already holds."""
    if p.gpus is None:
        return []
    from deployer.runs.gpuuse import indexes_of
    from deployer.runs.status import parse

    hs = parse(host.name, session.run(cmd.status_argv(host.docker), timeout=60).stdout)
    wanted = ["all"] if p.gpus.all else list(p.gpus.device_ids or [str(i) for i in range(p.gpus.count)])
    want = set(indexes_of(wanted, hs.gpus))
    return [f"GPU {g.index} is held by {', '.join(g.held_by)}; stop it first (deploy stop NAME) or pick other GPUs"
            for g in hs.gpu_use if g.index in want and g.held_by and p.name not in g.held_by]


def check_node(session: Session, host: Host, p: Prepared, rank: int, route_to: str | None) -> Checked:
    problems: list[str] = []
    try:
        ready = preflight(session, host, p.spec, name=p.name, gpus=p.gpus, volumes=p.volumes)
    except PreflightError as exc:  # listed with the job's own problems below
        problems += [line.strip().removeprefix("- ") for line in exc.reason.splitlines()[1:]] or [exc.reason]
        ready = None
    probe = gcmd.parse_node_probe(session.run(gcmd.node_probe_argv(route_to), timeout=30).stdout)
    if not probe.python:
        problems.append("python3 is not on this host: a multi-node job needs it for its port checks and its "
                        "gang watcher; install python3 (any 3.x)")
    if route_to and probe.route and probe.route.error:
        problems.append(f"no route from rank 0 to rank 1 ({route_to}): {probe.route.error}; "
                        f"set {gang.INTERNAL_IP_VAR} for these hosts")
    problems += _gpu_holders(session, host, p)
    identity = ""
    if ready is not None:
        identity = gcmd.image_identity(session.run(cmd.image_inspect_argv(host.docker, p.spec.image), timeout=30).stdout)
    if problems:
        lines = [x for item in problems for x in item.splitlines()]
        raise PreflightError(host.name, f"preflight failed (rank {rank}):\n  - " + "\n  - ".join(lines))
    assert ready is not None
    return Checked(ready, probe, identity)


def replacing_job(ready: Ready, port: int) -> bool:
    """Whether --replace will remove a running rank 0 of this job's previous run, with the same master
    port: its ports are busy now and free once it is gone, so preflight must not refuse them."""
    old = ready.existing
    return bool(old is not None and old.state == "running" and old.label("deployer.rank") == "0"
                and (old.label("deployer.master") or "").endswith(f":{port}"))


def check_network(session: Session, host: Host, rank: int, master: str, port: int, n: int, *,
                  replacing: bool = False) -> gcmd.NetProbe:
    """Phase 2 on one node: ports on rank 0 (unless REPLACING the job's previous run, which holds
    them), reachability of rank 0 from a worker."""
    ports = (port, gang.watcher_port(port))
    argv = gcmd.net_probe_argv(master, free=ports if rank == 0 else (), reach=ports if rank > 0 else ())
    net = gcmd.parse_net_probe(session.run(argv, timeout=60).stdout)
    problems = [f"port {p} on rank 0 is not free ({net.ports.get(p, 'no answer')}): "
                f"{'pick another --master-port' if p == port else 'the gang watcher needs MASTER_PORT+1'}"
                " (if a previous run of this job still runs there, deploy stop it first)"
                for p in ports if rank == 0 and n > 1 and not replacing and net.ports.get(p) != "free"]
    problems += [f"cannot reach rank 0 at {master}:{p} ({net.reach.get(p, 'no answer')}); "
                 "open the port between the nodes or set deploy_internal_ip"
                 for p in ports if rank > 0 and net.reach.get(p) not in ("open", "refused")]
    if rank > 0 and net.route.error:
        problems.append(f"no route to rank 0 at {master}: {net.route.error}")
    if problems:
        raise PreflightError(host.name, f"preflight failed (rank {rank}):\n  - " + "\n  - ".join(problems))
    return net
