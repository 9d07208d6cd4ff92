"""`deploy run --nodes N` against the testbed: one job across gpu01 and gpu02 (real sshd and
dockerd in network namespaces on one LAN bridge), its gang watcher, status, logs, stop, history."""
from __future__ import annotations

import json
import os
import random
import time
from datetime import datetime
from typing import Any

import pytest
from cli_support import inventory_with
from test_run_support import BUSYBOX, SAMPLE, container, ensure_image, remove_containers, unique, wait_for

NODES = ("gpu01", "gpu02")
pytestmark = pytest.mark.integration


@pytest.fixture
def job(testbed: Any, run_images: None) -> Any:
    """A fresh job name and master port; its containers are removed from both nodes afterwards."""
    for host in NODES:
        for image in (BUSYBOX, SAMPLE):
            ensure_image(testbed, host, image)
    made: list[str] = []

    def new(prefix: str) -> tuple[str, str]:
        made.append(unique(prefix))
        # below Linux's ephemeral range (32768-60999): a host's own outgoing connections never hold it
        return made[-1], str(random.randint(20000, 32000))

    yield new
    remove_containers(testbed, made, NODES)


def started_at(c: Any) -> datetime:
    return datetime.fromisoformat(c.attrs["State"]["StartedAt"][:26].rstrip("Z") + "+00:00")


MEET = ('if [ "$NODE_RANK" = 0 ]; then '
        '  (echo "rank0 greets"; sleep 2) | nc -l -p "$MASTER_PORT" > /tmp/got; echo "rank 0 got: $(cat /tmp/got)"; '
        'else '
        '  for i in $(seq 1 100); do (echo "rank1 greets"; sleep 2) | nc "$MASTER_ADDR" "$MASTER_PORT" > /tmp/got && '
        '  [ -s /tmp/got ] && break; sleep 0.2; done; echo "rank 1 got: $(cat /tmp/got)"; '
        'fi; env | grep -E "^(PET_)?(MASTER_ADDR|MASTER_PORT|NNODES|NODE_RANK|NPROC_PER_NODE)=|^NCCL_SOCKET_IFNAME=" '
        '| sort')


def test_two_nodes_meet_at_master(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("meet")
    code, out, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                                "--master-port", port, "--gpus", "1", "--json", "--", "sh", "-c", MEET)
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["host"], r["rank"], r["nodes"]) for r in rows] == [("gpu01", 0, 2), ("gpu02", 1, 2)]
    c0, c1 = (wait_for(lambda h=h: (c := container(testbed, h, name)) and c.status == "exited" and c)
              for h in NODES)
    assert c0 and c1, "both ranks should finish"
    skew = abs((started_at(c0) - started_at(c1)).total_seconds())
    print(f"start skew: {skew:.3f} s")
    assert skew < 5
    log0, log1 = c0.logs().decode(), c1.logs().decode()
    assert "rank 0 got: rank1 greets" in log0, log0
    assert "rank 1 got: rank0 greets" in log1, log1
    master = testbed.hosts["gpu01"].address
    for log, rank in ((log0, 0), (log1, 1)):
        for prefix in ("", "PET_"):
            assert f"{prefix}MASTER_ADDR={master}\n" in log and f"{prefix}MASTER_PORT={port}\n" in log
            assert f"{prefix}NNODES=2\n" in log and f"{prefix}NODE_RANK={rank}\n" in log
            assert f"{prefix}NPROC_PER_NODE=1\n" in log
        assert "NCCL_SOCKET_IFNAME=" in log
    env0 = dict(e.split("=", 1) for e in c0.attrs["Config"]["Env"] if "=" in e)
    assert env0["DEPLOYER_NODE_IPS"] == f"{master}\n{testbed.hosts['gpu02'].address}"
    assert c0.attrs["HostConfig"]["NetworkMode"] == "host" and c0.attrs["HostConfig"]["IpcMode"] == "host"
    assert c0.labels["deployer.rank"] == "0" and c1.labels["deployer.job_hosts"] == "gpu01,gpu02"
    # the job is listed once in history, whichever nodes are read
    code, out, _ = deploy_cli("history", "--host", "gpu01,gpu02", "--name", name, "--json")
    runs = [r for r in json.loads(out) if r["action"] == "run"]
    assert len(runs) == 1 and runs[0]["nodes"] == ["gpu01", "gpu02"] and runs[0]["result"] == "ok"


def test_rank_failure_stops_the_others(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("gang")
    script = 'if [ "$NODE_RANK" = 1 ]; then sleep 2; exit 3; fi; exec sleep 600'
    code, _, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                              "--master-port", port, "--", "sh", "-c", script)
    assert code == 0, err
    c1 = wait_for(lambda: (c := container(testbed, "gpu02", name)) and c.status == "exited" and c, timeout=30)
    assert c1, "rank 1 should exit"
    failed_at = datetime.fromisoformat(c1.attrs["State"]["FinishedAt"][:26].rstrip("Z") + "+00:00")
    c0 = wait_for(lambda: (c := container(testbed, "gpu01", name)) and c.status == "exited" and c, timeout=20)
    assert c0, "rank 0 should be stopped by the gang watcher"
    stopped_at = datetime.fromisoformat(c0.attrs["State"]["FinishedAt"][:26].rstrip("Z") + "+00:00")
    latency = (stopped_at - failed_at).total_seconds()
    print(f"stop latency: {latency:.3f} s")
    assert latency < 10
    code, out, _ = deploy_cli("status", name, "--host", "gpu01,gpu02", "--json")
    codes = {h["host"]: [(c["rank"], c["exit_code"]) for c in h["containers"]] for h in json.loads(out)}
    assert codes["gpu02"] == [(1, 3)] and codes["gpu01"][0][0] == 0 and codes["gpu01"][0][1] not in (None, 0)
    code, out, _ = deploy_cli("status", name, "--host", "gpu01,gpu02")
    assert "failed: rank 1 exit 3" in out, out
    code, out, _ = deploy_cli("history", "--host", "gpu01", "--name", name, "--json")
    records = json.loads(out)
    stops = [r for r in records if r["action"] == "stop"]
    assert stops and "rank 1 (gpu02) exited 3" in stops[0]["reason"]
    ends = wait_for(lambda: [r for r in json.loads(deploy_cli("history", "--host", "gpu01", "--name", name, "--json")[1])
                             if r["action"] == "end"], timeout=15)
    assert ends and ends[0]["result"] == "failed: rank 1 (gpu02) exited 3"
    assert [(r["rank"], r["exit_code"]) for r in ends[0]["ranks"]][1] == (1, 3)


def test_preflight_failure_on_one_node_starts_nothing(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("pre")
    # gpu01 has GPUs 0 and 1, gpu02 has 0-3: device 3 exists on gpu02 only
    code, _, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                              "--master-port", port, "--gpus", "device=3", "--", "sleep", "60")
    assert code == 1
    assert "gpu01: preflight failed (rank 0)" in err and "device 3 not on this host" in err
    assert "nothing was started on any node because gpu01 failed" in err
    assert container(testbed, "gpu01", name) is None and container(testbed, "gpu02", name) is None


def test_stop_and_logs_cover_every_rank(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("stop")
    code, _, err = deploy_cli("run", "--host", "gpus", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                              "--master-port", port, "--", "sh", "-c", 'echo "hello from $NODE_RANK"; exec sleep 600')
    assert code == 0, err
    assert wait_for(lambda: all((c := container(testbed, h, name)) and c.status == "running" for h in NODES))
    time.sleep(1)
    code, out, err = deploy_cli("logs", name, "--host", "gpu01")
    assert code == 0, err
    assert "[0 gpu01] hello from 0" in out and "[1 gpu02] hello from 1" in out, out
    code, _, err = deploy_cli("stop", name, "--host", "gpu01", "--timeout", "1")
    assert code == 0, err
    assert "gpu01: stopped" in err and "gpu02: stopped" in err
    assert all(container(testbed, h, name).status == "exited" for h in NODES)


def test_too_few_hosts_is_a_usage_error(deploy_cli: Any, testbed: Any) -> None:
    code, _, err = deploy_cli("run", "--host", "gpu01", "--nodes", "2", "--image", BUSYBOX)
    assert code == 2 and "selects only 1 host(s)" in err


def test_rank_0_failure_stops_the_workers(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("r0")
    script = 'if [ "$NODE_RANK" = 0 ]; then sleep 2; exit 7; fi; exec sleep 600'
    code, _, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                              "--master-port", port, "--", "sh", "-c", script)
    assert code == 0, err
    c1 = wait_for(lambda: (c := container(testbed, "gpu02", name)) and c.status == "exited" and c, timeout=30)
    assert c1 and c1.attrs["State"]["ExitCode"] != 0
    assert container(testbed, "gpu01", name).attrs["State"]["ExitCode"] == 7


def test_ignore_policy_leaves_the_others_running(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("ign")
    script = 'if [ "$NODE_RANK" = 1 ]; then exit 3; fi; exec sleep 600'
    code, _, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                              "--master-port", port, "--on-node-failure", "ignore", "--", "sh", "-c", script)
    assert code == 0, err
    assert wait_for(lambda: (c := container(testbed, "gpu02", name)) and c.status == "exited")
    time.sleep(8)
    assert container(testbed, "gpu01", name).status == "running"
    code, out, _ = deploy_cli("status", name, "--host", "gpu01,gpu02")
    assert "failed: rank 1 exit 3, 1 rank(s) still running" in out, out
    code, _, err = deploy_cli("stop", name, "--host", "gpu02", "--timeout", "1")  # from the other node
    assert code == 0 and "gpu01: stopped" in err, err
    assert container(testbed, "gpu01", name).status == "exited"


def test_attach_follows_every_rank_and_exits_with_the_failing_code(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("att")
    script = 'echo "up on $NODE_RANK"; if [ "$NODE_RANK" = 1 ]; then sleep 1; exit 4; fi; exec sleep 600'
    began = time.monotonic()
    code, out, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                                "--master-port", port, "--attach", "--", "sh", "-c", script)
    assert code == 4, err
    assert "[0 gpu01] up on 0" in out and "[1 gpu02] up on 1" in out, out
    assert "the job ended with code 4" in err
    assert time.monotonic() - began < 60


def test_master_port_taken_on_rank_0_starts_nothing(deploy_cli: Any, testbed: Any, job: Any) -> None:
    holder, port = job("hold")
    name, _ = job("busy")
    code, _, err = deploy_cli("run", "--host", "gpu01", "--image", BUSYBOX, "--name", holder, "--network", "host",
                              "--", "nc", "-l", "-p", port)
    assert code == 0, err
    time.sleep(1)
    code, _, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                              "--master-port", port, "--", "sleep", "60")
    assert code == 1
    assert f"port {port} on rank 0 is not free" in err and "--master-port" in err
    assert container(testbed, "gpu01", name) is None and container(testbed, "gpu02", name) is None


def test_stop_by_hand_is_not_a_failure(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("hand")
    code, _, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                              "--master-port", port, "--", "sleep", "600")
    assert code == 0, err
    assert wait_for(lambda: all((c := container(testbed, h, name)) and c.status == "running" for h in NODES))
    code, _, err = deploy_cli("stop", name, "--host", "gpu02", "--timeout", "1")
    assert code == 0, err
    assert all(container(testbed, h, name).status == "exited" for h in NODES)
    time.sleep(2)
    code, out, _ = deploy_cli("history", "--host", "gpu01,gpu02", "--name", name, "--json")
    records = json.loads(out)
    assert not [r for r in records if r.get("reason")], records  # no gang stop recorded
    assert sorted(r["host"] for r in records if r["action"] == "stop") == ["gpu01", "gpu02"]


@pytest.mark.slow
def test_a_node_that_drops_off_the_network_stops_the_job(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("cut")
    code, _, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                              "--master-port", port, "--", "sleep", "600")
    assert code == 0, err
    assert wait_for(lambda: all((c := container(testbed, h, name)) and c.status == "running" for h in NODES))
    time.sleep(2)  # the worker's watcher has connected to the hub
    began = time.monotonic()
    testbed.cut("gpu02")
    try:
        # keepalive notices the dead link (~15 s), then 20 s of silence make the node lost
        gone = wait_for(lambda: all(container(testbed, h, name).status == "exited" for h in NODES), timeout=90)
        print(f"both ranks stopped {time.monotonic() - began:.1f} s after gpu02 dropped off")
        assert gone
    finally:
        testbed.heal("gpu02")
    code, out, _ = deploy_cli("history", "--host", "gpu01", "--name", name, "--json")
    assert any("rank 1 (gpu02) lost" in (r.get("reason") or "") for r in json.loads(out))


def test_gpus_held_by_another_run_fail_preflight(deploy_cli: Any, testbed: Any, job: Any) -> None:
    holder, _ = job("gpuhold")
    name, port = job("gpuwant")
    code, _, err = deploy_cli("run", "--host", "gpu01", "--image", BUSYBOX, "--name", holder, "--gpus", "device=0",
                              "--", "sleep", "600")
    assert code == 0, err
    code, _, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                              "--master-port", port, "--gpus", "1", "--", "sleep", "60")
    assert code == 1 and f"GPU 0 is held by {holder}" in err, err
    assert container(testbed, "gpu01", name) is None and container(testbed, "gpu02", name) is None


def test_internal_ip_sets_master_addr(deploy_cli: Any, testbed: Any, job: Any, tmp_path: Any) -> None:
    name, port = job("ip")
    # an address nobody has: the inventory's word wins, and the workers' TCP check finds it unreachable
    inv = inventory_with(testbed, tmp_path, "gpu01", deploy_internal_ip="10.213.0.99")
    code, _, err = deploy_cli("-i", inv, "run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX,
                              "--name", name, "--master-port", port, "--", "sleep", "60")
    assert code == 1 and "gpu02: preflight failed (rank 1)" in err and f"cannot reach rank 0 at 10.213.0.99:{port}" in err
    assert container(testbed, "gpu01", name) is None and container(testbed, "gpu02", name) is None


TORCH_SITE = os.environ.get("DEPLOYER_TORCH_SITE")  # a dir with torch for this machine's /usr/bin/python3
ALLREDUCE = """\
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"rank {rank} of {world}: all_reduce sum = {t.item():g}", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.skipif(not TORCH_SITE, reason="opt-in: DEPLOYER_TORCH_SITE=DIR, where "
                    "`pip install --target DIR torch==2.13.0` put torch for /usr/bin/python3 (3.11)")
def test_real_torchrun_gloo_all_reduce(deploy_cli: Any, testbed: Any, job: Any) -> None:
    """A bare `torchrun` (python -m torch.distributed.run, no rendezvous flags) forms a two-node job
    from deployer's environment alone. The testbed's hosts share this machine's filesystem, so the
    busybox container runs this machine's python3 and torch through read-only bind mounts."""
    name, port = job("torch")
    script = os.path.join(testbed.hosts["gpu01"].data_root, f"{name}.py")
    with open(script, "w") as fh:
        fh.write(ALLREDUCE)
    mounts = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro",
              "-v", f"{TORCH_SITE}:/opt/torch:ro", "-v", f"{script}:/job/allreduce.py:ro"]
    code, out, err = deploy_cli("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name,
                                "--master-port", port, *mounts, "-e", "PYTHONPATH=/opt/torch", "-e", "HOME=/tmp",
                                "--attach", "--", "/usr/bin/python3", "-m", "torch.distributed.run",
                                "/job/allreduce.py", timeout=300)
    assert code == 0, err + out
    assert "[0 gpu01] rank 0 of 2: all_reduce sum = 3" in out, out
    assert "[1 gpu02] rank 1 of 2: all_reduce sum = 3" in out, out


def test_replace_a_running_job(deploy_cli: Any, testbed: Any, job: Any) -> None:
    name, port = job("repl")
    args = ("run", "--host", "gpu01,gpu02", "--nodes", "2", "--image", BUSYBOX, "--name", name, "--master-port", port)
    code, _, err = deploy_cli(*args, "--", "sh", "-c", f"nc -l -p {port} & exec sleep 600")  # rank 0 holds the port
    assert code == 0, err
    assert wait_for(lambda: all((c := container(testbed, h, name)) and c.status == "running" for h in NODES))
    first = {h: container(testbed, h, name).id for h in NODES}
    code, _, err = deploy_cli(*args, "--", "sleep", "600")
    assert code == 1 and "already exists (running)" in err and "--replace" in err
    code, _, err = deploy_cli(*args, "--replace", "--", "sleep", "600")
    assert code == 0, err
    assert wait_for(lambda: all((c := container(testbed, h, name)) and c.status == "running" and c.id != first[h]
                                for h in NODES))
    time.sleep(3)  # the old job's watchers are gone: nothing stops the new one
    assert all(container(testbed, h, name).status == "running" for h in NODES)
