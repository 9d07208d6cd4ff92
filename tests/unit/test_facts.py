"""Unit tests for the facts probe: argv shape and parsing of real captured outputs."""
from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess

import pytest
from loopback import serving

from deployer.commands.facts import (
    PROBE_SCRIPT,
    Gpu,
    image_store,
    parse_df,
    parse_nvidia_smi,
    parse_probe,
    parse_registry,
    probe_argv,
    split_sections,
)
from deployer.errors import CommandError
from deployer.facts import gather
from deployer.inventory.host import Host
from deployer.transport.fake import FakeSession

# Captured from the testbed (docker 20.10.24 on overlay2, fake nvidia-smi), verbatim.
GPU01 = '\n@@deployer arch\nx86_64\n\n@@rc 0\n\n@@deployer docker_version\n{"Client":{"Version":"28.2.2","ApiVersion":"1.41","DefaultAPIVersion":"1.50","GitCommit":"e6534b4","GoVersion":"go1.24.3","Os":"linux","Arch":"amd64","BuildTime":"Fri May 30 12:07:14 2025","Context":"default"},"Server":{"Platform":{"Name":""},"Components":[{"Name":"Engine","Version":"20.10.24+dfsg1","Details":{"ApiVersion":"1.41","Arch":"amd64","BuildTime":"Thu May  7 21:09:36 2026","Experimental":"false","GitCommit":"5d6db84","GoVersion":"go1.19.8","KernelVersion":"6.18.44-fc-v669","MinAPIVersion":"1.12","Os":"linux"}},{"Name":"containerd","Version":"1.6.20~ds1","Details":{"GitCommit":"1.6.20~ds1-1+deb12u3"}},{"Name":"runc","Version":"1.1.5+ds1","Details":{"GitCommit":"1.1.5+ds1-1+deb12u1"}},{"Name":"docker-init","Version":"0.19.0","Details":{"GitCommit":""}}],"Version":"20.10.24+dfsg1","ApiVersion":"1.41","MinAPIVersion":"1.12","GitCommit":"5d6db84","GoVersion":"go1.19.8","Os":"linux","Arch":"amd64","KernelVersion":"6.18.44-fc-v669","BuildTime":"2026-05-07T21:09:36.000000000+00:00"}}\n\n@@rc 0\n\n@@deployer docker_info\n{"ID":"ZLKM:UU3J:EIBL:VEZ6:ZTDL:DJOZ:LW5M:HNEM:UD2D:RAQH:6ZPY:2YZH","Containers":0,"ContainersRunning":0,"ContainersPaused":0,"ContainersStopped":0,"Images":1,"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"],["Supports d_type","true"],["Native Overlay Diff","true"],["userxattr","false"]],"Plugins":{"Volume":["local"],"Network":["bridge","host","ipvlan","macvlan","null","overlay"],"Authorization":null,"Log":["awslogs","fluentd","gcplogs","gelf","journald","json-file","local","logentries","splunk","syslog"]},"MemoryLimit":true,"SwapLimit":true,"KernelMemory":true,"KernelMemoryTCP":true,"CpuCfsPeriod":true,"CpuCfsQuota":true,"CPUShares":true,"CPUSet":true,"PidsLimit":true,"IPv4Forwarding":true,"Debug":false,"NFd":27,"OomKillDisable":true,"NGoroutines":40,"SystemTime":"2026-11-29T18:58:50.644686853Z","LoggingDriver":"json-file","CgroupDriver":"cgroupfs","CgroupVersion":"1","NEventsListener":0,"KernelVersion":"6.18.44-fc-v669","OperatingSystem":"Debian GNU/Linux 12 (bookworm)","OSVersion":"12","OSType":"linux","Architecture":"x86_64","IndexServerAddress":"https://index.docker.io/v1/","RegistryConfig":{"IndexConfigs":{"10.213.0.5:5000":{"Mirrors":[],"Name":"10.213.0.5:5000","Official":false,"Secure":false},"docker.io":{"Mirrors":[],"Name":"docker.io","Official":true,"Secure":true}},"InsecureRegistryCIDRs":["127.0.0.0/8"],"Mirrors":[]},"NCPU":2,"MemTotal":25276502016,"GenericResources":null,"DockerRootDir":"/tmp/deployer-testbed/hosts/gpu01/docker","HttpProxy":"","HttpsProxy":"","NoProxy":"","Name":"vm","Labels":[],"ExperimentalBuild":false,"ServerVersion":"20.10.24+dfsg1","Runtimes":{"io.containerd.runc.v2":{"path":"runc"},"io.containerd.runtime.v1.linux":{"path":"runc"},"runc":{"path":"runc"}},"DefaultRuntime":"runc","Swarm":{"NodeID":"","NodeAddr":"","LocalNodeState":"inactive","ControlAvailable":false,"Error":"","RemoteManagers":null},"LiveRestoreEnabled":false,"Isolation":"","InitBinary":"docker-init","ContainerdCommit":{"ID":"1.6.20~ds1-1+deb12u3","Expected":"1.6.20~ds1-1+deb12u3"},"RuncCommit":{"ID":"1.1.5+ds1-1+deb12u1","Expected":"1.1.5+ds1-1+deb12u1"},"InitCommit":{"ID":""},"SecurityOptions":["name=seccomp,profile=default"],"CDISpecDirs":null,"Warnings":null,"ClientInfo":{"Debug":false,"Version":"28.2.2","DefaultAPIVersion":"1.50","GitCommit":"e6534b4","GoVersion":"go1.24.3","Os":"linux","Arch":"amd64","BuildTime":"Fri May 30 12:07:14 2025","Context":"default","Plugins":[],"Warnings":null}}\n\n@@rc 0\n\n@@deployer gpu_tools\nnvidia-container-runtime-hook /tmp/deployer-testbed/hosts/gpu01/bin/nvidia-container-runtime-hook\n\n@@rc 0\n\n@@deployer nvidia_smi\n0, NVIDIA H100 80GB HBM3, GPU-78272219-c87d-ddaa-6f41-d26c03d22222, 81559, 0, 0, 550.54.15\n1, NVIDIA H100 80GB HBM3, GPU-ee567916-58f5-8130-40e3-ba7c9aa3acdc, 81559, 0, 0, 550.54.15\n\n@@rc 0\n\n@@deployer df_staging\nFilesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         264212084 23377408  83013504      22% /\n\n@@rc 0\n\n@@deployer df_docker\nFilesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         264212084 23377408  83013504      22% /tmp/deployer-testbed/hosts/gpu01/docker\n\n@@rc 0\n\n@@deployer decompressors\nzstd\nunpigz\npigz\ngzip\nxz\nbzip2\n\n@@rc 0\n\n@@deployer registry\ncurl 0 200\n\n@@rc 0\n'

AIRGAP01 = '\n@@deployer arch\nx86_64\n\n@@rc 0\n\n@@deployer docker_version\n{"Client":{"Version":"28.2.2","ApiVersion":"1.41","DefaultAPIVersion":"1.50","GitCommit":"e6534b4","GoVersion":"go1.24.3","Os":"linux","Arch":"amd64","BuildTime":"Fri May 30 12:07:14 2025","Context":"default"},"Server":{"Platform":{"Name":""},"Components":[{"Name":"Engine","Version":"20.10.24+dfsg1","Details":{"ApiVersion":"1.41","Arch":"amd64","BuildTime":"Thu May  7 21:09:36 2026","Experimental":"false","GitCommit":"5d6db84","GoVersion":"go1.19.8","KernelVersion":"6.18.44-fc-v669","MinAPIVersion":"1.12","Os":"linux"}},{"Name":"containerd","Version":"1.6.20~ds1","Details":{"GitCommit":"1.6.20~ds1-1+deb12u3"}},{"Name":"runc","Version":"1.1.5+ds1","Details":{"GitCommit":"1.1.5+ds1-1+deb12u1"}},{"Name":"docker-init","Version":"0.19.0","Details":{"GitCommit":""}}],"Version":"20.10.24+dfsg1","ApiVersion":"1.41","MinAPIVersion":"1.12","GitCommit":"5d6db84","GoVersion":"go1.19.8","Os":"linux","Arch":"amd64","KernelVersion":"6.18.44-fc-v669","BuildTime":"2026-05-07T21:09:36.000000000+00:00"}}\n\n@@rc 0\n\n@@deployer docker_info\n{"ID":"ZLKM:UU3J:EIBL:VEZ6:ZTDL:DJOZ:LW5M:HNEM:UD2D:RAQH:6ZPY:2YZH","Containers":0,"ContainersRunning":0,"ContainersPaused":0,"ContainersStopped":0,"Images":0,"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"],["Supports d_type","true"],["Native Overlay Diff","true"],["userxattr","false"]],"Plugins":{"Volume":["local"],"Network":["bridge","host","ipvlan","macvlan","null","overlay"],"Authorization":null,"Log":["awslogs","fluentd","gcplogs","gelf","journald","json-file","local","logentries","splunk","syslog"]},"MemoryLimit":true,"SwapLimit":true,"KernelMemory":true,"KernelMemoryTCP":true,"CpuCfsPeriod":true,"CpuCfsQuota":true,"CPUShares":true,"CPUSet":true,"PidsLimit":true,"IPv4Forwarding":true,"Debug":false,"NFd":24,"OomKillDisable":true,"NGoroutines":39,"SystemTime":"2026-11-29T18:58:50.928035942Z","LoggingDriver":"json-file","CgroupDriver":"cgroupfs","CgroupVersion":"1","NEventsListener":0,"KernelVersion":"6.18.44-fc-v669","OperatingSystem":"Debian GNU/Linux 12 (bookworm)","OSVersion":"12","OSType":"linux","Architecture":"x86_64","IndexServerAddress":"https://index.docker.io/v1/","RegistryConfig":{"IndexConfigs":{"10.213.0.5:5000":{"Mirrors":[],"Name":"10.213.0.5:5000","Official":false,"Secure":false},"docker.io":{"Mirrors":[],"Name":"docker.io","Official":true,"Secure":true}},"InsecureRegistryCIDRs":["127.0.0.0/8"],"Mirrors":[]},"NCPU":2,"MemTotal":25276502016,"GenericResources":null,"DockerRootDir":"/tmp/deployer-testbed/hosts/airgap01/docker","HttpProxy":"","HttpsProxy":"","NoProxy":"","Name":"vm","Labels":[],"ExperimentalBuild":false,"ServerVersion":"20.10.24+dfsg1","Runtimes":{"io.containerd.runc.v2":{"path":"runc"},"io.containerd.runtime.v1.linux":{"path":"runc"},"runc":{"path":"runc"}},"DefaultRuntime":"runc","Swarm":{"NodeID":"","NodeAddr":"","LocalNodeState":"inactive","ControlAvailable":false,"Error":"","RemoteManagers":null},"LiveRestoreEnabled":false,"Isolation":"","InitBinary":"docker-init","ContainerdCommit":{"ID":"1.6.20~ds1-1+deb12u3","Expected":"1.6.20~ds1-1+deb12u3"},"RuncCommit":{"ID":"1.1.5+ds1-1+deb12u1","Expected":"1.1.5+ds1-1+deb12u1"},"InitCommit":{"ID":""},"SecurityOptions":["name=seccomp,profile=default"],"CDISpecDirs":null,"Warnings":null,"ClientInfo":{"Debug":false,"Version":"28.2.2","DefaultAPIVersion":"1.50","GitCommit":"e6534b4","GoVersion":"go1.24.3","Os":"linux","Arch":"amd64","BuildTime":"Fri May 30 12:07:14 2025","Context":"default","Plugins":[],"Warnings":null}}\n\n@@rc 0\n\n@@deployer gpu_tools\nnvidia-container-runtime-hook /tmp/deployer-testbed/hosts/airgap01/bin/nvidia-container-runtime-hook\n\n@@rc 0\n\n@@deployer nvidia_smi\n0, NVIDIA A10, GPU-efca44ce-4983-9779-32ea-28c991ca94fa, 23028, 0, 0, 550.54.15\n1, NVIDIA A10, GPU-20c4e2a3-ff1e-9f4a-6134-b723c6ea1176, 23028, 0, 0, 550.54.15\n\n@@rc 0\n\n@@deployer df_staging\nFilesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         264212084 23377416  83013496      22% /\n\n@@rc 0\n\n@@deployer df_docker\nFilesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         264212084 23377416  83013496      22% /tmp/deployer-testbed/hosts/airgap01/docker\n\n@@rc 0\n\n@@deployer decompressors\nzstd\nunpigz\npigz\ngzip\nxz\nbzip2\n\n@@rc 0\n\n@@deployer registry\ncurl 7 curl: (7) Failed to connect to 10.213.0.5 port 5000 after 0 ms: Couldn\'t connect to server\n000\n\n@@rc 0\n'

# deploy_docker set to a missing command: docker sections fail with 127.
NO_DOCKER = '\n@@deployer arch\nx86_64\n\n@@rc 0\n\n@@deployer docker_version\nsh: 6: nodocker: not found\n\n@@rc 127\n\n@@deployer docker_info\nsh: 7: nodocker: not found\n\n@@rc 127\n\n@@deployer gpu_tools\n\n@@rc 0\n\n@@deployer nvidia_smi\nnvidia-smi: not found\n\n@@rc 127\n\n@@deployer df_staging\nFilesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         264212084 23377424  83013488      22% /\n\n@@rc 0\n\n@@deployer df_docker\ndocker root unknown\n\n@@rc 1\n\n@@deployer decompressors\nzstd\nunpigz\npigz\ngzip\nxz\nbzip2\n\n@@rc 0\n\n@@deployer registry\ncurl 0 200\n\n@@rc 0\n'


def host(**vars: object) -> Host:
    return Host("gpu01", {"ansible_host": "10.0.0.1", **vars})


def test_probe_argv_passes_every_variable_part_as_a_positional_argument() -> None:
    h = host(deploy_staging_dir="/srv/stage; rm -rf /", deploy_registry="reg:5000", deploy_docker="sudo -n docker")
    argv = probe_argv(h)
    assert argv == ("sh", "-c", PROBE_SCRIPT, "sh", "/srv/stage; rm -rf /", "reg:5000", "gpus", "", "version", "sudo", "-n",
                    "docker")
    assert "rm -rf" not in argv[2]


def test_probe_argv_defaults() -> None:
    assert probe_argv(Host("h"))[3:] == ("sh", "/var/tmp/deployer", "", "gpus", "", "version", "docker")
    assert probe_argv(Host("h"), gpus=False, origin="r:1", versions=False)[3:] == (
        "sh", "/var/tmp/deployer", "", "", "r:1", "", "docker")


def test_probe_script_is_valid_posix_sh() -> None:
    subprocess.run(["sh", "-n", "-c", PROBE_SCRIPT], check=True)


@pytest.mark.parametrize("gpus,versions", [(True, True), (False, True), (False, False)])
def test_probe_script_runs_locally_with_a_fake_docker(tmp_path, gpus: bool, versions: bool) -> None:
    fake = tmp_path / "fakedocker"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$1" >> "$FAKEROOT/calls"\n'
        'case "$1 $3" in\n'
        '  "version {{json .}}") echo \'{"Client":{"Version":"28.2.2"},"Server":{"Version":"24.0.7","ApiVersion":"1.43"}}\';;\n'
        '  "info {{json .}}") printf %s \'{"Driver":"overlay2","DockerRootDir":"\'"$FAKEROOT"\'","Runtimes":{"nvidia":{}},\'\n'
        '    echo \'"ServerVersion":"24.0.7","ClientInfo":{"Version":"28.2.2"}}\';;\n'
        '  *) echo "$@" >> "$FAKEROOT/unexpected"; exit 1;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho smi >> "$FAKEROOT/calls"\necho "0, NVIDIA A10, GPU-1, 23028, 5, 0, 550.54.15"\n')
    smi.chmod(0o755)
    h = Host("local", {"deploy_staging_dir": str(tmp_path / "not" / "yet"), "deploy_docker": str(fake)})
    argv = probe_argv(h, gpus=gpus, versions=versions)
    out = subprocess.run(list(argv), capture_output=True, text=True, check=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKEROOT": str(tmp_path)}).stdout
    facts = parse_probe(out)
    assert facts.docker is not None
    # without `docker version` (a ship's probe) the API version is unknown, the rest the same
    assert (facts.docker.server_version, facts.docker.api_version) == ("24.0.7", "1.43" if versions else "")
    assert facts.docker.gpu_runtime is True  # "nvidia" in Runtimes
    assert facts.docker.docker_root == str(tmp_path)
    assert facts.disk_free_bytes and facts.disk_free_bytes > 0  # measured at the nearest existing parent
    assert facts.docker_disk_free_bytes and facts.docker_disk_free_bytes > 0  # df of the root from info's JSON
    assert facts.registry_reachable is None and facts.registry_detail == "none"
    assert facts.client_version == "28.2.2"
    # docker is asked once for its version (if asked) and once for its info; nvidia-smi only when GPUs are wanted
    calls = (tmp_path / "calls").read_text().split()
    assert calls == ["version"] * versions + ["info"] + ["smi"] * gpus
    assert not (tmp_path / "unexpected").exists()
    assert [g.name for g in facts.gpus] == (["NVIDIA A10"] if gpus else [])


def test_parse_probe_gpu_host() -> None:
    f = parse_probe(GPU01)
    assert f.docker is not None
    assert f.docker.server_version == "20.10.24+dfsg1"
    assert f.docker.api_version == "1.41"
    assert f.docker.storage_driver == "overlay2"
    assert f.docker.image_store == "overlay2"
    assert f.docker.docker_root == "/tmp/deployer-testbed/hosts/gpu01/docker"
    assert f.docker.gpu_runtime is True
    assert f.docker.engine_id == "ZLKM:UU3J:EIBL:VEZ6:ZTDL:DJOZ:LW5M:HNEM:UD2D:RAQH:6ZPY:2YZH"
    assert f.gpu_tools == ("nvidia-container-runtime-hook",)
    assert f.gpus == (
        Gpu(0, "NVIDIA H100 80GB HBM3", "GPU-78272219-c87d-ddaa-6f41-d26c03d22222", 81559, 0, 0, "550.54.15"),
        Gpu(1, "NVIDIA H100 80GB HBM3", "GPU-ee567916-58f5-8130-40e3-ba7c9aa3acdc", 81559, 0, 0, "550.54.15"),
    )
    assert f.registry_reachable is True and f.registry_detail == "curl: HTTP 200"
    assert f.decompressors == frozenset({"zstd", "unpigz", "pigz", "gzip", "xz", "bzip2"})
    assert f.arch == "x86_64"
    assert f.disk_free_bytes == 83013504 * 1024
    assert f.docker_error is None and f.gpu_error is None


def test_parse_probe_airgapped_host_cannot_reach_registry() -> None:
    f = parse_probe(AIRGAP01)
    assert f.registry_reachable is False
    assert f.registry_detail.startswith("curl: (7) Failed to connect to 10.213.0.5 port 5000")
    assert [g.name for g in f.gpus] == ["NVIDIA A10", "NVIDIA A10"]


def test_parse_probe_without_docker_and_gpus() -> None:
    f = parse_probe(NO_DOCKER)
    assert f.docker is None
    assert f.docker_error and "not installed" in f.docker_error and "nodocker: not found" in f.docker_error
    assert f.gpus == () and f.gpu_error == "nvidia-smi: not found"
    assert f.docker_disk_free_bytes is None
    assert f.disk_free_bytes == 83013488 * 1024


def test_parse_probe_docker_daemon_down_keeps_client_version() -> None:
    out = (
        "@@deployer docker_version\n"
        '{"Client":{"Version":"24.0.5","ApiVersion":"1.43"},"Server":null}\n'
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n"
        "@@rc 1\n@@deployer docker_info\n"
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n@@rc 1\n"
    )
    f = parse_probe(out)
    assert f.docker is None and f.client_version == "24.0.5"
    assert f.docker_error == "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"


def test_parse_probe_truncated_output_is_tolerated() -> None:
    f = parse_probe(GPU01[: GPU01.index("@@deployer nvidia_smi") + 40])
    assert f.docker is not None and f.gpus == () and f.registry_reachable is None


def test_split_sections() -> None:
    assert split_sections("junk\n@@deployer a\nx\ny\n@@rc 3\n@@deployer b\n@@rc 0\n") == {"a": ("x\ny", 3), "b": ("", 0)}


def test_image_store_detects_containerd_snapshotter() -> None:
    info = {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
    assert image_store(info) == "containerd"
    assert image_store({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}) == "overlay2"
    assert image_store({}) == "unknown"


def test_containerd_store_in_probe() -> None:
    info = {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
            "DockerRootDir": "/var/lib/docker", "Runtimes": {"runc": {}}}
    out = (
        "@@deployer docker_version\n" + json.dumps({"Server": {"Version": "29.0.1", "ApiVersion": "1.52"}})
        + "\n@@rc 0\n@@deployer docker_info\n" + json.dumps(info) + "\n@@rc 0\n"
    )
    f = parse_probe(out)
    assert f.docker is not None
    assert (f.docker.image_store, f.docker.storage_driver, f.docker.gpu_runtime) == ("containerd", "overlayfs", False)


@pytest.mark.parametrize(
    "text",
    [
        # header and units, as nvidia-smi prints without noheader,nounits
        (
            "index, name, uuid, memory.total [MiB], memory.used [MiB], utilization.gpu [%], driver_version\n"
            "0, NVIDIA A100-SXM4-40GB, GPU-5841f353-60f8-4f11-0bd3-c4c70b97aed2, 40960 MiB, 1024 MiB, 37 %, 550.54.15\n"
        ),
        # noheader,nounits
        "0, NVIDIA A100-SXM4-40GB, GPU-5841f353-60f8-4f11-0bd3-c4c70b97aed2, 40960, 1024, 37, 550.54.15\n",
    ],
)
def test_parse_nvidia_smi_tolerates_headers_and_units(text: str) -> None:
    assert parse_nvidia_smi(text) == (
        Gpu(0, "NVIDIA A100-SXM4-40GB", "GPU-5841f353-60f8-4f11-0bd3-c4c70b97aed2", 40960, 1024, 37, "550.54.15"),
    )


def test_parse_nvidia_smi_not_supported_fields_and_errors() -> None:
    text = "0, Tesla T4, GPU-1, 15360, [N/A], [Not Supported], 535.1\nNVIDIA-SMI has failed because it couldn't communicate\n"
    assert parse_nvidia_smi(text) == (Gpu(0, "Tesla T4", "GPU-1", 15360, None, None, "535.1"),)
    assert parse_nvidia_smi("0, A, GPU-x, 100") == (Gpu(0, "A", "GPU-x", 100),)
    assert parse_nvidia_smi("") == ()


def test_parse_df() -> None:
    assert parse_df("Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100 40 60 40% /\n") == 60 * 1024
    assert parse_df("df: /nope: No such file or directory") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("curl 0 200", (True, "curl: HTTP 200")),
        ("curl 0 401", (True, "curl: HTTP 401")),
        ("curl 28 curl: (28) Connection timed out after 3001 milliseconds\n000", (False, "curl: (28) Connection timed out after 3001 milliseconds")),
        ("wget 0", (True, "wget: exit 0")),
        ("wget 8", (True, "wget: exit 8")),
        ("wget 4 wget: unable to connect", (False, "wget: exit 4 wget: unable to connect")),
        ("bash 0", (True, "bash: connected")),
        ("python3 1", (False, "python3: cannot connect")),
        ("unknown", (None, "unknown")),
        ("none", (None, "none")),
        ("", (None, "unknown")),
    ],
)
def test_parse_registry(text: str, expected: tuple[bool | None, str]) -> None:
    assert parse_registry(text) == expected


def test_gather_runs_the_probe_once_through_the_session() -> None:
    h = host(deploy_registry="10.213.0.5:5000")
    fake = FakeSession("gpu01").on(probe_argv(h), stdout=GPU01)
    facts = gather(fake, h)
    assert fake.argvs() == [probe_argv(h)]
    assert facts.docker is not None and len(facts.gpus) == 2


def test_gather_raises_when_the_probe_did_not_run() -> None:
    h = host()
    fake = FakeSession("gpu01").on(probe_argv(h), exited=127, stderr="sh: not found")
    with pytest.raises(CommandError, match="probing the host failed"):
        gather(fake, h)


def test_facts_to_dict_is_json_ready() -> None:
    d = parse_probe(GPU01).to_dict()
    json.dumps(d)
    assert d["decompressors"] == sorted(d["decompressors"])
    assert d["gpus"][0]["uuid"] == "GPU-78272219-c87d-ddaa-6f41-d26c03d22222"


def _probe_with_fakes(tmp_path, registry: str) -> tuple[str, str]:
    """Run the probe locally: a fake docker, and a fake curl that notes when it ran relative to docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        'case "$1 $3" in\n'
        '  "version {{json .}}") echo \'{"Server":{"Version":"28.5.2","ApiVersion":"1.51"}}\';;\n'
        # info takes a moment (as on a busy daemon): curl, started first, is surely running by then
        '  "info {{json .}}") sleep 0.5; touch "$FAKEROOT/docker-info-asked"; echo \'{"Driver":"overlay2","DockerRootDir":"\'"$FAKEROOT"\'"}\';;\n'
        "esac\n"
    )
    curl = bin_dir / "curl"
    # waits (at most 5 s) until the probe has asked docker info: only possible if it runs alongside
    curl.write_text(
        "#!/bin/sh\n"
        'echo "$*" > "$FAKEROOT/curl-args"\n'
        '[ -e "$FAKEROOT/docker-info-asked" ] && echo "docker ran before curl" > "$FAKEROOT/curl-order"\n'
        'i=0; while [ ! -e "$FAKEROOT/docker-info-asked" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n'
        '[ -e "$FAKEROOT/docker-info-asked" ] || { printf 000; exit 28; }\n'
        'printf 200\n'
    )
    for f in (docker, curl):
        f.chmod(0o755)
    h = Host("local", {"deploy_staging_dir": str(tmp_path), "deploy_docker": str(docker), "deploy_registry": registry})
    out = subprocess.run(list(probe_argv(h)), capture_output=True, text=True, check=True, timeout=30,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKEROOT": str(tmp_path)}).stdout
    return out, (tmp_path / "curl-args").read_text()


def test_probe_checks_the_registry_while_it_probes_the_rest(tmp_path) -> None:
    out, curl_args = _probe_with_fakes(tmp_path, "10.0.0.5:5000")
    assert not (tmp_path / "curl-order").exists()  # curl started before the docker sections were done...
    facts = parse_probe(out)  # ...and its answer still lands in its own section, after the others
    assert (facts.registry_reachable, facts.registry_detail) == (True, "curl: HTTP 200")
    assert facts.docker is not None and facts.docker.server_version == "28.5.2"
    assert facts.docker_disk_free_bytes and facts.docker_disk_free_bytes > 0
    assert list(split_sections(out)) == ["arch", "docker_version", "docker_info", "gpu_tools", "nvidia_smi",
                                         "df_staging", "df_docker", "decompressors", "registry", "origin"]
    assert (facts.origin_reachable, facts.origin_detail) == (None, "none")  # not asked
    # a dropped route costs the connect timeout, not the whole-request one
    assert "--connect-timeout 0.5 -m 3" in curl_args and curl_args.split()[-1] == "http://10.0.0.5:5000/v2/"


def test_probe_checks_the_origin_after_the_registry(tmp_path) -> None:
    curl = tmp_path / "curl"
    curl.write_text(  # the registry answers; the origin (https, no port) does not
        "#!/bin/sh\n"
        'echo "$*" >> "$FAKEROOT/curl-args"\n'
        'case " $* " in *"https://origin.example/v2/"*) echo "curl: (28) Connection timed out after 500 ms" >&2;'
        ' printf 000; exit 28;; esac\n'
        "printf 200\n"
    )
    curl.chmod(0o755)
    h = Host("local", {"deploy_staging_dir": str(tmp_path), "deploy_docker": "false", "deploy_registry": "reg:5000"})
    out = subprocess.run(list(probe_argv(h, gpus=False, origin="origin.example")), capture_output=True, text=True,
                         check=True, timeout=30, env={"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKEROOT": str(tmp_path)}).stdout
    facts = parse_probe(out)
    assert (facts.registry_reachable, facts.registry_detail) == (True, "curl: HTTP 200")
    assert facts.origin_reachable is False and facts.origin_detail.startswith("curl: (28) Connection timed out")
    assert [line.split()[-1] for line in (tmp_path / "curl-args").read_text().splitlines()] == [
        "http://reg:5000/v2/", "https://origin.example/v2/"]


def test_probe_registry_check_with_a_curl_that_takes_whole_seconds_only(tmp_path) -> None:
    curl = tmp_path / "curl"
    curl.write_text(  # as curl 7.29 (CentOS 7) answers a fractional timeout
        "#!/bin/sh\n"
        'case " $* " in *" 0.5 "*) echo "curl: option --connect-timeout: expected a proper numerical parameter" >&2;'
        ' exit 2;; esac\n'
        'echo "$*" >> "$FAKEROOT/curl-args"; printf 401\n'
    )
    curl.chmod(0o755)
    h = Host("local", {"deploy_staging_dir": str(tmp_path), "deploy_docker": "false", "deploy_registry": "reg:5000"})
    out = subprocess.run(list(probe_argv(h)), capture_output=True, text=True, check=True, timeout=30,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKEROOT": str(tmp_path)}).stdout
    assert parse_registry(split_sections(out)["registry"][0]) == (True, "curl: HTTP 401")
    assert "--connect-timeout 1 -m 3" in (tmp_path / "curl-args").read_text()


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_probe_registry_check_with_real_curl_on_loopback(tmp_path) -> None:
    with serving(http.server.BaseHTTPRequestHandler) as address:  # answers 501
        h = Host("local", {"deploy_staging_dir": str(tmp_path), "deploy_docker": "false", "deploy_registry": address})
        out = subprocess.run(list(probe_argv(h)), capture_output=True, text=True, check=True, timeout=30).stdout
        assert parse_registry(split_sections(out)["registry"][0]) == (True, "curl: HTTP 501")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused at once
    try:
        h = Host("local", {"deploy_staging_dir": str(tmp_path), "deploy_docker": "false",
                           "deploy_registry": f"127.0.0.1:{closed.getsockname()[1]}"})
        out = subprocess.run(list(probe_argv(h)), capture_output=True, text=True, check=True, timeout=30).stdout
    finally:
        closed.close()
    reachable, detail = parse_registry(split_sections(out)["registry"][0])
    assert reachable is False and "(7)" in detail
