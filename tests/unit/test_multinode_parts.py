"""Multi-node jobs, the pure parts: rank order, each rank's environment, docker options, labels,
the probes' parsers, the job's state for status, history listing a job once, log prefixes."""
from __future__ import annotations

import json
import threading

import pytest

from deployer.commands import gang as gcmd
from deployer.commands.run import ContainerStatus, names_argv, parse_names, run_argv, start_argv
from deployer.errors import SpecError
from deployer.inventory.host import Host
from deployer.runs import gang
from deployer.runs.gpus import parse_gpus
from deployer.runs.joblogs import Prefixer
from deployer.runs.journal import merge
from deployer.runs.spec import RunSpec, from_flags, validate
from deployer.runs.steps import launch_steps

H = [Host("gpu01", {"ansible_host": "10.0.0.1"}), Host("gpu02", {"ansible_host": "10.0.0.2"}),
     Host("gpu03", {"ansible_host": "10.0.0.3", "deploy_internal_ip": "192.168.1.3"})]
R = [gang.Rank("gpu01", 0, "10.0.0.1", "eth0", 4), gang.Rank("gpu02", 1, "10.0.0.2", "ens5", 2, infiniband=True)]


def test_ranks_are_the_first_n_hosts_in_order() -> None:
    assert [h.name for h in gang.ranks(H, 2)] == ["gpu01", "gpu02"]
    with pytest.raises(SpecError, match=r"selects only 3 host\(s\) \(gpu01, gpu02, gpu03\)"):
        gang.ranks(H, 4)


def test_internal_ip_from_the_inventory() -> None:
    assert H[2].internal_ip == "192.168.1.3" and H[0].internal_ip is None


def test_nproc_is_the_gpus_given() -> None:
    assert gang.nproc(None, 8) == 1
    assert gang.nproc(parse_gpus("all"), 8) == 8
    assert gang.nproc(parse_gpus("2"), 8) == 2
    assert gang.nproc(parse_gpus('"device=1,3,5"'), 8) == 3


def test_job_env_for_torchrun() -> None:
    env = dict(gang.job_env(R[1], ranks_=R, port=29500))
    assert env == {
        "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "NNODES": "2", "NODE_RANK": "1", "NPROC_PER_NODE": "2",
        "PET_MASTER_ADDR": "10.0.0.1", "PET_MASTER_PORT": "29500", "PET_NNODES": "2", "PET_NODE_RANK": "1",
        "PET_NPROC_PER_NODE": "2", "DEPLOYER_NODE_IPS": "10.0.0.1\n10.0.0.2", "NCCL_SOCKET_IFNAME": "ens5",
        "GLOO_SOCKET_IFNAME": "ens5"}


def test_user_env_wins() -> None:
    env = dict(gang.job_env(R[0], ranks_=R, port=29500, user_keys=["NCCL_SOCKET_IFNAME", "NPROC_PER_NODE"]))
    assert "NCCL_SOCKET_IFNAME" not in env and "NPROC_PER_NODE" not in env and env["PET_NPROC_PER_NODE"] == "4"


def test_docker_options_env_on_the_line_and_infiniband() -> None:
    assert gang.docker_extra(R[0], [("A", "1"), ("IPS", "x\ny")]) == ["--env", "A=1", "--env", "IPS=x\ny"]
    assert gang.docker_extra(R[1], [])[-6:] == ["--device", "/dev/infiniband", "--ulimit", "memlock=-1:-1",
                                                "--cap-add", "IPC_LOCK"]


def test_job_spec_defaults_to_host_network_and_ipc_unless_chosen() -> None:
    assert (gang.job_spec(RunSpec("img")).network, gang.job_spec(RunSpec("img")).ipc) == ("host", "host")
    chosen = gang.job_spec(RunSpec("img", network="fabric", ipc="private"))
    assert (chosen.network, chosen.ipc) == ("fabric", "private")


def test_rank_is_created_then_started_with_its_labels() -> None:
    spec = gang.job_spec(RunSpec("img", command=("torchrun", "train.py")))
    labels = gang.job_labels(R[1], ranks_=R, port=29500, policy_="stop-all")
    steps = launch_steps(H[1], spec, name="ddp", volumes=(), env=[], labels=labels, token="t", create=True,
                         extra=["--env", "NODE_RANK=1"])
    assert steps.run.label == "docker create ddp"
    assert steps.run.argv == (
        "docker", "create", "--name", "ddp", "--label", "deployer.rank=1", "--label", "deployer.nodes=2",
        "--label", "deployer.job_hosts=gpu01,gpu02", "--label", "deployer.master=10.0.0.1:29500",
        "--label", "deployer.on_node_failure=stop-all", "--network", "host", "--ipc", "host",
        "--env", "NODE_RANK=1", "img", "torchrun", "train.py")
    assert start_argv(("docker",), "ddp") == ("docker", "start", "--", "ddp")
    assert run_argv(("docker",), RunSpec("img"), name="n", labels=[], volumes=[])[:3] == ("docker", "run", "--detach")


def test_watcher_config() -> None:
    conf = gang.watcher_config(R[1], name="ddp", image="img", container_id="c1", ranks_=R, port=29500,
                               docker=("sudo", "docker"), history_path="/st/history.jsonl", policy_="stop-all")
    assert conf["gang_port"] == 29501 and conf["master_addr"] == "10.0.0.1" and conf["hosts"] == ["gpu01", "gpu02"]
    assert conf["docker"] == ["sudo", "docker"] and conf["rank"] == 1 and conf["stop_grace"] == gang.STOP_GRACE_S


@pytest.mark.parametrize("kw, message", [
    ({"nodes": 0}, "must be a whole number"),
    ({"nodes": 2, "master_port": 65535}, "from 1 to 65534"),
    ({"nodes": 2, "on_node_failure": "panic"}, "unknown policy"),
    ({"master_port": 1234}, "apply to a multi-node job only"),
    ({"nodes": 2, "place": "any", "gpus": "1"}, "--nodes and --any"),
    ({"network": "bad net"}, "not a network name"),
])
def test_spec_checks(kw: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        validate(RunSpec("img", **kw))


def test_flags_make_a_job_spec() -> None:
    spec = from_flags("img", nodes=2, master_port=29600, on_node_failure="ignore")
    assert (spec.nodes, gang.master_port(spec), gang.gang_port(spec), gang.policy(spec)) == (2, 29600, 29601, "ignore")
    assert (gang.master_port(RunSpec("img", nodes=2)), gang.policy(RunSpec("img", nodes=2))) == (29500, "stop-all")


def test_parse_route() -> None:
    out = "10.0.0.2 dev eth0 src 10.0.0.1 uid 0 \\    cache "
    assert gcmd.parse_route(out) == gcmd.Route("eth0", "10.0.0.1")
    assert gcmd.parse_route("RTNETLINK answers: Network is unreachable").error == "RTNETLINK answers: Network is unreachable"


def test_parse_probes() -> None:
    m = "--- deployer:"
    node = gcmd.parse_node_probe(f"{m}python\n/usr/bin/python3\n{m}infiniband\nuverbs0\n{m}route\n"
                                 "10.0.0.2 dev ib0 src 10.1.0.1 uid 0\n")
    assert node == gcmd.NodeProbe(True, True, gcmd.Route("ib0", "10.1.0.1"))
    assert gcmd.parse_node_probe(f"{m}python\n{m}infiniband\n{m}route\n") == gcmd.NodeProbe(False, False, None)
    net = gcmd.parse_net_probe(f"{m}route\nlocal 10.0.0.1 dev lo src 10.0.0.1\n{m}addr\n"
                               "2: eth0    inet 10.0.0.1/24 brd 10.0.0.255 scope global eth0\n"
                               f"{m}ports\n29500 free\n29501 busy Address already in use\n{m}reach\n")
    assert net.addr_dev == "eth0" and net.ports == {29500: "free", 29501: "busy: Address already in use"}
    reach = gcmd.parse_net_probe(f"{m}route\n{m}reach\n29500 refused\n29501 unreachable timed out\n").reach
    assert reach == {29500: "refused", 29501: "unreachable: timed out"}


def test_probe_argv_carry_their_values_as_arguments() -> None:
    argv = gcmd.net_probe_argv("10.0.0.1", reach=(29500, 29501), timeout=3)
    assert argv[:2] == ("sh", "-c") and argv[3:7] == ("sh", "10.0.0.1", "29500 29501", "") and argv[7] == "3"
    assert gcmd.node_probe_argv(None)[-1] == "" and gcmd.node_probe_argv("gpu02")[-1] == "gpu02"


def test_image_identity_is_the_same_on_both_stores() -> None:
    classic = [{"Id": "sha256:config", "Created": "2026-12-01T00:00:00Z", "Architecture": "amd64",
                "RootFS": {"Layers": ["sha256:a", "sha256:b"]}}]
    containerd = [{**classic[0], "Id": "sha256:manifest"}]
    other = [{**classic[0], "RootFS": {"Layers": ["sha256:a"]}}]
    same = gcmd.image_identity(json.dumps(classic))
    assert same == gcmd.image_identity(json.dumps(containerd)) != gcmd.image_identity(json.dumps(other))


def test_watcher_commands() -> None:
    assert gcmd.gang_dir("/st/", "ddp") == "/st/gang/ddp"
    assert gcmd.launch_watcher_argv("/st/gang/ddp")[-1] == "/st/gang/ddp"
    assert gcmd.end_watcher_argv("/st/gang/ddp")[-1] == "/st/gang/ddp"


def test_names_with_jobs() -> None:
    assert names_argv(("docker",), jobs=True)[-1] == '{{.Names}}\t{{.Label "deployer.job_hosts"}}'
    assert parse_names("ddp\tgpu01,gpu02\nsolo\t\n") == {"ddp": ("gpu01", "gpu02"), "solo": ()}


def _c(state: str, code: int | None, rank: int, finished: str | None = None) -> ContainerStatus:
    return ContainerStatus("id", "ddp", "img", "sha", state, code, False, None, finished,
                           labels=(("deployer.job_hosts", "gpu01,gpu02"), ("deployer.rank", str(rank))))


def test_job_state_names_the_rank_that_failed_first() -> None:
    ranks = gang.jobs({"gpu01": [_c("exited", 137, 0, "2026-12-01T10:00:09Z")],
                       "gpu02": [_c("exited", 3, 1, "2026-12-01T10:00:03Z")]})["ddp"]
    assert [(m.rank, m.host) for m in ranks] == [(0, "gpu01"), (1, "gpu02")]
    assert gang.job_state(ranks) == "failed: rank 1 exit 3"
    running = gang.jobs({"gpu01": [_c("running", None, 0)], "gpu02": [_c("running", None, 1)]})["ddp"]
    assert gang.job_state(running) == "running"
    done = gang.jobs({"gpu01": [_c("exited", 0, 0)], "gpu02": [_c("exited", 0, 1)]})["ddp"]
    assert gang.job_state(done) == "succeeded"
    half = gang.jobs({"gpu01": [_c("running", None, 0)]})["ddp"]
    assert half[1].container is None and gang.job_state(half) == "partly running: rank 0 running, rank 1 missing"


def test_history_lists_a_job_once() -> None:
    job = {"id": "j1", "time": "2026-12-01T10:00:00+00:00", "action": "run", "name": "ddp", "nodes": ["a", "b"],
           "host": "a"}
    solo = {"id": "s1", "time": "2026-12-01T09:00:00+00:00", "action": "run", "name": "x"}
    rows = merge({"a": [job, solo], "b": [job, {**solo, "id": "s2"}]})
    assert [(r["id"], r["host"]) for r in rows] == [("j1", "a"), ("s1", "a"), ("s2", "b")]


def test_log_lines_get_their_rank_prefix_whole() -> None:
    out: list[bytes] = []
    p = Prefixer("[1 gpu02] ", out.append, threading.Lock())
    p.feed(b"hel")
    p.feed(b"lo\nwor")
    p.feed(b"ld\n")
    p.feed(b"tail")
    p.flush()
    assert b"".join(out) == b"[1 gpu02] hello\n[1 gpu02] world\n[1 gpu02] tail\n"


def test_rollback_refuses_a_job_and_keeps_a_runs_network() -> None:
    import shlex

    from deployer.commands.rerun import parse_run_argv
    from deployer.runs.rollback import target

    job = {"action": "run", "name": "ddp", "result": "ok", "image_id": None, "nodes": ["a", "b"], "command": "x"}
    assert "multi-node job" in str(target([job], "ddp", None))
    argv = run_argv(("docker",), RunSpec("img", network="fabric"), name="n", labels=[], volumes=[])
    assert parse_run_argv(shlex.split(shlex.join(argv)))["network"] == "fabric"
