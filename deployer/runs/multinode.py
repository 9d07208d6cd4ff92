"""Start one job across N hosts (`deploy run --nodes N`, `run.nodes`): preflight every node, then
create every rank, start each node's gang watcher, and start all ranks at once; or nothing at all.

Phases, each in parallel over the nodes and each a barrier: (1) the single-host preflight plus
python3, /dev/infiniband, GPUs held by other runs, and rank 0's route to rank 1; (2) the master's
ports free on rank 0, and every worker's route and a short TCP check to them; (3) `docker create`;
(4) the watchers (runs/gangwatch.py); (5) `docker start` on all nodes together. A failure in (3)-(5)
removes what was made on every node, so a failed start leaves nothing behind.
"""
from __future__ import annotations

import json
import secrets
import shlex
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deployer import history
from deployer.commands import gang as gcmd
from deployer.commands import run as cmd
from deployer.errors import DeployError, PreflightError, SpecError
from deployer.fleet import Outcome, for_each_host
from deployer.inventory.host import Host
from deployer.runs import gang, jobcheck
from deployer.runs.spec import RunSpec
from deployer.runs.start import Prepared, Reporter, Started, labels_for
from deployer.runs.steps import launch_steps
from deployer.transport.retry import connect_retrying
from deployer.transport.session import Session

WATCHER = Path(__file__).with_name("gangwatch.py")


def _job_spec(nodes: Sequence[Host], prepared: Mapping[str, Prepared]) -> tuple[RunSpec, str]:
    """The job's shared settings (every node's spec must agree on them) and its container name."""
    first = prepared[nodes[0].name]
    for h in nodes[1:]:
        p = prepared[h.name]
        if p.name != first.name or (p.spec.nodes, p.spec.master_port, p.spec.on_node_failure) != (
                first.spec.nodes, first.spec.master_port, first.spec.on_node_failure):
            raise SpecError(f"the ranks of one job need one name and the same nodes, master_port and on_node_failure; "
                            f"{nodes[0].name} and {h.name} differ")
    return first.spec, first.name


def start_job(hosts: list[Host], prepared: Mapping[str, Prepared], *, parallel: int = 8,
              reporter: Reporter | None = None, timeout: float = 10.0) -> list[Outcome[Started]]:
    """Start the job on the first `nodes` hosts; per node its Started (with rank) or the error."""
    say = reporter or (lambda _h, _m: None)
    spec, name = _job_spec(hosts, prepared)
    assert spec.nodes is not None
    nodes = gang.ranks(hosts, spec.nodes)
    for extra in hosts[len(nodes):]:
        say(extra.name, f"not used: the job takes the first {len(nodes)} host(s) of the selection")
    index = {h.name: i for i, h in enumerate(nodes)}
    n, port, policy = len(nodes), gang.master_port(spec), gang.policy(spec)
    sessions: dict[str, Session] = {}
    lock = threading.Lock()
    route_to = nodes[1].internal_ip or nodes[1].address if n > 1 else None

    def phase1(host: Host) -> jobcheck.Checked:
        session = connect_retrying(host, timeout=timeout)
        with lock:
            sessions[host.name] = session
        say(host.name, f"preflight (rank {index[host.name]} of {n})")
        return jobcheck.check_node(session, host, prepared[host.name], index[host.name], route_to if index[host.name] == 0 else None)

    try:
        checked = for_each_host(nodes, phase1, parallel)
        if any(not o.ok for o in checked):
            return _failed(checked, PREFLIGHT_STOP)
        facts = {o.host.name: o.value for o in checked if o.value is not None}
        if len({c.identity for c in facts.values()}) > 1:
            seen = ", ".join(f"{h.name} has {facts[h.name].ready.image_id[:19]} (content {facts[h.name].identity})"
                             for h in nodes)
            why = f"the ranks would run different images under {spec.image}: {seen}"
            return [Outcome(h, error=PreflightError(h.name, why, hint=f"ship {spec.image} to every node again "
                                                    "(deploy ship --host ...) so that all have the same build"))
                    for h in nodes]
        r0 = facts[nodes[0].name].probe.route
        master = nodes[0].internal_ip or (r0.src if r0 and r0.src else None) or ("127.0.0.1" if n == 1 else "")
        if not master:
            err = PreflightError(nodes[0].name, "cannot tell rank 0's address toward the other nodes",
                                 hint=f"set {gang.INTERNAL_IP_VAR} for {nodes[0].name} in the inventory")
            return [Outcome(h, error=err) for h in nodes]
        def network(h: Host) -> gcmd.NetProbe:
            return jobcheck.check_network(sessions[h.name], h, index[h.name], master, port, n,
                                          replacing=jobcheck.replacing_job(facts[h.name].ready, port))

        # rank 0's ports first: the workers' connects must not reach a listener already there
        # (a one-shot one would even go away and make the port look free)
        nets = for_each_host(nodes[:1], network, 1)
        if nets[0].ok:
            nets += for_each_host(nodes[1:], network, parallel)
        else:
            nets += [Outcome(h) for h in nodes[1:]]
        if any(not o.ok for o in nets):
            return _failed(nets, PREFLIGHT_STOP)
        plan = _ranks(nodes, prepared, facts, {o.host.name: o.value for o in nets if o.value is not None}, master)
        try:
            return _launch(nodes, prepared, plan, sessions, facts, spec=spec, name=name, port=port, policy=policy,
                           parallel=parallel, say=say)
        except KeyboardInterrupt:
            _undo(nodes, sessions, name, parallel)  # Ctrl-C while the ranks start: none runs
            raise
    finally:
        for session in sessions.values():
            session.close()


def _ranks(nodes: Sequence[Host], prepared: Mapping[str, Prepared], facts: Mapping[str, jobcheck.Checked],
           nets: Mapping[str, gcmd.NetProbe], master: str) -> list[gang.Rank]:
    out = []
    for i, h in enumerate(nodes):
        net = nets[h.name]
        address = master if i == 0 else (h.internal_ip or net.route.src or h.address)
        ifname = net.addr_dev if i == 0 else net.route.dev
        if ifname == "lo":
            ifname = None
        p, c = prepared[h.name], facts[h.name]
        out.append(gang.Rank(h.name, i, address, ifname, gang.nproc(p.gpus, c.ready.gpu_count), c.probe.infiniband))
    return out


def _launch(nodes: Sequence[Host], prepared: Mapping[str, Prepared], plan: Sequence[gang.Rank],
            sessions: Mapping[str, Session], facts: Mapping[str, jobcheck.Checked], *, spec: RunSpec, name: str, port: int, policy: str, parallel: int,
            say: Reporter) -> list[Outcome[Started]]:
    now = datetime.now(timezone.utc)
    by_host = {r.host: r for r in plan}
    token = secrets.token_hex(4)
    watch = len(nodes) > 1  # with ignore too: the hub records every rank's exit code at the end

    def create(host: Host) -> tuple[str, tuple[str, ...]]:
        session, r, p, ready = sessions[host.name], by_host[host.name], prepared[host.name], facts[host.name].ready
        jspec = gang.job_spec(p.spec)
        env = gang.job_env(r, ranks_=plan, port=port, user_keys=[k for k, _ in p.env])
        labels = labels_for(jspec, name=name, ready=ready, now=now) + gang.job_labels(r, ranks_=plan, port=port,
                                                                                      policy_=policy)
        steps = launch_steps(host, jspec, name=name, volumes=p.volumes, env=p.env, labels=labels, token=token,
                             replacing=ready.existing is not None, missing_dirs=ready.missing_dirs,
                             create=True, extra=gang.docker_extra(r, env))
        session.run(gcmd.end_watcher_argv(gcmd.gang_dir(host.staging_dir, name)), timeout=30)
        try:
            for step in steps.before:
                session.run(step.argv, input=step.stdin, timeout=60)
            say(host.name, f"creating {name} (rank {r.rank})")
            res = session.run(steps.run.argv, timeout=120)
        finally:
            for step in steps.cleanup:
                session.run(step.argv, check=False, timeout=30)
        return res.stdout.strip().splitlines()[-1], steps.run.argv

    created = for_each_host(nodes, create, parallel)
    if any(not o.ok for o in created):
        _undo(nodes, sessions, name, parallel)
        return _failed(created, "nothing was started: creating the containers failed on {hosts}")
    ids = {o.host.name: o.value for o in created if o.value is not None}

    if watch:
        script = WATCHER.read_bytes()

        def watcher(host: Host) -> None:
            session, r = sessions[host.name], by_host[host.name]
            d = gcmd.gang_dir(host.staging_dir, name)
            conf = gang.watcher_config(r, name=name, image=spec.image, container_id=ids[host.name][0], ranks_=plan,
                                       port=port, docker=host.docker, policy_=policy,
                                       history_path=f"{host.staging_dir.rstrip('/')}/{history.HISTORY_FILE}")
            session.run(cmd.write_file_argv(f"{d}/gangwatch.py"), input=script, timeout=30)
            session.run(cmd.write_file_argv(f"{d}/config.json"), input=json.dumps(conf).encode(), timeout=30)
            session.run(gcmd.launch_watcher_argv(d), timeout=30)

        watched = for_each_host(nodes, watcher, parallel)
        if any(not o.ok for o in watched):
            _undo(nodes, sessions, name, parallel)
            return _failed(watched, "nothing was started: the gang watcher could not start on {hosts}")

    barrier = threading.Barrier(len(nodes), timeout=60)

    def begin(host: Host) -> str:
        barrier.wait()  # every node's session is open and idle: the starts go out together
        session = sessions[host.name]
        say(host.name, f"starting {name} (rank {by_host[host.name].rank})")
        session.run(cmd.start_argv(host.docker, name), timeout=120)
        return datetime.now(timezone.utc).isoformat()

    began = for_each_host(nodes, begin, parallel=len(nodes))
    if any(not o.ok for o in began):
        _undo(nodes, sessions, name, parallel)
        return _failed(began, f"every rank of {name} was removed again, since it did not start on {{hosts}}")
    _record(nodes, sessions, spec=spec, name=name, plan=plan, ids=ids, prepared=prepared, policy=policy)
    return [Outcome(h, value=Started(h.name, name, ids[h.name][0], prepared[h.name].spec.image,
                                     shlex.join(ids[h.name][1]), prepared[h.name].spec.gpus,
                                     rank=by_host[h.name].rank, nodes=len(nodes)))
            for h in nodes]


def _undo(nodes: Sequence[Host], sessions: Mapping[str, Session], name: str, parallel: int) -> None:
    """Remove the job's containers and watchers from every node (idempotent; errors are left to the
    caller's report, since the first failure is what the user needs to see)."""

    def undo(host: Host) -> None:
        session = sessions[host.name]
        session.run(gcmd.end_watcher_argv(gcmd.gang_dir(host.staging_dir, name)), check=False, timeout=30)
        session.run(cmd.rm_argv(host.docker, name, force=True), check=False, timeout=60)

    for_each_host(nodes, undo, parallel, undo=True)


PREFLIGHT_STOP = "preflight passed, but nothing was started on any node because {hosts} failed"


def _failed(outcomes: Sequence[Outcome[Any]], note: str) -> list[Outcome[Started]]:
    """Every node's outcome an error: its own, or NOTE naming the nodes that failed ({hosts})."""
    bad = ", ".join(o.host.name for o in outcomes if not o.ok)
    return [Outcome(o.host, error=o.error or PreflightError(o.host.name, note.format(hosts=bad))) for o in outcomes]


def _record(nodes: Sequence[Host], sessions: Mapping[str, Session], *, spec: RunSpec, name: str,
            plan: Sequence[gang.Rank], ids: Mapping[str, tuple[str, tuple[str, ...]]],
            prepared: Mapping[str, Prepared], policy: str) -> None:
    """One history record for the job, the same line (one id) on every node: `history` lists it once
    whichever nodes it reads."""
    first = nodes[0].name
    rec = history.record("run", image=spec.image, image_id=None, command=shlex.join(ids[first][1]), name=name,
                         gpus=spec.gpus, env_keys=[k for k, _ in prepared[first].env] or None,
                         nodes=[r.host for r in plan], ranks=[{"rank": r.rank, "host": r.host, "address": r.address,
                                                               "container": ids[r.host][0][:12]} for r in plan],
                         on_node_failure=policy, host=first, job_id=uuid.uuid4().hex,
                         playbook=dict(spec.labels).get("deployer.playbook"))

    def write(host: Host) -> None:
        try:
            history.append(sessions[host.name], host.staging_dir, rec)
        except DeployError:
            pass  # a history write must never turn a started job into a failure

    for_each_host(nodes, write, len(nodes))
