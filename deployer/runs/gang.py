"""A multi-node job as values (pure): which hosts get which rank, each rank's environment, labels,
docker options and watcher config, and how a job's ranks add up to one state for `status`.

torchrun reads every option from PET_<OPTION> when its flag is not given, so a bare
`torchrun train.py` forms the job from the environment set here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deployer.commands.run import ContainerStatus
from deployer.errors import SpecError
from deployer.inventory.host import Host
from deployer.runs.gpus import GpuRequest
from deployer.runs.spec import RunSpec

DEFAULT_MASTER_PORT = 29500
STOP_GRACE_S = 5  # SIGTERM, then SIGKILL: the gang stop stays within the 10 s target
INTERNAL_IP_VAR = "deploy_internal_ip"
NODE_LABELS = ("deployer.rank", "deployer.nodes", "deployer.job_hosts", "deployer.master", "deployer.on_node_failure")


def ranks(hosts: Sequence[Host], nodes: int) -> list[Host]:
    """The job's hosts in rank order: the first NODES of the selection (inventory order)."""
    if len(hosts) < nodes:
        listing = ", ".join(h.name for h in hosts) or "none"
        raise SpecError(f"--nodes {nodes}: the host pattern selects only {len(hosts)} host(s) ({listing})",
                        hint="widen --host, or ask for fewer nodes")
    return list(hosts[:nodes])


def job_spec(spec: RunSpec) -> RunSpec:
    """A rank's spec: host networking and host IPC unless the user chose otherwise."""
    return dataclasses.replace(spec, network=spec.network or "host", ipc=spec.ipc or "host")


def master_port(spec: RunSpec) -> int:
    return spec.master_port or DEFAULT_MASTER_PORT


def watcher_port(port: int) -> int:
    """The port rank 0's gang watcher listens on: the one after MASTER_PORT."""
    return port + 1


def gang_port(spec: RunSpec) -> int:
    return watcher_port(master_port(spec))


def policy(spec: RunSpec) -> str:
    return spec.on_node_failure or "stop-all"


def nproc(gpus: GpuRequest | None, host_gpus: int | None) -> int:
    """Processes per node (torchrun's --nproc_per_node): the GPUs the container gets, 1 without GPUs."""
    if gpus is None:
        return 1
    if gpus.device_ids is not None:
        return max(1, len(gpus.device_ids))
    if gpus.count < 0:
        return max(1, host_gpus or 1)
    return max(1, gpus.count)


@dataclass(frozen=True)
class Rank:
    """One node of the job, as preflight found it."""

    host: str
    rank: int
    address: str  # the node's address on the shared network (DEPLOYER_NODE_IPS)
    ifname: str | None  # its interface toward rank 0 (NCCL_SOCKET_IFNAME)
    nproc: int
    infiniband: bool = False


def job_env(r: Rank, *, ranks_: Sequence[Rank], port: int, user_keys: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The rank's torchrun environment; a variable the user sets (-e, env file) is left to theirs."""
    master = ranks_[0].address
    values = {"MASTER_ADDR": master, "MASTER_PORT": str(port), "NNODES": str(len(ranks_)),
              "NODE_RANK": str(r.rank), "NPROC_PER_NODE": str(r.nproc)}
    env = [*values.items(), *((f"PET_{k}", v) for k, v in values.items()),
           ("DEPLOYER_NODE_IPS", "\n".join(x.address for x in ranks_))]
    if r.ifname and len(ranks_) > 1:  # NCCL and gloo (torch's CPU backend) each pick an interface otherwise
        env += [("NCCL_SOCKET_IFNAME", r.ifname), ("GLOO_SOCKET_IFNAME", r.ifname)]
    return [(k, v) for k, v in env if k not in set(user_keys)]


def docker_extra(r: Rank, env: Sequence[tuple[str, str]]) -> list[str]:
    """Docker options a rank adds to its spec's: the job's environment (no secrets, so on the command
    line, which also carries DEPLOYER_NODE_IPS's newlines that an env file cannot), and InfiniBand."""
    out: list[str] = []
    for key, val in env:
        out += ["--env", f"{key}={val}"]
    if r.infiniband:
        # RDMA needs the devices and unlimited locked memory (what NVIDIA's own containers pass)
        out += ["--device", "/dev/infiniband", "--ulimit", "memlock=-1:-1", "--cap-add", "IPC_LOCK"]
    return out


def job_labels(r: Rank, *, ranks_: Sequence[Rank], port: int, policy_: str) -> list[tuple[str, str]]:
    """Labels that let stop, status and logs find every rank of the job from any one of them."""
    return [("deployer.rank", str(r.rank)), ("deployer.nodes", str(len(ranks_))),
            ("deployer.job_hosts", ",".join(x.host for x in ranks_)),
            ("deployer.master", f"{ranks_[0].address}:{port}"), ("deployer.on_node_failure", policy_)]


def watcher_config(r: Rank, *, name: str, image: str, container_id: str, ranks_: Sequence[Rank], port: int,
                   docker: Sequence[str], history_path: str, policy_: str) -> dict[str, Any]:
    """What gangwatch.py reads on the node (config.json)."""
    return {"name": name, "image": image, "rank": r.rank, "container_id": container_id,
            "hosts": [x.host for x in ranks_], "master_addr": ranks_[0].address, "gang_port": watcher_port(port),
            "docker": list(docker), "stop_grace": STOP_GRACE_S, "policy": policy_, "history": history_path}


# -- reading a job back from its containers (status, stop, logs) -----------------------------

def job_hosts(c: ContainerStatus) -> list[str]:
    """The hosts of the job C is a rank of (empty for a single-host container)."""
    return [h for h in (c.label("deployer.job_hosts") or "").split(",") if h]


def rank_of(c: ContainerStatus) -> int | None:
    return _int(c.label("deployer.rank"))


def nodes_of(c: ContainerStatus) -> int | None:
    return _int(c.label("deployer.nodes"))


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


@dataclass(frozen=True)
class JobRank:
    """One rank as status sees it: its host and container (None: not found there)."""

    rank: int
    host: str
    container: ContainerStatus | None


def job_state(members: Sequence[JobRank]) -> str:
    """One word for the job: running, starting, succeeded, failed (rank R exit C), partly running..."""
    states = [m.container.state if m.container else "missing" for m in members]
    if all(s == "running" for s in states):
        return "running"
    first = first_failure(members)
    if first is not None and first.container is not None:
        still = sum(s == "running" for s in states)
        cause = f"failed: rank {first.rank} exit {first.container.exit_code}"
        return cause + (f", {still} rank(s) still running" if still else "")
    if all(s == "exited" for s in states):
        return "succeeded"
    if all(s == "created" for s in states):
        return "created"
    return "partly running: " + ", ".join(f"rank {m.rank} {s}" for m, s in zip(members, states))


def first_failure(members: Sequence[JobRank]) -> JobRank | None:
    """The rank that finished with an error first: the cause (the others were stopped after it)."""
    failed = [m for m in members if m.container and m.container.exit_code not in (None, 0)]
    return min(failed, key=lambda m: (m.container.finished_at or "" if m.container else "", m.rank)) \
        if failed else None


def job_exit_code(members: Sequence[JobRank]) -> int:
    """The job's exit code: that of the rank that failed first, else 0."""
    first = first_failure(members)
    return int(first.container.exit_code or 0) if first is not None and first.container else 0


def jobs(found: Mapping[str, Sequence[ContainerStatus]]) -> dict[str, list[JobRank]]:
    """Multi-node jobs among FOUND (host -> its containers): name -> ranks in rank order."""
    out: dict[str, dict[int, JobRank]] = {}
    hosts_of: dict[str, list[str]] = {}
    for host, containers in found.items():
        for c in containers:
            rank = rank_of(c)
            if rank is None or not job_hosts(c):
                continue
            out.setdefault(c.name, {})[rank] = JobRank(rank, host, c)
            hosts_of.setdefault(c.name, job_hosts(c))
    result: dict[str, list[JobRank]] = {}
    for name, by_rank in out.items():
        hosts = hosts_of[name]
        result[name] = [by_rank.get(i) or JobRank(i, hosts[i] if i < len(hosts) else "?", None)
                        for i in range(max(len(hosts), max(by_rank) + 1))]
    return result
