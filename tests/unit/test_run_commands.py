"""Exact argv of the run/observe builders, and parsing of docker's output."""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone

from deployer.commands.run import (
    ContainerStatus,
    container_inspect_argv,
    gpus_of,
    image_inspect_argv,
    logs_argv,
    missing_paths_argv,
    parse_image_inspect,
    parse_inspect,
    parse_time,
    rm_argv,
    run_argv,
    status_argv,
    status_sections,
    stop_argv,
    wait_argv,
    write_file_argv,
)
from deployer.runs.spec import RunSpec, parse_volume

D = ("docker",)


def test_run_argv_full() -> None:
    spec = RunSpec(
        "trainer:v3", gpus='"device=1,3"', volumes=("/data:/data:ro",), env=(("TOKEN", "s3cret"),),
        shm_size="8g", ipc="host", memory="32g", restart="on-failure:3", workdir="/work",
        command=("python", "train.py", "--lr", "3e-4"),
    )
    argv = run_argv(("sudo", "docker"), spec, name="train-1",
                    labels=[("deployer.managed", "true"), ("deployer.name", "train-1")],
                    volumes=[parse_volume(v) for v in spec.volumes], env_file="/st/run-env.train-1.ab")
    assert argv == (
        "sudo", "docker", "run", "--detach", "--name", "train-1",
        "--label", "deployer.managed=true", "--label", "deployer.name=train-1",
        "--gpus", '"device=1,3"', "--volume", "/data:/data:ro", "--env-file", "/st/run-env.train-1.ab",
        "--shm-size", "8g", "--ipc", "host", "--memory", "32g", "--restart", "on-failure:3",
        "--workdir", "/work", "trainer:v3", "python", "train.py", "--lr", "3e-4",
    )
    assert "s3cret" not in " ".join(argv)  # env values travel only in the env file


def test_run_argv_minimal() -> None:
    assert run_argv(D, RunSpec("img"), name="n1", labels=[], volumes=[]) == (
        "docker", "run", "--detach", "--name", "n1", "img")


def test_small_builders() -> None:
    assert image_inspect_argv(D, "img:1") == ("docker", "image", "inspect", "--", "img:1")
    assert container_inspect_argv(D, "n") == ("docker", "container", "inspect", "--", "n")
    assert stop_argv(D, "n") == ("docker", "stop", "--", "n")
    assert stop_argv(D, "n", 5) == ("docker", "stop", "-t", "5", "--", "n")
    assert rm_argv(D, "n") == ("docker", "rm", "--", "n")
    assert rm_argv(D, "n", force=True) == ("docker", "rm", "--force", "--", "n")
    assert wait_argv(D, "n") == ("docker", "wait", "--", "n")
    assert write_file_argv("/s/f") == ("sh", "-c", 'umask 077 && mkdir -p -- "${1%/*}" && cat > "$1"', "sh", "/s/f")
    assert missing_paths_argv(["/a", "/b c"])[-2:] == ("/a", "/b c")


def test_logs_argv_merges_stderr() -> None:
    assert logs_argv(D, "n") == ("sh", "-c", 'exec "$@" 2>&1', "sh", "docker", "logs", "--", "n")
    assert logs_argv(D, "n", follow=True, tail="10", since="2024-01-01T00:00:00.5Z", timestamps=True) == (
        "sh", "-c", 'exec "$@" 2>&1', "sh", "docker", "logs", "--follow", "--timestamps",
        "--tail", "10", "--since", "2024-01-01T00:00:00.5Z", "--", "n")


def test_status_argv_passes_docker_as_args() -> None:
    argv = status_argv(("sudo", "docker"))
    assert argv[:2] == ("sh", "-c") and argv[3:] == ("sh", "sudo", "docker")
    assert "label=deployer.managed=true" in argv[2]
    assert " info " not in argv[2] and " info " in status_argv(("docker",), engine=True)[2]  # --json only
    for script in (argv[2], status_argv(("docker",), engine=True)[2]):
        subprocess.run(["sh", "-n", "-c", script], check=True)


def test_status_sections() -> None:
    out = "--- deployer:containers\n[\n{}\n]\n--- deployer:gpus\n0, H100, GPU-1, 81559, 0, 0\n"
    assert status_sections(out) == {"containers": "[\n{}\n]", "gpus": "0, H100, GPU-1, 81559, 0, 0"}
    assert status_sections("--- deployer:containers\n[]\n--- deployer:gpus\n") == {"containers": "[]", "gpus": ""}


def _inspect(name: str, status: str, exit_code: int = 0, oom: bool = False, requests: list | None = None) -> dict:
    # The shape dockerd 20.10 returns (trimmed to the keys deployer reads, plus a few it ignores).
    return {
        "Id": "4f1c" + "0" * 60, "Created": "2026-11-29T15:30:11.9Z", "Name": f"/{name}",
        "Image": "sha256:" + "b" * 64, "RestartCount": 2,
        "State": {"Status": status, "Running": status == "running", "Paused": False, "Restarting": False,
                  "OOMKilled": oom, "Dead": False, "Pid": 0, "ExitCode": exit_code, "Error": "",
                  "StartedAt": "2026-11-29T15:30:12.123456789Z",
                  "FinishedAt": "2026-11-29T15:31:00.5Z" if status == "exited" else "0001-01-01T00:00:00Z"},
        "HostConfig": {"DeviceRequests": requests},
        "Config": {"Image": "deployer-testbed/sample:latest", "Env": ["SECRET=x"],
                   "Labels": {"deployer.managed": "true", "deployer.name": name}},
    }


def test_parse_inspect() -> None:
    text = json.dumps([
        _inspect("a", "running", requests=[{"Driver": "", "Count": 0, "DeviceIDs": ["1", "3"],
                                            "Capabilities": [["gpu"]], "Options": {}}]),
        _inspect("b", "exited", 137, oom=True),
    ])
    a, b = parse_inspect(text)
    assert a == ContainerStatus(
        id="4f1c" + "0" * 60, name="a", image="deployer-testbed/sample:latest", image_id="sha256:" + "b" * 64,
        state="running", exit_code=None, oom_killed=False, started_at="2026-11-29T15:30:12Z", finished_at=None,
        restarts=2, gpus=("1", "3"), labels=(("deployer.managed", "true"), ("deployer.name", "a")),
    )
    assert a.managed and a.label("deployer.name") == "a"
    assert (b.state, b.exit_code, b.oom_killed, b.finished_at, b.gpus) == ("exited", 137, True, "2026-11-29T15:31:00Z", None)
    assert parse_inspect("") == [] and parse_inspect("[]") == []


def test_gpus_of() -> None:
    assert gpus_of(None) is None
    assert gpus_of([{"Count": -1, "DeviceIDs": None}]) == ("all",)
    assert gpus_of([{"Count": 2, "DeviceIDs": []}]) == ("0", "1")
    assert gpus_of([{"Count": 0, "DeviceIDs": ["GPU-x"]}]) == ("GPU-x",)


def test_parse_time() -> None:
    assert parse_time("2026-11-29T15:30:12.123456789Z") == datetime(2026, 11, 29, 15, 30, 12, 123456, tzinfo=timezone.utc)
    assert parse_time("2026-11-29T15:30:12Z") == datetime(2026, 11, 29, 15, 30, 12, tzinfo=timezone.utc)
    assert parse_time("2026-11-29T17:30:12.5+02:00") == datetime(2026, 11, 29, 15, 30, 12, 500000, tzinfo=timezone.utc)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("junk") is None


def test_parse_image_inspect() -> None:
    text = json.dumps([{"Id": "sha256:" + "c" * 64, "Config": {"Labels": {"org.opencontainers.image.revision": "abc"}}}])
    assert parse_image_inspect(text) == ("sha256:" + "c" * 64, {"org.opencontainers.image.revision": "abc"})
    assert parse_image_inspect(json.dumps([{"Id": "sha256:1", "Config": {"Labels": None}}])) == ("sha256:1", {})
