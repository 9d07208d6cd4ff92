"""Push-stream checking, the --json record, and the plain progress reporter."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from deployer.errors import LocalError
from deployer.ship.model import ShipResult
from deployer.ship.progress import PlainReporter
from deployer.ship.registry import read_push_stream

PUSH_OK = [
    {"status": "The push refers to repository [r:5000/t]"},
    {"status": "Preparing", "id": "aaa"},
    {"status": "Preparing", "id": "bbb"},
    {"status": "Layer already exists", "id": "aaa"},
    {"status": "Pushing", "id": "bbb", "progressDetail": {"current": 512, "total": 2000}},
    {"status": "Pushing", "id": "bbb", "progressDetail": {"current": 2000, "total": 2000}},
    {"status": "Pushed", "id": "bbb"},
    {"status": "v1: digest: sha256:00 size: 527"},
]


def test_push_stream_counts_layers_and_bytes() -> None:
    seen: list[int] = []
    stats = read_push_stream(iter(PUSH_OK), "r:5000/t:v1", seen.append)
    assert (stats.layers_pushed, stats.layers_existing, stats.bytes_pushed) == (1, 1, 2000)
    assert sum(seen) == 2000


@pytest.mark.parametrize("bad", [
    {"error": "denied: requested access to the resource is denied"},
    {"errorDetail": {"message": "blob upload unknown"}},
])
def test_push_stream_errors_inside_the_stream_are_caught(bad: dict[str, object]) -> None:
    with pytest.raises(LocalError, match=r"pushing r:5000/t:v1 failed: (denied|blob upload unknown)"):
        read_push_stream(iter([*PUSH_OK[:3], bad]), "r:5000/t:v1")


def test_json_record_has_exactly_the_documented_keys() -> None:
    rec = ShipResult("gpu01", via="tarball", image_id="sha256:1", verified=True, host_image_id="sha256:2",
                     config_digest="sha256:1", layers_total=3, layers_sent=1, bytes_sent=10,
                     seconds=1.23456, phases=(("connecting", 0.1234), ("sending", 1.0))).to_json()
    assert rec == {"host": "gpu01", "ok": True, "error": None, "hint": None, "via": "tarball", "image_id": "sha256:1",
                   "host_image_id": "sha256:2", "config_digest": "sha256:1",
                   "verified": True, "layers_total": 3, "layers_sent": 1, "origin": None, "layers_from_origin": 0,
                   "relay": None, "relay_bytes": 0, "relay_fallback": False, "bytes_sent": 10, "seconds": 1.235, "phases": {"connecting": 0.123, "sending": 1.0}}
    failed = ShipResult("gpu02").to_json("boom", "do this")
    assert (failed["ok"], failed["error"], failed["hint"]) == (False, "boom", "do this")


def test_plain_reporter_lines() -> None:
    out = io.StringIO()
    rep = PlainReporter(out, interval=3600)
    rep.phase("gpu01", "sending", "layer 1/2")
    rep.total("gpu01", 2_000_000)
    rep.sent("gpu01", 1_000_000)  # throttled: within the interval, no line
    rep.note("gpu01", "resuming")
    rep.done("gpu01", True, "tarball: 2/3 layers")
    lines = out.getvalue().splitlines()
    assert lines[0] == "gpu01: sending layer 1/2"
    assert lines[1:] == ["gpu01: resuming", "gpu01: done tarball: 2/3 layers"]


def test_a_resumed_send_shows_what_the_host_has_and_an_eta_for_the_rest_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """9 GB of a 10 GB layer were on the host from an earlier ship: progress reads 9.1 GB/10.0 GB and
    the ETA is for the last GB, not for 10 GB at the speed the resume sends."""
    from deployer.ship import progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    rep = PlainReporter(out, interval=0)
    rep.phase("gpu01", "sending", "layer 1/1")
    rep.total("gpu01", 10_000_000_000)
    rep.held("gpu01", 9_000_000_000)
    clock[0] += 10
    rep.sent("gpu01", 100_000_000)  # 10 MB/s
    assert out.getvalue().splitlines()[-1] == "gpu01: sending layer 1/1 9.1 GB/10.0 GB 10.0 MB/s eta 90s"


def test_a_ship_that_fails_before_any_host_still_prints_each_hosts_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`deploy ship --image REF --json` when the local Docker cannot give the image: stdout still has a
    record per host (ok false, the error and its hint), so a script never reads an empty list as fine;
    stderr says the error once, exit code 1."""
    from deployer import cli
    from deployer.ship import runner

    def unreachable() -> object:
        raise LocalError("local Docker is not reachable at unix:///nowhere.sock",
                         hint="start Docker (or set DOCKER_HOST) and check `docker info` works")

    monkeypatch.setattr(runner, "docker_client", unreachable)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    gpu01: {ansible_host: 127.0.0.1, ansible_port: 9}\n"
                         "    gpu02: {ansible_host: 127.0.0.1, ansible_port: 9}\n")
    code = cli.main(["ship", "-i", str(inventory), "--host", "all", "--image", "job:v1", "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and err.count("error: local Docker is not reachable") == 1, err
    records = json.loads(out)
    assert [(r["host"], r["ok"], r["error"], r["bytes_sent"]) for r in records] == [
        (h, False, "local Docker is not reachable at unix:///nowhere.sock", 0) for h in ("gpu01", "gpu02")]
    assert all(r["hint"].startswith("start Docker") for r in records)
