"""`deploy inventory check` against the testbed: GPUs, runtimes, registry reachability, cut hosts."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import DeployRunner, Testbed

KEYS = {"name", "ok", "error", "docker", "gpus", "disk_free_bytes", "registry_reachable"}


def machine(testbed: Testbed, name: str) -> str:
    """The facts cache's key for a testbed host: the machine, not the inventory's name for it."""
    return f"root@{testbed.hosts[name].address}:22"


@pytest.fixture()
def cache_env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


def test_check_reports_every_host(testbed: Testbed, deploy_cli: DeployRunner, cache_env: dict[str, str]) -> None:
    code, out, err = deploy_cli("inventory", "check", "--json", env=cache_env)
    assert code == 0, err
    reports = {r["name"]: r for r in json.loads(out)}
    assert set(reports) == {"gpu01", "gpu02", "airgap01", "cpu01", "airgap02", "airgap03"}
    for name, r in reports.items():
        assert set(r) == KEYS
        assert r["ok"] is True and r["error"] is None
        assert set(r["docker"]) == {"server_version", "api_version", "storage_driver", "image_store", "gpu_runtime"}
        spec = testbed.hosts[name]
        assert r["docker"]["image_store"] == spec.store
        assert r["docker"]["server_version"].startswith(spec.docker + ".")
        assert r["docker"]["api_version"] == ("1.41" if spec.docker == "20.10" else "1.51")
        # the containerd store's "driver" is its snapshotter
        assert r["docker"]["storage_driver"] == ("overlayfs" if spec.store == "containerd" else "overlay2")
        assert isinstance(r["disk_free_bytes"], int) and r["disk_free_bytes"] > 0
        expected = [{"index": g["index"], "name": g["name"], "uuid": g["uuid"], "memory_total_mib": g["memory"]}
                    for g in testbed.hosts[name].gpus]
        assert r["gpus"] == expected
    hosts = ("gpu01", "gpu02", "airgap01", "cpu01", "airgap02", "airgap03")
    assert [len(reports[n]["gpus"]) for n in hosts] == [2, 4, 2, 0, 2, 2]
    assert reports["gpu02"]["gpus"][0]["name"] == "NVIDIA A100-SXM4-40GB"
    assert reports["gpu01"]["gpus"][0]["memory_total_mib"] == 81559
    assert [reports[n]["docker"]["gpu_runtime"] for n in hosts] == [True, True, True, False, True, True]
    assert [reports[n]["registry_reachable"] for n in hosts] == [True, True, False, True, False, False]

    # the facts are cached per machine and `inventory list` shows them
    cache = json.loads((Path(cache_env["XDG_CACHE_HOME"]) / "deployer" / "facts.json").read_text())
    gpu02, airgap01 = cache[machine(testbed, "gpu02")], cache[machine(testbed, "airgap01")]
    assert gpu02["ok"] is True and len(gpu02["gpus"]) == 4 and gpu02["checked_at"]
    assert airgap01["registry_reachable"] is False
    code, out, err = deploy_cli("inventory", "list", env=cache_env)
    assert code == 0, err
    assert "4x NVIDIA A100-SXM4-40GB" in out


def test_check_table_output(deploy_cli: DeployRunner, cache_env: dict[str, str]) -> None:
    code, out, err = deploy_cli("inventory", "check", "gpus:&airgapped", env=cache_env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split("\t")[:3] == ["HOST", "SSH", "HOST KEY"]
    row = lines[1].split("\t")
    assert row[:3] == ["airgap01", "ok", "trusted"] and row[-1] == "unreachable"
    assert "0:NVIDIA A10 (23028 MiB)" in row[6]
    assert "airgap01: ok" in err


def test_cut_host_is_unreachable_within_the_timeout(testbed: Testbed, deploy_cli: DeployRunner,
                                                    cache_env: dict[str, str]) -> None:
    stop = threading.Event()

    def keep_cut() -> None:  # other test runs may heal shared hosts: keep it cut while we check
        while not stop.is_set():
            testbed.cut("cpu01")
            stop.wait(0.3)

    thread = threading.Thread(target=keep_cut, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        start = time.monotonic()
        code, out, err = deploy_cli("inventory", "check", "cpu01,gpu01", "--json", "--timeout", "3",
                                    env=cache_env, timeout=60)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
        testbed.heal("cpu01")
    assert code == 1, err
    reports = {r["name"]: r for r in json.loads(out)}
    assert reports["gpu01"]["ok"] is True  # one host's failure never hides the others
    cpu = reports["cpu01"]
    assert cpu["ok"] is False and "no answer within 3s" in cpu["error"]
    assert cpu["docker"] is None and cpu["gpus"] == [] and cpu["disk_free_bytes"] is None
    assert elapsed < 3 + 6  # the connect timeout plus process start-up, never a hang
    cache = json.loads((Path(cache_env["XDG_CACHE_HOME"]) / "deployer" / "facts.json").read_text())
    cpu01 = cache[machine(testbed, "cpu01")]
    assert cpu01["ok"] is False and cpu01["ssh"] == "unreachable"


def test_check_with_a_pattern_matching_nothing_is_a_usage_error(deploy_cli: DeployRunner,
                                                               cache_env: dict[str, str]) -> None:
    code, _, err = deploy_cli("inventory", "check", "nosuchhost", env=cache_env)
    assert code == 2 and "Traceback" not in err
