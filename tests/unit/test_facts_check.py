"""Unit tests for the per-host check report (JSON shape, cache record, notes)."""
from __future__ import annotations

import json

from deployer.commands.facts import DockerFacts, Gpu, HostFacts
from deployer.errors import AuthError, ConnectError, HostKeyError
from deployer.facts import CheckReport, _ssh_state, notes_for
from deployer.inventory.host import Host

DOCKER = DockerFacts("20.10.24", "1.41", "overlay2", "overlay2", "/var/lib/docker", True)
FACTS = HostFacts(
    docker=DOCKER,
    gpus=(Gpu(0, "NVIDIA H100 80GB HBM3", "GPU-1", 81559, 10, 3, "550.54.15"),),
    disk_free_bytes=1000,
    docker_disk_free_bytes=2000,
    registry_reachable=True,
    decompressors=frozenset({"zstd", "gzip"}),
    arch="x86_64",
)


def test_json_has_exactly_the_issue_keys() -> None:
    report = CheckReport("gpu01", True, None, "ok", "trusted", FACTS)
    assert report.to_json() == {
        "name": "gpu01",
        "ok": True,
        "error": None,
        "docker": {"server_version": "20.10.24", "api_version": "1.41", "storage_driver": "overlay2",
                   "image_store": "overlay2", "gpu_runtime": True},
        "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1", "memory_total_mib": 81559}],
        "disk_free_bytes": 1000,
        "registry_reachable": True,
    }


def test_json_names_the_containerd_image_store() -> None:
    docker = DockerFacts("28.5.2", "1.51", "overlayfs", "containerd", "/var/lib/docker", True)
    facts = HostFacts(docker=docker, registry_reachable=False)
    out = CheckReport("airgap01", True, None, "ok", "trusted", facts).to_json()
    assert out["docker"]["storage_driver"] == "overlayfs" and out["docker"]["image_store"] == "containerd"


def test_json_for_an_unreachable_host() -> None:
    report = CheckReport("cpu01", False, "cannot reach 10.0.0.1:22: no answer within 3s", "unreachable", "?", None)
    assert report.to_json() == {"name": "cpu01", "ok": False, "error": "cannot reach 10.0.0.1:22: no answer within 3s",
                                "docker": None, "gpus": [], "disk_free_bytes": None, "registry_reachable": None}


def test_json_when_docker_is_missing() -> None:
    facts = HostFacts(docker=None, docker_error="docker is not installed", disk_free_bytes=5)
    out = CheckReport("h", False, "docker: docker is not installed", "ok", "trusted", facts).to_json()
    assert out["docker"] is None and out["disk_free_bytes"] == 5 and out["ok"] is False


def test_cache_record_keeps_status_and_every_fact() -> None:
    rec = CheckReport("gpu01", True, None, "ok", "trusted", FACTS, ("a note",)).to_cache()
    json.dumps(rec)
    assert rec["ok"] is True and rec["ssh"] == "ok" and rec["host_key"] == "trusted" and rec["notes"] == ["a note"]
    assert rec["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert rec["docker"]["image_store"] == "overlay2" and rec["decompressors"] == ["gzip", "zstd"]
    assert CheckReport("x", False, "down", "unreachable", "?", None).to_cache() == {
        "ok": False, "error": "down", "ssh": "unreachable", "host_key": "?", "notes": []}


def test_ssh_state_classification() -> None:
    changed = HostKeyError("h", "changed")
    changed.state = "changed"  # type: ignore[attr-defined]
    assert _ssh_state(changed) == ("host key", "changed")
    assert _ssh_state(AuthError("h", "refused")) == ("auth failed", "trusted")
    assert _ssh_state(ConnectError("h", "down")) == ("unreachable", "?")


def test_notes() -> None:
    no_runtime = HostFacts(docker=DockerFacts("24", "1.43", "overlay2", "overlay2", "/d", False), gpus=FACTS.gpus,
                           registry_reachable=False)
    host = Host("h", {"deploy_registry": "reg:5000", "deploy_via": "registry"})
    notes = notes_for(host, no_runtime)
    assert any("no NVIDIA container runtime" in n for n in notes)
    assert any("deploy_via is registry but reg:5000 is unreachable" in n for n in notes)
    containerd = HostFacts(docker=DockerFacts("29", "1.52", "overlayfs", "containerd", "/d", False))
    assert notes_for(Host("h"), containerd) == ()  # tarball ships send deltas there too (issue 11)
    assert notes_for(Host("h"), FACTS) == ()
