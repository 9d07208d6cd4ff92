"""Pure parts of prune and rollback: what a host holds, what goes and stays, the run to go back to."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from deployer import history
from deployer.commands import prune as cmd
from deployer.commands.rerun import image_ids_argv, parse_run_argv
from deployer.commands.run import run_argv
from deployer.errors import PreflightError, SpecError
from deployer.runs import pruning
from deployer.runs.pruning import parse_duration, plan, repository, same_repository
from deployer.runs.rollback import Target, spec_for, target
from deployer.runs.spec import RunSpec, Volume

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
STAGING = "/var/tmp/deployer"


def ship(image: str, image_id: str, time: str, result: str = "ok") -> dict[str, str]:
    return {"action": "ship", "image": image, "image_id": image_id, "time": time, "result": result}


def img(image_id: str, *tags: str, size: int = 1000, unique: int | None = None, created: str = "",
        labels: tuple[tuple[str, str], ...] = ()) -> cmd.Image:
    return cmd.Image(image_id, size, created, tags, labels, unique)


def ctr(name: str, image_id: str, state: str = "running", finished: str | None = None,
        managed: bool = True) -> cmd.Container:
    return cmd.Container("id-" + name, name, image_id, state, finished, managed)


def holdings(*, records: list[dict], images: list[cmd.Image], containers: list[cmd.Container] = (),  # type: ignore[assignment]
             leftovers: tuple[tuple[str, int], ...] = ()) -> cmd.HostHoldings:
    return cmd.HostHoldings(tuple(records), tuple(images), tuple(containers), leftovers)


RECORDS = [ship("t:v1", "sha256:1", "2026-11-01T00:00:00+00:00"), ship("t:v2", "sha256:2", "2026-11-02T00:00:00+00:00"),
           ship("t:v3", "sha256:3", "2026-11-03T00:00:00+00:00"), ship("t:v4", "sha256:4", "2026-11-04T00:00:00+00:00"),
           ship("t:v5", "sha256:5", "2026-11-05T00:00:00+00:00", result="failed")]
IMAGES = [img("sha256:1", "t:v1", unique=100), img("sha256:2", "t:v2", unique=200), img("sha256:3", "t:v3"),
          img("sha256:4", "t:v4"), img("sha256:9", "other:1"), img("sha256:5", "t:v5"), img("sha256:0")]


def names(items: object) -> list[str]:
    return [i.name for i in items]  # type: ignore[attr-defined]


def test_keeps_the_newest_shipped_and_what_containers_use() -> None:
    p = plan(holdings(records=RECORDS, images=IMAGES, containers=[ctr("eval", "sha256:1", "exited",
                                                                          "2026-11-30T00:00:00Z")]),
             keep=2, older_than=timedelta(days=7), now=NOW, staging=STAGING)
    assert [(i.kind, i.name, i.refs, i.bytes) for i in p.remove] == [("image", "t:v2", ("t:v2",), 200)]
    assert {i.name: i.reason for i in p.keep} == {"t:v4": "one of the newest 2 of t", "t:v3": "one of the newest 2 of t",
                                                  "t:v1": "in use by eval"}
    assert p.bytes == 200
    # other:1 (never shipped), t:v5 (its ship failed) and the untagged sha256:0 are not deployer's versions


def test_newest_is_by_last_ship_time_and_untagged_versions_go_by_id() -> None:
    records = [*RECORDS[:4], ship("t:v1", "sha256:1", "2026-11-10T00:00:00+00:00")]  # v1 shipped again last
    images = [img("sha256:1", "t:v1"), img("sha256:2"), img("sha256:3", "t:v3"), img("sha256:4", "t:v4")]
    p = plan(holdings(records=records, images=images), keep=2, older_than=timedelta(days=7), now=NOW, staging=STAGING)
    assert sorted(names(p.keep)) == ["t:v1", "t:v4"]
    assert [(i.name, i.refs) for i in p.remove] == [("t:v3", ("t:v3",)), ("sha256:2", ("sha256:2",))]


def test_an_image_also_tagged_elsewhere_stays_and_asked_repos_are_pruned_whole() -> None:
    images = [img("sha256:1", "t:v1", "keep/me:1"), img("sha256:2", "t:v2"), img("sha256:3", "t:v3"),
              img("sha256:8", "scratch:a", created="2026-01-01"), img("sha256:9", "scratch:b", created="2026-02-01")]
    p = plan(holdings(records=RECORDS[:3], images=images), keep=1, older_than=timedelta(days=7), now=NOW,
             staging=STAGING, repos=["scratch"])
    assert {i.name: i.reason for i in p.keep}["t:v1, keep/me:1"] == "also tagged keep/me:1"
    assert sorted(names(p.remove)) == ["scratch:a", "t:v2"]
    # the registry route tags the pulled name too: both go together
    images = [img("sha256:1", "t:v1", "reg:5000/t:v1"), img("sha256:2", "t:v2")]
    p = plan(holdings(records=RECORDS[:2], images=images), keep=1, older_than=timedelta(days=7), now=NOW,
             staging=STAGING)
    assert [i.refs for i in p.remove] == [("t:v1", "reg:5000/t:v1")]


def test_old_exited_containers_stand_ins_and_leftovers() -> None:
    containers = [ctr("old", "sha256:1", "exited", "2026-11-20T00:00:00Z"),
                  ctr("recent", "sha256:2", "exited", "2026-11-30T00:00:00Z"),
                  ctr("mine", "sha256:3", "exited", "2026-11-01T00:00:00Z", managed=False),
                  ctr("up", "sha256:4")]
    images = [*IMAGES[:4], img("sha256:p", labels=(("io.deployer.partial", STAGING),)),
              img("sha256:q", labels=(("io.deployer.partial", "/other/staging"),)),
              img("sha256:s", labels=(("io.deployer.stage", "sha256:c0nf1g"),))]  # left by a killed registry ship
    p = plan(holdings(records=RECORDS[:4], images=images, containers=containers, leftovers=(("blobs", 4096),)),
             keep=3, older_than=timedelta(days=7), now=NOW, staging=STAGING)
    assert [(i.kind, i.name) for i in p.remove] == [("container", "old"), ("image", "t:v1"), ("stand-in", "sha256:p"),
                                                   ("stand-in", "sha256:s"), ("staging", "blobs")]
    assert p.bytes == 100 + 1000 + 1000 + 4096  # the stand-ins had no unique size: each its whole size


def test_parse_inventory_output() -> None:
    rec = history.record("ship", image="t:v1", image_id="sha256:1")
    out = "\n".join([
        "", "--- deployer:history", json.dumps(rec), "",
        "--- deployer:images",
        '{"id":"sha256:1","size":5984274,"created":"2026-12-01T15:14:12Z","tags":["t:v1"],"labels":null}',
        '{"id":"sha256:2","size":10,"created":"2026-12-01T15:14:13Z","tags":[],"labels":{"io.deployer.partial":"/s"}}',
        "--- deployer:sizes",
        '[{"ID":"sha256:1","UniqueSize":"4.1MB"},{"ID":"sha256:2","UniqueSize":"0B"}]',
        "--- deployer:containers",
        '{"id":"c1","name":"/train","image":"sha256:1","state":"exited","finished_at":"2026-12-01T15:00:00Z",'
        '"labels":{"deployer.managed":"true"}}',
        "--- deployer:staging", "64 blobs", "4 load-abc.head",
    ])
    h = cmd.parse_inventory(out, history.parse)
    assert [r["image"] for r in h.records] == ["t:v1"]
    assert h.images == (img("sha256:1", "t:v1", size=5984274, unique=4_100_000, created="2026-12-01T15:14:12Z"),
                        img("sha256:2", size=10, unique=0, created="2026-12-01T15:14:13Z",
                            labels=(("io.deployer.partial", "/s"),)))
    assert h.containers == (cmd.Container("c1", "train", "sha256:1", "exited", "2026-12-01T15:00:00Z", True),)
    assert h.leftovers == (("blobs", 65536), ("load-abc.head", 4096))
    assert [cmd.parse_human_size(s) for s in ("512B", "1.984MB", "12.3kB", "2GB", "junk")] == [
        512, 1_984_000, 12_300, 2 * 10**9, None]


def test_the_blob_dir_a_finished_ship_emptied_is_no_leftover(tmp_path: Path) -> None:
    """A finished ship leaves its staging dir's blob dir empty (blobs/sha256/): prune neither lists
    it nor calls it an unfinished ship's; a blob in it, or a load head, is one."""
    staging = tmp_path / "staging"
    (staging / "blobs" / "sha256").mkdir(parents=True)

    def leftovers() -> list[str]:
        out = subprocess.run(cmd.inventory_argv(str(staging), ("false",)), capture_output=True, text=True, check=True)
        return [p for p, _ in cmd.parse_inventory(out.stdout, history.parse).leftovers]

    assert leftovers() == []
    (staging / "blobs" / "sha256" / ("ab" * 32 + ".zst.partial")).write_bytes(b"x" * 10)
    (staging / "load-abc.head").write_bytes(b"h")
    assert leftovers() == ["blobs", "load-abc.head"]


def test_a_relays_copies_are_listed_once_no_ship_through_it_may_run(tmp_path: Path) -> None:
    """The relay dir of a site relay is a leftover only when none of its ships' key dirs is younger
    than a day (a ship through the relay, from any workstation, has one from setup to end)."""
    staging = tmp_path / "staging"
    copy = staging / "relay" / "blobs" / "sha256" / ("ab" * 32 + ".zst")
    copy.parent.mkdir(parents=True)
    copy.write_bytes(os.urandom(8192))

    def leftovers() -> tuple[tuple[str, int], ...]:
        out = subprocess.run(cmd.inventory_argv(str(staging), ("false",)), capture_output=True, text=True, check=True)
        return cmd.parse_inventory(out.stdout, history.parse).leftovers

    assert [p for p, _ in leftovers()] == ["relay"]
    running = staging / "relay" / "ship-0123456789abcdef"
    running.mkdir()
    assert leftovers() == ()  # a ship through the relay may be running: its copies stay
    day_old = time.time() - 86_500
    os.utime(running, (day_old, day_old))
    assert [p for p, _ in leftovers()] == ["relay"]  # a ship's key dir that old belongs to a dead ship
    p = plan(holdings(records=[], images=[], leftovers=(("relay", 8192),)), keep=3, older_than=timedelta(days=7), now=NOW, staging=STAGING)
    assert [(i.kind, i.name, i.reason) for i in p.remove] == [("staging", "relay", pruning.RELAY_COPIES)]


def test_prune_argv() -> None:
    assert cmd.rmi_argv(("sudo", "docker"), ["t:v1", "t:old"]) == ("sudo", "docker", "image", "rm", "--", "t:v1", "t:old")
    assert cmd.rm_containers_argv(("docker",), ["c1"]) == ("docker", "rm", "--", "c1")
    assert cmd.remove_leftovers_argv("/s", ["blobs", "load-1.head"]) == ("rm", "-rf", "--", "/s/blobs", "/s/load-1.head")
    with pytest.raises(ValueError):
        cmd.remove_leftovers_argv("/s", ["../etc"])
    assert cmd.inventory_argv("/s", ("sudo", "docker"))[3:] == ("sh", "/s", "sudo", "docker")


def test_repository_and_durations() -> None:
    assert [repository(r) for r in ("t:v3", "reg:5000/ml/t:1", "reg:5000/ml/t", "t@sha256:ab")] == [
        "t", "reg:5000/ml/t", "reg:5000/ml/t", "t"]
    assert parse_duration("1d12h") == timedelta(hours=36) and parse_duration("30s") == timedelta(seconds=30)
    # the registry route tags repo both plainly and on the registry; a namesake in another namespace is another repo
    assert same_repository("reg:5000/notebook:1", "notebook") and same_repository("notebook:1", "notebook")
    assert not same_repository("alice/notebook:1", "notebook") and not same_repository("notebook:1", "alice/notebook")
    for bad in ("", "7", "7x", "1h 2m"):
        with pytest.raises(SpecError):
            parse_duration(bad)


def _run_record(image: str, image_id: str, spec: RunSpec, env_keys: list[str] | None = None) -> dict:
    argv = run_argv(("docker",), spec, name="train", volumes=[Volume("/data", "/data", "ro")],
                    labels=[("deployer.managed", "true"), ("deployer.name", "train"), ("deployer.git_rev", "abc"),
                            ("deployer.playbook", "pb.yml"), ("team", "nlp=yes")],
                    env_file="/var/tmp/deployer/run-env.train.1234" if env_keys else None)
    return {"action": "run", "name": "train", "image": image, "image_id": image_id, "result": "ok",
            "command": shlex.join(argv), "env_keys": env_keys}


SPEC = RunSpec("t:v2", command=("python", "train.py", "--lr", "3e-4"), gpus='"device=2,3"', shm_size="16g",
               ipc="host", memory="32g", restart="no", workdir="/w")


def test_run_argv_reads_back() -> None:
    rec = _run_record("t:v2", "sha256:2", SPEC, ["TOKEN"])
    opts = parse_run_argv(shlex.split(rec["command"]))
    assert (opts["image"], opts["command"], opts["gpus"], opts["volumes"]) == (
        "t:v2", ("python", "train.py", "--lr", "3e-4"), '"device=2,3"', ("/data:/data:ro",))
    assert ("team", "nlp=yes") in opts["labels"] and opts["shm_size"] == "16g" and opts["workdir"] == "/w"
    with pytest.raises(ValueError):
        parse_run_argv(["docker", "run", "--privileged", "img"])


def test_target_is_the_newest_earlier_image() -> None:
    runs = [_run_record("t:v1", "sha256:1", SPEC), _run_record("t:v2", "sha256:2", SPEC),
            {"action": "run", "name": "train", "image": "t:v3", "image_id": "sha256:3", "result": "failed: exit 125",
             "command": "docker run t:v3"},
            _run_record("t:v2", "sha256:2", SPEC), {"action": "run", "name": "other", "image_id": "sha256:9",
                                                    "result": "ok", "command": "x"}]
    found = target(runs, "train", "sha256:2")
    assert isinstance(found, Target) and found.previous["image"] == "t:v1" and found.current is runs[3]
    # the container runs an image the log does not end with (someone replaced it): back to the latest run's
    assert isinstance(found := target(runs, "train", "sha256:7"), Target) and found.previous is runs[3]
    assert "nothing to go back to" in str(target(runs[1:2], "train", None))
    assert target(runs, "nope", None) == "this host's history has no run of nope"


def test_spec_for_keeps_the_options_and_swaps_the_image() -> None:
    current = _run_record("t:v2", "sha256:2", SPEC, ["TOKEN"])
    t = Target(_run_record("t:v1", "sha256:1", SPEC), current)
    spec = spec_for(t, name="train", image="t:v1", env={"TOKEN": "s3cret", "PATH": "/bin"})
    assert spec == RunSpec("t:v1", command=SPEC.command, gpus='"device=2,3"', volumes=("/data:/data:ro",),
                           env=(("TOKEN", "s3cret"),), shm_size="16g", ipc="host", memory="32g", restart="no",
                           workdir="/w", name="train", labels=(("deployer.playbook", "pb.yml"), ("team", "nlp=yes")),
                           replace=True)
    with pytest.raises(PreflightError, match="values of TOKEN are unknown"):
        spec_for(t, name="train", image="t:v1", env={})


def test_image_ids_argv() -> None:
    argv = image_ids_argv(("sudo", "docker"), ["sha256:1", "t:v1"])
    assert argv[3:] == ("sh", "sha256:1", "t:v1", "--", "sudo", "docker")
    with pytest.raises(ValueError):
        image_ids_argv(("docker",), ["a b"])
