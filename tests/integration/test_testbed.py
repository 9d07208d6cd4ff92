"""The testbed itself, end to end: what every other integration test relies on.

Doubles as documentation of what the simulated fleet offers (issue 2, item 5)."""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.testbed import bed, net
from tests.testbed.config import BASE_IMAGE, Store
from tests.testbed.fixture import Testbed

SAMPLE = "deployer-testbed/sample:latest"


def docker_cli(tb: Testbed, host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    url = tb.ws_docker_host if host == "ws" else tb.hosts[host].docker_host
    return subprocess.run(["docker", *args], check=False, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DOCKER_HOST": url})


@pytest.fixture(scope="module")
def sample_on_hosts(testbed: Testbed) -> Iterator[str]:
    """The sample image loaded (docker save | docker load, no registry) on every host under a tag of its
    own (other sessions may remove deployer-testbed/sample meanwhile); hosts are left as they were."""
    ref = f"testbed-test/sample:{uuid.uuid4().hex[:8]}"
    data = b"".join(testbed.docker("ws").images.get(SAMPLE).save(named=SAMPLE))
    for host in testbed.hosts:
        client = testbed.docker(host)
        had = bool(client.images.list(name=SAMPLE))
        client.images.load(data)
        client.images.get(SAMPLE).tag(ref)
        if not had:
            client.images.remove(SAMPLE)  # only untags: the image stays under ref
    yield ref
    for host in testbed.hosts:
        with contextlib.suppress(docker.errors.APIError):  # best effort: another session may have cleaned up
            testbed.docker(host).images.remove(ref)


@pytest.fixture(scope="module")
def pushed_sample(testbed: Testbed) -> Iterator[str]:
    """The sample pushed from the workstation daemon to the registry under a unique name."""
    ref = f"{testbed.registry}/testbed-test/sample:{uuid.uuid4().hex[:8]}"
    ws = testbed.docker("ws")
    ws.images.get(SAMPLE).tag(ref)
    try:
        for chunk in ws.images.push(ref, stream=True, decode=True):
            assert "error" not in chunk, chunk
        yield ref
    finally:
        ws.images.remove(ref)


def test_strict_host_key_ssh_reaches_every_host_with_its_docker(testbed: Testbed) -> None:
    for name, host in testbed.hosts.items():
        res = testbed.ssh(name, "echo $DOCKER_HOST; docker info --format '{{.Name}} {{.ServerVersion}}'; "
                                "command -v nvidia-smi || echo no-nvidia-smi")
        assert res.returncode == 0, res.stderr
        lines = res.stdout.decode().splitlines()
        assert lines[0] == host.docker_host
        assert lines[1].split()[1].startswith(f"{host.docker}.")
        assert lines[2] == ("no-nvidia-smi" if not host.gpus else f"{Path(host.staging_dir).parent}/bin/nvidia-smi")


def test_the_fleet_runs_todays_docker_on_both_stores_and_one_old_docker(testbed: Testbed) -> None:
    want = {"gpu01": ("28", "containerd"), "gpu02": ("28", "overlay2"), "airgap01": ("28", "containerd"),
            "cpu01": ("20.10", "overlay2"), "airgap02": ("28", "overlay2"), "airgap03": ("28", "containerd")}
    assert {n: (h.docker, h.store) for n, h in testbed.hosts.items()} == want
    assert testbed.hosts_on(store="containerd") == ["gpu01", "airgap01", "airgap03"]
    assert testbed.hosts_on(docker="20.10") == ["cpu01"]
    for name, (docker_line, store) in want.items():
        res = testbed.ssh(name, "docker info --format '{{.ServerVersion}} {{.Driver}} {{json .DriverStatus}}'; "
                                "ctr --version")
        assert res.returncode == 0, res.stderr
        info, ctr = res.stdout.decode().splitlines()
        version, driver, status = info.split(" ", 2)
        assert version.startswith("28.5." if docker_line == "28" else "20.10.")
        if store == "containerd":
            assert driver == "overlayfs" and '["driver-type","io.containerd.snapshotter.v1"]' in status
        else:
            assert driver == "overlay2" and "io.containerd.snapshotter" not in status
        # Docker 28 hosts' sessions find containerd 2's ctr; the old host has bookworm's containerd 1.6.
        assert (" 2.1." in ctr) == (docker_line == "28"), ctr


def test_ws_daemon_is_docker_28_on_the_requested_store(testbed: Testbed) -> None:
    assert testbed.ws_store == os.environ.get("DEPLOYER_TESTBED_WS_STORE", "overlay2")
    info = testbed.docker("ws").info()
    assert info["ServerVersion"].startswith("28.5.")
    assert (info["Driver"], ["driver-type", "io.containerd.snapshotter.v1"] in info["DriverStatus"]) == (
        ("overlayfs", True) if testbed.ws_store == "containerd" else ("overlay2", False))
    assert testbed.env()["DEPLOYER_TESTBED_WS_STORE"] == testbed.ws_store


def test_ws_store_switch_restarts_only_the_ws_daemon_and_keeps_each_stores_images(testbed: Testbed) -> None:
    """Switch the ws daemon to the other store and back: each store keeps its own data root (a tag made
    on one is still there after the round trip, absent on the other), both have the base images, and
    no host daemon is restarted. Note: other sessions using the ws daemon meanwhile see it restart."""
    first = testbed.ws_store
    other: Store = "containerd" if first == "overlay2" else "overlay2"
    hosts_before = {c: bed.alive(testbed.paths, c) for c in bed.components() if c != "dockerd-ws"}
    marker = f"testbed-test/store-marker:{uuid.uuid4().hex[:8]}"
    testbed.docker("ws").images.get(BASE_IMAGE).tag(marker)
    try:
        bed.up(testbed.paths, ws_store=other)
        ws = testbed.docker("ws")
        assert bed.ws_store(testbed.paths) == other
        assert {BASE_IMAGE, SAMPLE} <= {t for img in ws.images.list() for t in img.tags}
        assert not ws.images.list(name=marker)
    finally:
        bed.up(testbed.paths, ws_store=first)
    assert bed.ws_store(testbed.paths) == first
    assert testbed.docker("ws").images.list(name=marker)
    testbed.docker("ws").images.remove(marker)
    assert {c: bed.alive(testbed.paths, c) for c in hosts_before} == hosts_before


def test_unknown_host_key_is_refused(testbed: Testbed, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    # gpu02's key filed under gpu01's address: a host-key mismatch the strict client must refuse.
    gpu02_key = next(line for line in Path(testbed.known_hosts).read_text().splitlines() if line.startswith("gpu02,"))
    other.write_text(f"{testbed.hosts['gpu01'].address} {' '.join(gpu02_key.split()[1:])}\n")
    argv = [a.replace(testbed.known_hosts, str(other)) for a in testbed.ssh_argv("gpu01", "true")]
    res = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    assert res.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in res.stderr or "Host key verification failed" in res.stderr


def test_each_host_has_its_own_images(testbed: Testbed) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("marker")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tag = f"testbed-test/only-on-gpu01:{uuid.uuid4().hex[:8]}"
    gpu01 = testbed.docker("gpu01")
    gpu01.api.import_image_from_data(buf.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1])
    image = gpu01.images.get(tag)
    try:
        assert gpu01.images.get(tag).id
        for other in ("gpu02", "airgap01", "cpu01", "ws"):
            ids = {img.id for img in testbed.docker(other).images.list(all=True)}
            assert image.id not in ids, f"{other} sees an image loaded only on gpu01"
    finally:
        gpu01.images.remove(tag, force=True)


@pytest.mark.parametrize("gpus, expected", [("all", "all"), ('"device=1"', "1"), ("2", "0,1")])
def test_gpus_on_gpu_hosts(testbed: Testbed, sample_on_hosts: str, gpus: str, expected: str) -> None:
    assert testbed.hosts["gpu01"].store == "containerd"  # Docker 28 on the containerd store: the hook still works
    res = docker_cli(testbed, "gpu01", "run", "--rm", "--gpus", gpus, sample_on_hosts)
    assert res.returncode == 0, res.stderr
    assert f"NVIDIA_VISIBLE_DEVICES={expected} " in res.stdout


@pytest.mark.parametrize("host", ["gpu01", "gpu02", "airgap01"])
def test_gpus_on_every_gpu_host_whatever_its_store(testbed: Testbed, sample_on_hosts: str, host: str) -> None:
    res = docker_cli(testbed, host, "run", "--rm", "--gpus", '"device=1"', sample_on_hosts)
    assert res.returncode == 0, res.stderr
    assert "NVIDIA_VISIBLE_DEVICES=1 " in res.stdout


def test_gpu_by_uuid_and_fourth_gpu_of_gpu02(testbed: Testbed, sample_on_hosts: str) -> None:
    uuid3 = testbed.hosts["gpu02"].gpus[3]["uuid"]
    for spec, seen in (('"device=3"', "3"), (f"device={uuid3}", uuid3)):
        res = docker_cli(testbed, "gpu02", "run", "--rm", "--gpus", spec, sample_on_hosts)
        assert res.returncode == 0, res.stderr
        assert f"NVIDIA_VISIBLE_DEVICES={seen} " in res.stdout


@pytest.mark.parametrize("host, gpus, bad", [("gpu01", '"device=2"', "2"), ("airgap01", '"device=0,7"', "7"),
                                             ("gpu01", "3", "2"),
                                             ("gpu02", "device=GPU-00000000-0000-0000-0000-000000000000",
                                              "GPU-00000000-0000-0000-0000-000000000000")])
def test_missing_gpu_fails_with_the_hook_error(testbed: Testbed, sample_on_hosts: str, host: str, gpus: str,
                                               bad: str) -> None:
    res = docker_cli(testbed, host, "run", "--rm", "--gpus", gpus, sample_on_hosts)
    assert res.returncode != 0
    assert f"nvidia-container-cli: device error: {bad}: unknown device" in res.stderr


def test_cpu_host_refuses_gpus(testbed: Testbed, sample_on_hosts: str) -> None:
    assert docker_cli(testbed, "cpu01", "run", "--rm", sample_on_hosts).returncode == 0
    res = docker_cli(testbed, "cpu01", "run", "--rm", "--gpus", "all", sample_on_hosts)
    assert res.returncode != 0
    assert 'could not select device driver "" with capabilities: [[gpu]]' in res.stderr


def test_registry_reachable_except_from_the_airgapped_host(testbed: Testbed, pushed_sample: str) -> None:
    for host in ("gpu02", "cpu01"):
        client = testbed.docker(host)
        client.images.pull(pushed_sample)
        assert client.images.get(pushed_sample).id
        client.images.remove(pushed_sample)
    t0 = time.monotonic()
    res = docker_cli(testbed, "airgap01", "pull", pushed_sample)
    assert res.returncode != 0
    assert "no route to host" in res.stderr
    assert time.monotonic() - t0 < 10, "an air gap must fail fast, not hang"


def test_nvidia_smi_query_formats(testbed: Testbed) -> None:
    fields = "index,name,uuid,memory.total,memory.used,utilization.gpu,driver_version"
    gpus = testbed.hosts["gpu02"].gpus
    # memory.used / utilization.gpu depend on containers other tests may be running: check their shape only.
    out = testbed.ssh("gpu02", f"nvidia-smi --query-gpu={fields} --format=csv,noheader,nounits").stdout.decode()
    rows = [line.split(", ") for line in out.splitlines()]
    assert [r[:4] + r[6:] for r in rows] == [[str(g["index"]), "NVIDIA A100-SXM4-40GB", g["uuid"], "40960",
                                               "550.54.15"] for g in gpus]
    assert all(r[4].isdigit() and r[5].isdigit() for r in rows)
    lines = testbed.ssh("gpu02", f"nvidia-smi --query-gpu={fields} --format=csv").stdout.decode().splitlines()
    assert lines[0] == ("index, name, uuid, memory.total [MiB], memory.used [MiB], utilization.gpu [%], "
                        "driver_version")
    assert re.fullmatch(r"0, NVIDIA A100-SXM4-40GB, GPU-[0-9a-f-]{36}, 40960 MiB, \d+ MiB, \d+ %, 550.54.15",
                        lines[1]) and len(lines) == 5
    out = testbed.ssh("gpu02", "nvidia-smi --query-gpu=memory.total,index --format=csv,noheader").stdout.decode()
    assert out.splitlines()[3] == "40960 MiB, 3"
    lst = testbed.ssh("airgap01", "nvidia-smi -L").stdout.decode().splitlines()
    assert lst == [f"GPU {g['index']}: NVIDIA A10 (UUID: {g['uuid']})" for g in testbed.hosts["airgap01"].gpus]
    bad = testbed.ssh("gpu01", "nvidia-smi --query-gpu=bogus --format=csv")
    assert bad.returncode == 2 and b'"bogus" is not a valid field' in bad.stderr


def test_nvidia_smi_shows_gpus_held_by_running_containers(testbed: Testbed, sample_on_hosts: str) -> None:
    query = "nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits"

    def used() -> list[tuple[int, int]]:
        out = testbed.ssh("airgap01", query).stdout.decode()
        return [(int(m), int(u)) for m, u in (line.split(", ") for line in out.splitlines())]

    before = used()
    name = f"testbed-hold-{uuid.uuid4().hex[:6]}"
    res = docker_cli(testbed, "airgap01", "run", "-d", "--name", name, "--gpus", '"device=1"',
                     "-e", "DEPLOYER_FAKE_GPU_MEMORY_MIB=5000", sample_on_hosts, "sleep")
    assert res.returncode == 0, res.stderr
    try:
        during = used()
    finally:
        docker_cli(testbed, "airgap01", "rm", "-f", name)
    assert during[0] == before[0]
    assert during[1][0] == min(23028, before[1][0] + 5000) and during[1][1] == 100
    assert used() == before


def test_cut_makes_a_host_unreachable_and_heal_brings_it_back(testbed: Testbed) -> None:
    try:
        testbed.cut("cpu01")
        t0 = time.monotonic()
        res = subprocess.run([*testbed.ssh_argv("cpu01", "true")[:-2], "-o", "ConnectTimeout=2",
                              *testbed.ssh_argv("cpu01", "true")[-2:]], check=False, capture_output=True, text=True, timeout=30)
        assert res.returncode == 255
        # Packets vanish: the client times out rather than being refused or reset.
        assert "timed out" in res.stderr and time.monotonic() - t0 >= 1.5
    finally:
        testbed.heal("cpu01")
    assert testbed.ssh("cpu01", "true").returncode == 0


def _push_seconds(tb: Testbed, host: str, nbytes: int) -> float:
    payload = os.urandom(nbytes)
    t0 = time.monotonic()
    res = tb.ssh(host, "cat > /dev/null", input=payload, timeout=60)
    assert res.returncode == 0, res.stderr
    return time.monotonic() - t0


def test_throttle_uplink_limits_throughput(testbed: Testbed) -> None:
    previous = net.throttled("uplink")  # a benchmark may have a limit in place: restore it afterwards
    nbytes = 5_000_000
    try:
        testbed.throttle("uplink", None)
        tx0 = testbed.uplink_bytes()[0]
        fast = _push_seconds(testbed, "gpu02", nbytes)
        assert testbed.uplink_bytes()[0] - tx0 >= nbytes, "SSH traffic must cross the uplink"
        testbed.throttle("uplink", "20mbit")
        slow = _push_seconds(testbed, "gpu02", nbytes)
    finally:
        testbed.throttle("uplink", previous)
    assert slow >= 1.5, f"5 MB at 20 mbit took only {slow:.2f}s"
    assert slow > 2 * fast, f"throttled {slow:.2f}s vs unthrottled {fast:.2f}s"


def test_flaky_resets_ssh_after_the_given_megabytes(testbed: Testbed) -> None:
    target = f"{testbed.hosts['cpu01'].staging_dir}/flaky-{uuid.uuid4().hex[:6]}"
    try:
        testbed.flaky("cpu01", 2)
        res = testbed.ssh("cpu01", f"mkdir -p $(dirname {target}); cat > {target}", input=os.urandom(8_000_000))
        assert res.returncode == 255
        assert testbed.ssh("cpu01", "true").returncode == 0, "a new small connection is still allowed"
    finally:
        testbed.flaky("cpu01", None)
    size = Path(target).stat().st_size
    Path(target).unlink()
    assert 1_000_000 < size < 2_500_000, f"reset after {size} bytes, expected about 2 MB"
    assert testbed.ssh("cpu01", "head -c 3000000 /dev/zero", timeout=30).returncode == 0


def test_tmpfs_fills_up(testbed: Testbed, tmp_path: Path) -> None:
    with testbed.tmpfs(tmp_path / "small", "1m") as mnt, pytest.raises(OSError, match="No space left"):
        (mnt / "big").write_bytes(b"x" * 2_000_000)
    assert not os.path.ismount(tmp_path / "small")
