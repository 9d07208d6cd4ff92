"""Who uses which GPU (pure), and a host's status parsed from the one status command's output."""
from __future__ import annotations

import json

from deployer.commands.facts import Gpu
from deployer.commands.run import ContainerStatus
from deployer.runs.gpuuse import Busy, gpu_use, holders, indexes_of
from deployer.runs.status import parse

GPUS = tuple(Gpu(i, "A100", f"GPU-{i}", 40960, 0, 0) for i in range(4))


def _c(name: str, gpus: tuple[str, ...] | None, state: str = "running", managed: bool = True) -> ContainerStatus:
    labels = (("deployer.managed", "true"),) if managed else ()
    return ContainerStatus(id=name, name=name, image="i", image_id="sha256:1", state=state, exit_code=None,
                           oom_killed=False, started_at=None, finished_at=None, gpus=gpus, labels=labels)


def test_indexes_of_every_spelling() -> None:
    assert indexes_of(("all",), GPUS) == [0, 1, 2, 3]
    assert indexes_of(("3", "1"), GPUS) == [1, 3]
    assert indexes_of(("GPU-2",), GPUS) == [2]
    assert indexes_of(("7", "GPU-x", "MIG-1"), GPUS) == []  # not on this host: nothing to hold


def test_only_running_deployer_containers_hold() -> None:
    containers = [_c("a", ("0", "1")), _c("b", ("1",)), _c("done", ("2",), state="exited"),
                  _c("mine", ("3",), managed=False), _c("cpu", None)]
    assert holders(containers, GPUS) == {0: ("a",), 1: ("a", "b")}


def test_free_busy_and_other_process() -> None:
    gpus = (Gpu(0, "A100", "GPU-0", 40960, 10240, 100),  # held and loaded
            Gpu(1, "A100", "GPU-1", 40960, 2048, 0),  # loaded by someone else
            Gpu(2, "A100", "GPU-2", 40960, 300, 3),  # a little memory: still free
            Gpu(3, "A100", "GPU-3", 40960, None, None))  # nvidia-smi said [N/A]
    use = gpu_use(gpus, [_c("a", ("0",))], Busy(memory_mib=1024, util_pct=10))
    assert [(g.held_by, g.loaded, g.other_process, g.free) for g in use] == [
        (("a",), True, False, False), ((), True, True, False), ((), False, False, True), ((), False, False, True)]
    assert use[0].why_not_free() == "held by a"
    assert "did not start" in use[1].why_not_free()
    assert [g.free for g in gpu_use(gpus, [], Busy(memory_mib=100_000, util_pct=101))] == [True] * 4


def test_busy_thresholds_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DEPLOYER_GPU_BUSY_MEMORY_MIB", "64")
    monkeypatch.setenv("DEPLOYER_GPU_BUSY_UTIL_PCT", "junk")
    assert Busy.default() == Busy(64, 10)


INSPECT = [{"Id": "c1", "Name": "/train", "Image": "sha256:img", "State": {"Status": "running",
            "StartedAt": "2026-11-29T10:00:00.5Z"}, "Config": {"Image": "t:1", "Labels": {"deployer.managed": "true"}},
            "HostConfig": {"DeviceRequests": [{"DeviceIDs": ["GPU-ee"], "Count": 0}]}}]
INFO = {"ServerVersion": "28.5.2", "Driver": "overlayfs", "DockerRootDir": "/var/lib/docker",
        "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
OUT = f"""--- deployer:containers
{json.dumps(INSPECT, indent=2)}
--- deployer:gpus
0, NVIDIA H100 80GB HBM3, GPU-aa, 81559, 0, 0
1, NVIDIA H100 80GB HBM3, GPU-ee, 81559, 20389, 100
--- deployer:engine
{json.dumps(INFO)}
--- deployer:disk
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         264212084 28016104  78374808      27% /var/lib/docker
"""


def test_parse_status_output() -> None:
    hs = parse("gpu01", OUT)
    assert (hs.host, hs.reachable, hs.error, hs.docker_version, hs.image_store, hs.disk_free_bytes) == (
        "gpu01", True, None, "28.5.2", "containerd", 78374808 * 1024)
    assert [c.name for c in hs.containers] == ["train"]
    assert [(g.index, g.held_by, g.free) for g in hs.gpu_use] == [(0, (), True), (1, ("train",), False)]


def test_parse_status_without_engine_or_gpus() -> None:
    hs = parse("cpu01", "--- deployer:containers\n[]\n--- deployer:gpus\n--- deployer:engine\n--- deployer:disk\n")
    assert (hs.reachable, hs.error, hs.docker_version, hs.image_store, hs.disk_free_bytes, hs.gpu_use) == (
        True, None, None, None, None, ())
    assert parse("x", "--- deployer:containers\n[{bad\n").error.startswith("cannot parse docker inspect")  # type: ignore[union-attr]
