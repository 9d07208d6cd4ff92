"""`deploy run/stop/rm/history` against the testbed: real sshd, real dockerd, fake NVIDIA hook."""
from __future__ import annotations

import json
import os
from typing import Any

import pytest
from test_run_support import (
    BUSYBOX,
    SAMPLE,
    container,
    run_cli,
    unique,
)

from deployer import history
from deployer.inventory.host import Host
from deployer.transport import connect


def new(names: list[str], prefix: str) -> str:
    names.append(unique(prefix))
    return names[-1]


def test_device_list_reaches_container_and_status(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = new(names, "dev13")
    code, out, err = run_cli(deploy_cli, testbed, "--host", "gpu02", "--image", SAMPLE, "--name", name,
                                "--gpus", '"device=1,3"', "--attach", "--", "env")
    assert code == 0, err
    assert "NVIDIA_VISIBLE_DEVICES=1,3" in out
    c = container(testbed, "gpu02", name)
    assert c is not None and c.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["1", "3"]
    labels = c.labels
    assert labels["deployer.managed"] == "true" and labels["deployer.name"] == name
    assert labels["deployer.image"] == SAMPLE and labels["deployer.image_id"] == c.image.id
    assert labels["deployer.gpus"] == '"device=1,3"' and "@" in labels["deployer.user"]
    code, out, _ = deploy_cli("status", name, "--host", "gpu02", "--json")
    (host,) = json.loads(out)
    (row,) = host["containers"]
    assert row["gpus"] == ["1", "3"] and row["state"] == "exited" and row["exit_code"] == 0


def test_read_only_volume_is_read_only(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    data = os.path.join(testbed.hosts["gpu02"].data_root, unique("ro"))
    os.makedirs(data, exist_ok=True)
    name = new(names, "ro")
    code, out, err = run_cli(deploy_cli, testbed, "--host", "gpu02", "--image", BUSYBOX, "--name", name, "-v", f"{data}:/data:ro",
                                "--attach", "--", "sh", "-c", "touch /data/x && echo wrote || echo refused")
    assert code == 0, err
    assert "refused" in out and "Read-only file system" in out
    assert not os.path.exists(os.path.join(data, "x"))
    mount = container(testbed, "gpu02", name).attrs["Mounts"][0]
    assert (mount["Destination"], mount["RW"]) == ("/data", False)


def test_missing_volume_source_fails_preflight_unless_mkdirs(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    src = os.path.join(testbed.hosts["gpu01"].data_root, unique("mk"), "out")
    name = new(names, "mk")
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", BUSYBOX, "--name", name, "-v", f"{src}:/out")
    assert code == 1 and f"volume source {src} does not exist" in err and "--mkdirs" in err
    assert container(testbed, "gpu01", name) is None
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", BUSYBOX, "--name", name, "-v", f"{src}:/out",
                              "--mkdirs", "--attach", "--", "sh", "-c", "echo hi > /out/f")
    assert code == 0, err
    with open(os.path.join(src, "f")) as fh:
        assert fh.read() == "hi\n"


def test_preflight_failure_starts_nothing_anywhere(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = new(names, "dev7")
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu02", "--image", SAMPLE, "--name", name, "--gpus", "device=7")
    assert code == 1
    assert "gpu02: preflight failed" in err and "--gpus device 7 not on this host (GPUs: 0, 1, 2, 3)" in err
    assert container(testbed, "gpu02", name) is None
    # gpu01 has 2 GPUs, so device 3 fails there; gpu02 passes but must not start either.
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01,gpu02", "--image", SAMPLE, "--name", name,
                              "--gpus", '"device=1,3"')
    assert code == 1 and "gpu01: preflight failed" in err and "nothing was started" in err
    assert container(testbed, "gpu01", name) is None and container(testbed, "gpu02", name) is None


def test_gpus_on_gpu_less_host_fails_preflight(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = new(names, "cpu")
    code, _, err = run_cli(deploy_cli, testbed, "--host", "cpu01", "--image", SAMPLE, "--name", name, "--gpus", "all")
    assert code == 1
    assert "cpu01: preflight failed" in err and "no NVIDIA container runtime" in err
    assert container(testbed, "cpu01", name) is None


def test_image_missing_says_ship_it(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", "runs-it/absent:1", "--name", new(names, "abs"))
    assert code == 1 and "ship it first: deploy ship --host gpu01 --image runs-it/absent:1" in err


def test_attach_exits_with_container_code(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    code, out, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", SAMPLE, "--name", new(names, "fail"),
                                "--attach", "--", "fail", "5")
    assert code == 5
    assert "sample: failing with exit code 5" in out  # the container's stderr, streamed
    assert "exited with code 5" in err


def test_attach_needs_one_host(deploy_cli: Any, testbed: Any) -> None:
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01,gpu02", "--image", SAMPLE, "--attach")
    assert code == 2 and "--attach works with one host" in err


@pytest.mark.parametrize("args, message", [
    (("--gpus", "device=0,2"), "cannot set both Count and DeviceIDs"),
    (("--gpus", "two"), "invalid count (two)"),
    (("-v", "data:/data:rx"), "invalid mode"),
    (("-v", "rel/data:/data"), "host path 'rel/data' is relative"),
    (("--name", "bad name"), "not a valid container name"),
])
def test_bad_flags_exit_2(deploy_cli: Any, testbed: Any, args: tuple[str, ...], message: str) -> None:
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", SAMPLE, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_env_values_never_on_command_line_or_history(deploy_cli: Any, testbed: Any, names: list[str],
                                                     tmp_path: Any) -> None:
    env_file = tmp_path / "job.env"
    env_file.write_text("# secrets\nFROM_FILE=file-secret-1\nSHARED=from-file\n")
    name = new(names, "env")
    code, out, err = run_cli(deploy_cli, testbed, "--host", "gpu02", "--image", SAMPLE, "--name", name, "-e", "TOKEN=s3cret-42",
                                "-e", "SHARED=from-flag", "--env-file", str(env_file), "--attach", "--", "env")
    assert code == 0, err
    assert "TOKEN=s3cret-42" in out and "FROM_FILE=file-secret-1" in out and "SHARED=from-flag" in out
    staging = testbed.hosts["gpu02"].staging_dir
    assert not [f for f in os.listdir(staging) if f.startswith("run-env.")]  # removed after start
    code, out, _ = deploy_cli("history", "--host", "gpu02", "--name", name, "--json")
    (rec,) = json.loads(out)
    assert rec["action"] == "run" and rec["result"] == "ok" and sorted(rec["env_keys"]) == ["FROM_FILE", "SHARED", "TOKEN"]
    assert "--env-file" in rec["command"]
    with open(os.path.join(staging, "history.jsonl")) as fh:
        log = fh.read()
    assert "s3cret-42" not in log and "file-secret-1" not in log


def test_name_taken_then_replace(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = new(names, "rep")
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", SAMPLE, "--name", name, "--", "sleep")
    assert code == 0, err
    first = container(testbed, "gpu01", name).id
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", SAMPLE, "--name", name, "--", "sleep")
    assert code == 1 and f"a container named {name} already exists (running)" in err and "--replace" in err
    assert container(testbed, "gpu01", name).id == first
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", SAMPLE, "--name", name, "--replace", "--", "sleep")
    assert code == 0, err
    assert container(testbed, "gpu01", name).id != first


def test_stop_rm_and_history(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = new(names, "stop")
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu02", "--image", SAMPLE, "--name", name, "--", "sleep")
    assert code == 0, err
    code, _, err = deploy_cli("rm", name, "--host", "gpu02")
    assert code == 1 and "stop it first" in err  # running: rm without --force refuses
    code, _, err = deploy_cli("stop", name, "--host", "gpu01,gpu02", "--timeout", "2")
    assert code == 0, err
    assert f"gpu02: stopped {name}" in err and f"gpu01: no container {name} (skipped)" in err
    assert container(testbed, "gpu02", name).status == "exited"
    code, _, err = deploy_cli("stop", name + "x", "--host", "gpu02")
    assert code == 2 and f"did you mean {name}" in err
    code, _, err = deploy_cli("rm", name, "--host", "gpu02")
    assert code == 0 and container(testbed, "gpu02", name) is None
    # a ship record, appended the way `deploy ship` does, is listed together with run/stop/rm
    host = Host("gpu02", {"ansible_host": testbed.hosts["gpu02"].address, "ansible_user": "root",
                          "ansible_ssh_private_key_file": testbed.key, "deploy_known_hosts": testbed.known_hosts,
                          "deploy_staging_dir": testbed.hosts["gpu02"].staging_dir})
    with connect(host) as session:
        history.append(session, host.staging_dir, history.record("ship", image=SAMPLE, image_id="sha256:x",
                                                                 command="deploy ship", name=name))
    code, out, _ = deploy_cli("history", "--host", "gpu02", "--name", name, "--json")
    records = json.loads(out)  # newest first; the refused rm is recorded too
    assert [(r["action"], r["result"]) for r in records] == [
        ("ship", "ok"), ("rm", "ok"), ("stop", "ok"), ("rm", "failed: exit 1"), ("run", "ok")]
    assert all(r["host"] == "gpu02" and "@" in r["user"] for r in records)
    code, out, _ = deploy_cli("history", "--host", "gpus", "--limit", "2")
    assert code == 0 and out.splitlines()[0].split("\t")[:3] == ["TIME", "HOST", "ACTION"]
    assert len(out.splitlines()) == 3


def test_failed_start_reports_stderr_and_leaves_nothing(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = new(names, "bad")
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", BUSYBOX, "--name", name,
                           "--", "/no/such/binary")
    assert code == 1
    # a short label names the command; its whole argv (labels, volumes...) only with -v
    assert f"gpu01: docker could not start {name}: `docker run --detach …` exited 127" in err
    assert "stderr:" in err and "/no/such/binary" in err and f"--name {name}" not in err
    assert container(testbed, "gpu01", name) is None  # the half-created container is gone
    code, out, _ = deploy_cli("history", "--host", "gpu01", "--name", name, "--json")
    assert [(r["action"], r["result"]) for r in json.loads(out)] == [("run", "failed: exit 127")]
    code, _, err = deploy_cli("-v", "run", "--host", "gpu01", "--image", BUSYBOX, "--name", name,
                              "--", "/no/such/binary")
    assert code == 1 and f"command: docker run --detach --name {name}" in err
    assert container(testbed, "gpu01", name) is None
