"""`deploy status` and `deploy logs` against the testbed."""
from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from test_run_support import (
    BUSYBOX,
    SAMPLE,
    run_cli,
    status_json,
    unique,
    wait_for,
)


def one(deploy_cli: Any, name: str, host: str) -> dict[str, Any] | None:
    code, hosts, err = status_json(deploy_cli, name, "--host", host)
    assert code == 0, err
    assert [h["host"] for h in hosts] == [host]
    return hosts[0]["containers"][0] if hosts[0]["containers"] else None


def test_running_then_exited_with_code(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = unique("st")
    names.append(name)
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", BUSYBOX, "--name", name, "--gpus", "1",
                              "--", "sh", "-c", "sleep 2; exit 3")
    assert code == 0, err
    row = one(deploy_cli, name, "gpu01")
    assert row is not None
    assert set(row) == {"name", "image", "image_id", "state", "exit_code", "oom_killed", "started_at", "finished_at",
                        "gpus"}
    assert (row["name"], row["state"], row["exit_code"], row["gpus"]) == (name, "running", None, ["0"])
    assert row["image"] == BUSYBOX and row["image_id"].startswith("sha256:") and row["started_at"].endswith("Z")
    done = wait_for(lambda: (r := one(deploy_cli, name, "gpu01")) and r["state"] == "exited" and r, timeout=15)
    assert done and done["exit_code"] == 3 and done["oom_killed"] is False and done["finished_at"]


def test_memory_limit_shows_oom_killed(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    # The shell itself (pid 1) swallows ~100 MB into a variable under an 8 MB limit: the kernel's
    # cgroup OOM killer ends it and docker records OOMKilled (cgroup v1 memory controller here).
    # It sleeps first: a container OOM-killed in its first milliseconds can lose the OOM event to the
    # exit event inside containerd (containerd/containerd#8180), which is not what a job looks like.
    name = unique("oom")
    names.append(name)
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu02", "--image", BUSYBOX, "--name", name, "--memory", "8m",
                              "--attach", "--", "sh", "-c", 'sleep 1; x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo kept')
    assert code == 137, err
    row = one(deploy_cli, name, "gpu02")
    assert row is not None and row["state"] == "exited" and row["exit_code"] == 137 and row["oom_killed"] is True


def test_cut_host_is_unreachable_others_listed(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = unique("cut")
    names.append(name)
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu02", "--image", SAMPLE, "--name", name, "--", "sleep")
    assert code == 0, err
    testbed.cut("airgap01")
    try:
        started = time.monotonic()
        code, rows, err = status_json(deploy_cli, "--host", "gpu02,airgap01", "--timeout", "3")
        elapsed = time.monotonic() - started
    finally:
        testbed.heal("airgap01")
    assert code == 1  # a host could not be asked
    assert elapsed < 15
    down = [r for r in rows if r["host"] == "airgap01"]
    assert len(down) == 1 and down[0]["reachable"] is False and down[0]["error"]
    assert any(r["host"] == "gpu02" and c["name"] == name and c["state"] == "running"
               for r in rows for c in r["containers"])
    code, _, err = deploy_cli("status", "--host", "gpu02,airgap01", "--timeout", "3")
    assert code == 0, err  # healed


def test_status_table_with_gpu_table(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = unique("tbl")
    names.append(name)
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu02", "--image", SAMPLE, "--name", name, "--gpus", '"device=2"',
                              "--", "sleep")
    assert code == 0, err
    code, out, err = deploy_cli("status", "--host", "gpu02")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("HOST\tNAME\tIMAGE\tSTATE")
    row = next(line.split("\t") for line in lines if f"\t{name}\t" in line)
    assert row[0] == "gpu02" and row[3] == "running" and row[-1] == "2" and row[7].startswith("up ")
    # then, after a blank line, the GPU table: one row per GPU, the one the container holds named
    gpu_header = lines.index("HOST\tGPU\tMODEL\tMEMORY MiB\tUTIL\tUSE")
    assert lines[gpu_header - 1] == ""
    gpus = [line.split("\t") for line in lines[gpu_header + 1:]]
    assert [g[1] for g in gpus if g[0] == "gpu02"] == ["0", "1", "2", "3"]
    held = next(g for g in gpus if g[0] == "gpu02" and g[1] == "2")
    assert "A100" in held[2] and held[3].endswith("/40960") and name in held[5].split(", ")
    code, _, err = deploy_cli("status", name + "-nope", "--host", "gpu02")
    assert code == 2 and "did you mean" in err


def test_logs_follow_streams_as_printed(deploy_cli: Any, testbed: Any, cli_env: dict[str, str], names: list[str]) -> None:
    name = unique("logs")
    names.append(name)
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", SAMPLE, "--name", name, "--", "ticks", "6")
    assert code == 0, err
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from deployer.cli import main; sys.exit(main())",
                             "logs", name, "--host", "gpu01", "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env)
    seen: list[tuple[float, str]] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        seen.append((time.monotonic(), raw.decode().rstrip("\n")))
    assert proc.wait(timeout=30) == 0
    lines = [line for _, line in seen]
    assert lines[0].startswith("sample 1:") and lines[1:] == [f"tick {i}" for i in range(1, 7)]
    ticks = [t for t, line in seen if line.startswith("tick")]
    assert ticks[-1] - ticks[0] > 2.5  # printed as they came (1 s apart), not all at the end
    code, out, _ = deploy_cli("logs", name, "--host", "gpu01", "--tail", "2", "--timestamps")
    assert code == 0 and [line.split(" ", 1)[1] for line in out.splitlines()] == ["tick 5", "tick 6"]
    code, _, err = deploy_cli("logs", "nope-" + name, "--host", "gpu01")
    assert code == 2 and "did you mean" in err


def test_watch_refreshes_until_interrupted(deploy_cli: Any, cli_env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from deployer.cli import main; sys.exit(main())",
                             "status", "--host", "gpu01", "--watch", "--interval", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**cli_env, "COLUMNS": "200"})
    assert proc.stdout is not None
    out = b""
    end = time.monotonic() + 30  # read two whole refreshes (each ends with the GPU table's last row), then Ctrl-C
    while out.count(b"gpu01\t1\tNVIDIA H100") < 2 and time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
    proc.send_signal(2)
    rest, err = proc.communicate(timeout=15)
    out += rest
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and out.count(b"HOST\tNAME") >= 2  # piped: a fresh table per refresh
    assert out.count(b"HOST\tGPU\tMODEL") >= 2 and out.count(b"gpu01\t1\tNVIDIA H100") >= 2  # with the GPU view


def test_watch_on_a_terminal_redraws_the_gpu_table_in_place(cli_env: dict[str, str]) -> None:
    import os
    import pty
    import select

    main, tty = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from deployer.cli import main; sys.exit(main())",
                             "status", "--host", "gpu01", "--watch", "--interval", "0.3"],
                            stdin=tty, stdout=tty, stderr=subprocess.PIPE, env={**cli_env, "COLUMNS": "160",
                                                                                  "TERM": "xterm"})
    os.close(tty)
    seen = b""
    end = time.monotonic() + 20
    while seen.count(b"NVIDIA H100") < 6 and time.monotonic() < end:  # 2 GPUs x 3 frames
        if select.select([main], [], [], 0.5)[0]:
            try:
                seen += os.read(main, 65536)
            except OSError:
                break
    proc.send_signal(2)
    _, err = proc.communicate(timeout=15)
    os.close(main)
    assert proc.returncode == 0 and b"Traceback" not in err, err
    assert seen.count(b"NVIDIA H100") >= 6 and b"GPUs" in seen
    assert b"\x1b[2K" in seen and b"\x1b[1A" in seen  # later frames erase and overwrite the earlier ones
    assert seen.count(b"HOST\tGPU") == 0  # a table drawn for a person, not tab-separated lines


def test_logs_follow_survives_connection_resets(deploy_cli: Any, testbed: Any, cli_env: dict[str, str],
                                                names: list[str]) -> None:
    # Every SSH connection to gpu02 is reset after ~40 kB: `logs -f` must reconnect, resume with
    # --since and print each of the ~50 kB of lines exactly once, in order.
    name = unique("flaky")
    names.append(name)
    script = ('i=1; while [ $i -le 400 ]; do printf "line %04d %s\\n" $i '
              '"$(printf %080d 0)"; [ $((i % 50)) -eq 0 ] && sleep 0.3; i=$((i + 1)); done')
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu02", "--image", BUSYBOX, "--name", name,
                           "--", "sh", "-c", script)
    assert code == 0, err
    testbed.flaky("gpu02", 0.04)
    try:
        proc = subprocess.run([sys.executable, "-c", "import sys; from deployer.cli import main; sys.exit(main())",
                               "logs", name, "--host", "gpu02", "-f"], capture_output=True, env=cli_env, timeout=90,
                              check=False)
    finally:
        testbed.flaky("gpu02", None)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"reconnecting" in proc.stderr  # the resets did happen
    lines = proc.stdout.decode().splitlines()
    assert [line[:9] for line in lines] == [f"line {i:04d}" for i in range(1, 401)]


def test_logs_follow_ctrl_c_ends_cleanly(deploy_cli: Any, testbed: Any, cli_env: dict[str, str],
                                         names: list[str]) -> None:
    name = unique("intr")
    names.append(name)
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", SAMPLE, "--name", name,
                           "--", "ticks", "100")
    assert code == 0, err
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from deployer.cli import main; sys.exit(main())",
                             "logs", name, "--host", "gpu01", "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env)
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(2)]
    assert first[1] == b"tick 1\n"
    proc.send_signal(2)
    _, err_bytes = proc.communicate(timeout=15)
    assert proc.returncode == 0 and b"Traceback" not in err_bytes


def test_json_lists_every_selected_host(deploy_cli: Any, testbed: Any, run_images: None) -> None:
    # airgap01 cut, gpu01 idle (no deployer container of ours), cpu01 without GPUs: all three appear
    testbed.cut("airgap01")
    try:
        code, hosts, err = status_json(deploy_cli, "--host", "gpu01,airgap01,cpu01", "--timeout", "3")
    finally:
        testbed.heal("airgap01")
    assert code == 1, err  # a host could not be asked
    by = {h["host"]: h for h in hosts}
    assert sorted(by) == ["airgap01", "cpu01", "gpu01"] and len(hosts) == 3
    cut = by["airgap01"]
    assert cut["reachable"] is False and cut["error"] and cut["gpus"] == [] and cut["containers"] == []
    idle = by["gpu01"]
    assert (idle["reachable"], idle["error"], idle["image_store"]) == (True, None, "containerd")
    assert idle["docker_version"].startswith("28.") and idle["disk_free_bytes"] > 0
    assert [g["index"] for g in idle["gpus"]] == [0, 1]
    for g in idle["gpus"]:
        assert g["uuid"].startswith("GPU-") and "H100" in g["name"] and g["memory_total_mib"] == 81559
        assert set(g) == {"index", "uuid", "name", "memory_used_mib", "memory_total_mib", "utilization_pct",
                          "held_by", "other_process", "free"}
    # the host's deployer containers are exactly what its daemon has (none, unless another suite runs one)
    live = {c.name for c in testbed.docker("gpu01").containers.list(filters={"label": "deployer.managed=true"})}
    assert {c["name"] for c in idle["containers"] if c["state"] == "running"} == live
    if not live:
        assert idle["containers"] == [] or all(c["state"] != "running" for c in idle["containers"])
        assert all(g["free"] and g["held_by"] == [] for g in idle["gpus"])
    cpu = by["cpu01"]
    assert cpu["reachable"] is True and cpu["gpus"] == [] and cpu["docker_version"].startswith("20.10")
    assert cpu["image_store"] == "overlay2"
