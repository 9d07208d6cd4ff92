"""Unit tests of the testbed's pure parts and of the fake NVIDIA tools (run as scripts, no daemons)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.testbed import bed, daemons, docker28, inventory, net
from tests.testbed.config import HOSTS, Paths, gpu_uuid, host_spec, ws_store_from_env


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "state")


@pytest.fixture
def gpu01(paths: Paths) -> Path:
    """gpu01's host dir with its fake tools installed, exactly as `up` lays it out."""
    daemons.prepare_host_dirs(paths, host_spec("gpu01"))
    return paths.host("gpu01")


def smi(host_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(host_dir / "bin" / "nvidia-smi"), *args], check=False, capture_output=True, text=True, timeout=10)


def hook(host_dir: Path, tmp_path: Path, devices: str | None, pid: int) -> subprocess.CompletedProcess[str]:
    bundle = tmp_path / f"bundle-{pid}"
    bundle.mkdir(exist_ok=True)
    env = ["PATH=/bin"] + ([f"NVIDIA_VISIBLE_DEVICES={devices}"] if devices is not None else [])
    (bundle / "config.json").write_text(json.dumps({"process": {"env": env}}))
    state = json.dumps({"id": "c1", "pid": pid, "bundle": str(bundle)})
    return subprocess.run([str(host_dir / "bin" / "nvidia-container-runtime-hook"), "prestart"], check=False, input=state,
                          capture_output=True, text=True, timeout=10)


def test_inventory_describes_the_fleet(paths: Paths) -> None:
    doc = yaml.safe_load(inventory.render(paths))
    assert doc["all"]["vars"] == {"ansible_user": "root", "ansible_ssh_private_key_file": str(paths.key),
                                  "deploy_known_hosts": str(paths.known_hosts), "deploy_registry": "10.213.0.5:5000"}
    hosts = doc["all"]["hosts"]
    assert list(hosts) == ["gpu01", "gpu02", "airgap01", "cpu01", "airgap02", "airgap03"]
    assert hosts["gpu02"] == {"ansible_host": "10.213.0.12",
                              "deploy_staging_dir": str(paths.state / "hosts/gpu02/staging"),
                              "deploy_authorized_keys": str(paths.state / "hosts/gpu02/authorized_keys"),
                              "data_root": str(paths.state / "hosts/gpu02/data")}
    assert hosts["airgap01"]["deploy_via"] == "tarball"
    text = inventory.render(paths)
    assert "    gpu01:  # 2 x NVIDIA H100 80GB HBM3 (81559 MiB)\n      # Docker 28, containerd image store\n" in text
    assert "    cpu01:  # no GPU stack\n      # Docker 20.10, overlay2 image store\n" in text
    groups = {g: list(v["hosts"]) for g, v in doc["all"]["children"].items()}
    assert groups == {"gpus": ["gpu01", "gpu02", "airgap01"], "connected": ["gpu01", "gpu02", "cpu01"],
                      "airgapped": ["airgap01"], "cpu": ["cpu01"], "site": ["airgap01", "airgap02", "airgap03"]}


@pytest.mark.parametrize("rate, bits", [("20mbit", 20e6), ("500kbit", 500e3), ("1gbit", 1e9), ("2mbps", 16e6),
                                        ("400Mbit", 400e6)])
def test_rate_parsing(rate: str, bits: float) -> None:
    assert net.rate_bits(rate) == bits


@pytest.mark.parametrize("rate", ["fast", "20", "20 mbit", "-1mbit", ""])
def test_bad_rates_are_refused(rate: str) -> None:
    with pytest.raises(ValueError, match="bad rate"):
        net.rate_bits(rate)


def test_throttle_shapes_both_directions() -> None:
    assert net.shaped_devs("uplink") == [(None, "dtb-uplink"), ("dtb-site", "uplink")]
    assert net.shaped_devs("gpu02") == [("dtb-site", "v-gpu02"), ("gpu02", "eth0")]


def test_daemon_command_lines(paths: Paths) -> None:
    dockerd28 = f"{paths.state}/cache/docker28/usr/sbin/dockerd"
    ws = daemons.dockerd_argv(paths, "ws")
    assert ws[0] == dockerd28 and "--iptables=false" in ws and "--ip-forward=false" in ws
    assert ws[ws.index("--bridge") + 1] == "dtb-ws0"
    host = daemons.dockerd_argv(paths, "gpu01")
    assert host[:3] == ["nsenter", "--net=/run/netns/gpu01", dockerd28]
    assert host[host.index("-H") + 1] == f"unix://{paths.state}/hosts/gpu01/docker.sock"
    assert host[host.index("--insecure-registry") + 1] == "10.213.0.5:5000"
    assert "--iptables=false" not in host
    assert daemons.dockerd_argv(paths, "cpu01")[2] == "/usr/sbin/dockerd"  # bookworm's 20.10: the old-Docker lane


@pytest.mark.parametrize("name, docker, store", [("gpu01", "28", "containerd"), ("airgap01", "28", "containerd"),
                                                 ("gpu02", "28", "overlay2"), ("cpu01", "20.10", "overlay2")])
def test_each_host_runs_its_docker_on_its_store(paths: Paths, name: str, docker: str, store: str) -> None:
    assert (host_spec(name).docker, host_spec(name).store) == (docker, store)
    argv = daemons.dockerd_argv(paths, name)
    cfg = daemons.daemon_config(paths, name)
    if docker == "20.10":
        assert cfg == {"deprecated-key-path": f"{paths.state}/hosts/{name}/key.json"}
    else:
        assert cfg == {"features": {"containerd-snapshotter": store == "containerd"}}
    # the containerd store has no graph driver: its snapshotter (overlayfs) holds the images
    assert ("--storage-driver" in argv) == (store == "overlay2")
    path = daemons.dockerd_path(paths, name, host_spec(name).docker).split(":")
    own = f"{paths.state}/hosts/{name}/bin"
    extracted = [f"{paths.state}/cache/docker28/usr/bin", f"{paths.state}/cache/docker28/usr/sbin"]
    assert path[:3] == ([*extracted, own] if docker == "28" else [own, "/usr/local/sbin", "/usr/local/bin"])


def test_ws_store_has_its_own_data_root(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    for store, root in (("overlay2", "docker"), ("containerd", "docker-containerd")):
        argv = daemons.dockerd_argv(paths, "ws", store)  # type: ignore[arg-type]
        assert argv[argv.index("--data-root") + 1] == f"{paths.state}/ws/{root}"
        assert ("--storage-driver" in argv) == (store == "overlay2")
        assert daemons.daemon_config(paths, "ws", store) == {  # type: ignore[arg-type]
            "features": {"containerd-snapshotter": store == "containerd"}}
    monkeypatch.delenv("DEPLOYER_TESTBED_WS_STORE", raising=False)
    assert ws_store_from_env() == "overlay2"
    monkeypatch.setenv("DEPLOYER_TESTBED_WS_STORE", "containerd")
    assert ws_store_from_env() == "containerd"
    monkeypatch.setenv("DEPLOYER_TESTBED_WS_STORE", "zfs")
    with pytest.raises(ValueError, match="overlay2, containerd"):
        ws_store_from_env()


def test_store_is_read_from_docker_info() -> None:
    assert daemons.store_of({"Driver": "overlayfs",
                             "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}) == "containerd"
    assert daemons.store_of({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}) == "overlay2"


def test_private_apt_config_keeps_the_system_apt_state_untouched(tmp_path: Path) -> None:
    opts = docker28.apt_options(tmp_path)
    values = dict(o.split("=", 1) for o in opts[1::2])
    for key in ("Dir::Etc", "Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::State::Lists", "Dir::Cache"):
        assert values[key].startswith(str(tmp_path)), key
    assert values["Debug::NoLocking"] == "1"
    policy = "docker.io:\n  Installed: 20.10.24\n  Candidate: 28.5.3+dfsg1-1\n  Version table:\n"
    assert docker28.candidate(policy) == "28.5.3+dfsg1-1"
    assert docker28.candidate("x:\n  Candidate: (none)\n") is None
    madison = (" docker.io | 28.5.2+dfsg4-5 | http://deb.debian.org/debian unstable/main amd64 Packages\n"
               " docker.io | 28.5.3+dfsg1-1 | http://deb.debian.org/debian unstable/main amd64 Packages\n")
    assert docker28.offered(madison) == {"28.5.2+dfsg4-5", "28.5.3+dfsg1-1"}


def test_buildx_plugin_is_exposed_through_the_workstations_docker_config(paths: Paths) -> None:
    assert docker28.buildx_version(paths) is None  # nothing fetched yet
    plugin = docker28.buildx_plugin(paths)
    plugin.parent.mkdir(parents=True)
    plugin.write_text("#!/bin/sh\n")
    (paths.buildx / docker28.STAMP).write_text(json.dumps({"pin": list(docker28.BUILDX_PIN), "got": "0.29.9"}))
    assert docker28.buildx_version(paths) == "0.29.9"
    config = docker28.expose_buildx(paths)
    assert config == paths.ws_docker_config
    link = config / "cli-plugins" / "docker-buildx"
    assert link.is_symlink() and link.resolve() == plugin.resolve()
    docker28.expose_buildx(paths)  # idempotent
    assert link.resolve() == plugin.resolve()
    assert f"export DOCKER_CONFIG={paths.ws_docker_config}" in "\n".join(bed.env_lines(paths))
    (paths.buildx / docker28.STAMP).write_text(json.dumps({"pin": ["docker-buildx", "0.1"], "got": "0.1"}))
    assert docker28.buildx_version(paths) is None  # another pin: fetched again by the next `up`


def test_down_ends_only_the_testbeds_processes(paths: Paths) -> None:
    state = paths.state
    procs = {
        100: (1, ["/x/dockerd", "--pidfile", f"{state}/ws/docker.pid", "-H", "unix://..."]),  # recorded
        101: (100, ["containerd", "--config", f"{state}/ws/run/containerd/containerd.toml"]),
        # a shim of gpu01's containerd whose dockerd died: found by its exact -address, with its container
        200: (1, ["containerd-shim-runc-v2", "-namespace", "moby", "-id", "c1", "-address",
                  f"{state}/hosts/gpu01/run/containerd/containerd.sock"]),
        201: (200, ["sleep", "100"]),
        # an orphaned containerd of cpu01 (20.10 names it the same way)
        300: (1, ["containerd", "--config", f"{state}/hosts/cpu01/run/containerd/containerd.toml"]),
        400: (1, ["/usr/sbin/sshd", "-D"]),   # in our namespace (a root given by `ip netns pids`)
        401: (400, ["bash"]),
        # not ours, though they mention the state dir
        500: (1, ["tail", "-f", f"{state}/logs/dockerd-ws.log"]),
        501: (1, ["vim", f"{state}/hosts/gpu01/daemon.json"]),
        502: (1, ["grep", "-address", f"{state}/hosts/gpu01/run/containerd/containerd.sock.bak"]),
        503: (1, ["containerd-shim-runc-v2", "-address", "/run/containerd/containerd.sock"]),  # the system's
    }
    got = daemons.select_ours(procs, {100, 400, 999}, daemons.own_flags(paths))
    assert got == {100, 101, 200, 201, 300, 400, 401}


def test_every_dockerd_trusts_both_registries(paths: Paths) -> None:
    for name in ("ws", *(h.name for h in HOSTS)):
        argv = daemons.dockerd_argv(paths, name)
        insecure = [argv[i + 1] for i, a in enumerate(argv) if a == "--insecure-registry"]
        assert insecure == ["10.213.0.5:5000", "10.213.0.5:5001"], name


def test_registry_configs(paths: Paths) -> None:
    plain = yaml.safe_load(daemons.registry_config(paths.registry, 5000))
    assert plain["http"] == {"addr": "10.213.0.5:5000"} and "auth" not in plain
    assert plain["storage"]["filesystem"]["rootdirectory"] == str(paths.state / "registry" / "data")
    htpasswd = paths.registry_auth / "htpasswd"
    auth = yaml.safe_load(daemons.registry_config(paths.registry_auth, 5001, htpasswd))
    assert auth["http"] == {"addr": "10.213.0.5:5001"}
    assert auth["storage"]["filesystem"]["rootdirectory"] == str(paths.state / "registry-auth" / "data")
    assert auth["auth"] == {"htpasswd": {"realm": "deployer-testbed", "path": str(htpasswd)}}
    assert "registry-auth" in bed.components()


def test_htpasswd_is_bcrypt_and_checks_the_password(tmp_path: Path) -> None:
    hashed = daemons.bcrypt_hash("s3cret")
    assert hashed.startswith("$2b$04$") and len(hashed) == 60  # cost 4: checked on every registry request
    f = tmp_path / "htpasswd"
    daemons.write_private(f, f"alice:{hashed}\n")
    assert daemons.htpasswd_matches(f, "alice", "s3cret")
    assert not daemons.htpasswd_matches(f, "alice", "other")
    assert not daemons.htpasswd_matches(f, "bob", "s3cret")
    assert not daemons.htpasswd_matches(tmp_path / "absent", "alice", "s3cret")


def test_private_files_are_0600_and_rewritten_only_on_change(tmp_path: Path) -> None:
    f = tmp_path / "creds.json"
    f.write_text("old and longer\n")
    f.chmod(0o644)
    daemons.write_private(f, "new\n")
    assert f.read_text() == "new\n" and f.stat().st_mode & 0o777 == 0o600
    before = f.stat().st_mtime_ns
    daemons.write_private(f, "new\n")
    assert f.stat().st_mtime_ns == before


def test_sshd_config_is_key_only_and_sets_the_session_env(paths: Paths) -> None:
    cfg = daemons.sshd_config(paths, "gpu02")
    for line in ("PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
                 "PermitRootLogin prohibit-password",
                 f"AuthorizedKeysFile {paths.authorized_keys} {paths.host('gpu02') / 'authorized_keys'}"):
        assert line in cfg.splitlines()
    setenv = next(line for line in cfg.splitlines() if line.startswith("SetEnv "))
    assert f"DOCKER_HOST=unix://{paths.state}/hosts/gpu02/docker.sock" in setenv
    assert f"PATH={paths.state}/hosts/gpu02/bin:{paths.state}/cache/docker28/usr/bin:/usr/local/sbin:" in setenv
    assert f"PATH={paths.state}/hosts/cpu01/bin:/usr/local/sbin:" in daemons.sshd_config(paths, "cpu01")
    assert f"DOCKER_CONFIG={paths.state}/hosts/gpu02/docker-config" in setenv.split()
    assert f"HOME={paths.state}/hosts/gpu02/home" in setenv.split()  # its own, not this machine's /root


def test_cpu_host_gets_no_nvidia_tools(paths: Paths) -> None:
    daemons.prepare_host_dirs(paths, host_spec("cpu01"))
    assert list((paths.host("cpu01") / "bin").iterdir()) == []


def test_uuids_are_stable_and_distinct() -> None:
    uuids = {gpu_uuid(h.name, i) for h in HOSTS if h.gpu for i in range(h.gpu.count)}
    assert len(uuids) == sum(h.gpu.count for h in HOSTS if h.gpu) == 12
    assert gpu_uuid("gpu01", 0) == gpu_uuid("gpu01", 0)
    assert gpu_uuid("gpu01", 0).startswith("GPU-") and len(gpu_uuid("gpu01", 0)) == 40


def test_smi_list_and_queries(gpu01: Path) -> None:
    u0, u1 = gpu_uuid("gpu01", 0), gpu_uuid("gpu01", 1)
    assert smi(gpu01, "-L").stdout == (f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {u0})\n"
                                       f"GPU 1: NVIDIA H100 80GB HBM3 (UUID: {u1})\n")
    fields = "--query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,driver_version"
    assert smi(gpu01, fields, "--format=csv,noheader,nounits").stdout == (
        f"0, NVIDIA H100 80GB HBM3, {u0}, 81559, 0, 0, 550.54.15\n"
        f"1, NVIDIA H100 80GB HBM3, {u1}, 81559, 0, 0, 550.54.15\n")
    assert smi(gpu01, fields, "--format=csv").stdout.splitlines()[0] == (
        "index, name, uuid, memory.total [MiB], memory.used [MiB], utilization.gpu [%], driver_version")
    assert smi(gpu01, "--query-gpu=utilization.gpu,memory.free", "--format=csv,noheader").stdout == (
        "0 %, 81559 MiB\n0 %, 81559 MiB\n")
    assert smi(gpu01, "--query-gpu=index", "--format=csv,nounits", "-i", "1").stdout == "index\n1\n"
    assert "NVIDIA H100 80GB HBM3" in smi(gpu01).stdout


def test_smi_refuses_bad_fields_and_missing_format(gpu01: Path) -> None:
    bad = smi(gpu01, "--query-gpu=index,bogus", "--format=csv")
    assert bad.returncode == 2 and 'Field "bogus" is not a valid field to query.' in bad.stderr
    assert smi(gpu01, "--query-gpu=index").returncode == 2


@pytest.mark.parametrize("devices, error", [("2", "2"), ("0,5", "5"), ("GPU-nope", "GPU-nope")])
def test_hook_rejects_devices_the_host_lacks(gpu01: Path, tmp_path: Path, devices: str, error: str) -> None:
    res = hook(gpu01, tmp_path, devices, 1)
    assert res.returncode == 1
    assert res.stderr == f"nvidia-container-cli: device error: {error}: unknown device\n"


@pytest.mark.parametrize("devices", ["all", "0,1", "1", gpu_uuid("gpu01", 1), "void", None])
def test_hook_accepts_devices_the_host_has(gpu01: Path, tmp_path: Path, devices: str | None) -> None:
    assert hook(gpu01, tmp_path, devices, 1).returncode == 0


def test_held_gpus_show_usage_until_the_process_exits(gpu01: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert hook(gpu01, tmp_path, "1", proc.pid).returncode == 0
        query = ("--query-gpu=index,memory.used,utilization.gpu", "--format=csv,noheader,nounits")
        assert smi(gpu01, *query).stdout == f"0, 0, 0\n1, {81559 // 4}, 100\n"
        apps = smi(gpu01, "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader").stdout
        assert apps == f"{proc.pid}, {gpu_uuid('gpu01', 1)}\n"
    finally:
        proc.kill()
        proc.wait()
    assert smi(gpu01, *query).stdout == "0, 0, 0\n1, 0, 0\n"
    assert list((gpu01 / "gpu-holders").glob("*.json")) == []
