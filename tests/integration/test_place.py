"""`deploy run --any --gpus N`: placement by free GPUs on the testbed (gpu01: 2 GPUs, gpu02: 4)."""
from __future__ import annotations

import subprocess
from typing import Any

from test_run_support import BUSYBOX, container, ensure_image, run_cli, unique

from tests.conftest import REPO, _deploy_argv

PAIR = "gpu01,gpu02"


def devices(testbed: Any, host: str, name: str) -> list[str]:
    c = container(testbed, host, name)
    assert c is not None, f"{name} is not on {host}"
    return list(c.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"])


def fill_gpu01(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    name = unique("fill")
    names.append(name)
    code, _, err = run_cli(deploy_cli, testbed, "--host", "gpu01", "--image", BUSYBOX, "--name", name, "--gpus", "all",
                           "--", "sleep", "600")
    assert code == 0, err


def placed(deploy_cli: Any, testbed: Any, names: list[str]) -> tuple[int, str, str]:
    name = unique("any")
    names.append(name)
    code, _, err = run_cli(deploy_cli, testbed, "--host", PAIR, "--image", BUSYBOX, "--name", name, "--any",
                           "--gpus", "2", "--", "sleep", "600")
    return code, name, err


def test_any_lands_on_the_host_with_free_gpus(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    fill_gpu01(deploy_cli, testbed, names)
    code, name, err = placed(deploy_cli, testbed, names)
    assert code == 0, err
    assert container(testbed, "gpu01", name) is None
    got = devices(testbed, "gpu02", name)
    assert len(got) == 2 and all(d.isdigit() for d in got)
    assert f"gpu02: placed here: GPU {', '.join(got)}" in err  # it says where and on which devices
    assert f"gpu02: started {name}" in err


def test_placements_started_together_get_disjoint_gpus(deploy_cli: Any, testbed: Any, cli_env: dict[str, str],
                                                       names: list[str]) -> None:
    fill_gpu01(deploy_cli, testbed, names)
    for host in ("gpu01", "gpu02"):
        ensure_image(testbed, host, BUSYBOX)
    both = [unique("par-a"), unique("par-b")]
    names += both
    procs = [subprocess.Popen([*_deploy_argv(), "run", "--host", PAIR, "--image", BUSYBOX, "--name", n, "--any",
                               "--gpus", "2", "--", "sleep", "600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=cli_env, cwd=str(REPO))
             for n in both]
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    a, b = (devices(testbed, "gpu02", n) for n in both)
    assert len(a) == 2 and len(b) == 2 and not set(a) & set(b), (a, b)

    # gpu01 full, gpu02 full: a third placement is refused, saying per host why
    code, name, err = placed(deploy_cli, testbed, names)
    assert code == 1, err
    assert container(testbed, "gpu01", name) is None and container(testbed, "gpu02", name) is None
    lines = [line for line in err.splitlines() if "cannot place" in line]
    assert {line.split(":", 2)[1].strip() for line in lines} == {"gpu01", "gpu02"}, err
    gpu01 = next(line for line in lines if line.startswith("error: gpu01:"))
    gpu02 = next(line for line in lines if line.startswith("error: gpu02:"))
    assert "0 of 2 GPU(s) free, 2 needed" in gpu01 and "held by rt-fill-" in gpu01
    assert "of 4 GPU(s) free, 2 needed" in gpu02 and all(n in gpu02 for n in both)


def test_any_needs_a_gpu_count(deploy_cli: Any) -> None:
    code, _, err = deploy_cli("run", "--host", PAIR, "--image", BUSYBOX, "--any", "--gpus", "all")
    assert code == 2 and "--any places the container by how many GPUs" in err


def test_a_host_without_the_image_is_passed_over(deploy_cli: Any, testbed: Any, names: list[str]) -> None:
    # best fit would be gpu01 (2 GPUs) when it is idle, but only gpu02 has this image
    ensure_image(testbed, "gpu02", BUSYBOX)
    ref = f"place-it/only-gpu02:{unique('t').replace('rt-t-', '')}"
    repo, tag = ref.split(":")
    testbed.docker("gpu02").images.get(BUSYBOX).tag(repo, tag)
    name = unique("img")
    names.append(name)
    try:
        code, _, err = deploy_cli("run", "--host", PAIR, "--image", ref, "--name", name, "--any", "--gpus", "2",
                                  "--", "sleep", "600")
        assert code == 0, err
        assert len(devices(testbed, "gpu02", name)) == 2
        code, _, err = deploy_cli("run", "--host", "gpu01", "--image", ref, "--name", name + "-x", "--any",
                                  "--gpus", "1")
        assert code == 1 and f"image {ref} is not on this host" in err
    finally:
        testbed.docker("gpu02").images.remove(ref)
