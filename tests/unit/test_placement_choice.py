"""Placement by free GPUs (pure parts): best fit, reasons per host, the GPU lock's argv, run.place."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from deployer.commands import gpulock
from deployer.errors import PlaybookError, SpecError
from deployer.playbook import load
from deployer.runs.gpuuse import GpuUse
from deployer.runs.place import Candidate, Choice, choose, why_not
from deployer.runs.spec import RunSpec, from_flags, validate
from deployer.transport.fake import FakeSession


def gpus(n: int, held: dict[int, str] | None = None, loaded: tuple[int, ...] = ()) -> tuple[GpuUse, ...]:
    held = held or {}
    return tuple(GpuUse(i, f"GPU-{i}", "A100", 0, 40960, 0, (held[i],) if i in held else (), i in loaded)
                 for i in range(n))


def test_best_fit_takes_the_fullest_host_that_still_fits() -> None:
    hosts = [Candidate("gpu01", gpus=gpus(2, held={0: "a", 1: "a"})), Candidate("gpu02", gpus=gpus(4)),
             Candidate("gpu03", gpus=gpus(4, held={0: "b"}))]
    assert choose(hosts, 2) == Choice("gpu03", (1, 2), ("GPU-1", "GPU-2"), 3)
    assert choose(hosts, 4) == Choice("gpu02", (0, 1, 2, 3), ("GPU-0", "GPU-1", "GPU-2", "GPU-3"), 4)
    # a tie goes to the first host in inventory order
    assert choose([Candidate("b", gpus=gpus(2)), Candidate("a", gpus=gpus(2))], 1).host == "b"  # type: ignore[union-attr]


def test_gpus_locked_by_another_placement_or_busy_are_not_free() -> None:
    host = Candidate("gpu02", gpus=gpus(4, loaded=(0,)), locked=frozenset({"GPU-1"}))
    assert choose([host], 2) == Choice("gpu02", (2, 3), ("GPU-2", "GPU-3"), 2)
    reasons = choose([host], 3)
    assert reasons == {"gpu02": "2 of 4 GPU(s) free, 3 needed: GPU 0 busy (0 MiB, 0 %) with a process deployer "
                                "did not start; GPU 1 being placed by another deploy"}


def test_no_fit_names_every_host_and_why() -> None:
    hosts = [Candidate("gpu01", gpus=gpus(2, held={0: "a", 1: "a"})), Candidate("cpu01"),
             Candidate("airgap01", "unreachable: cannot reach 10.213.0.13:22")]
    assert choose(hosts, 2) == {
        "gpu01": "0 of 2 GPU(s) free, 2 needed: GPU 0 held by a; GPU 1 held by a",
        "cpu01": "no GPUs (nvidia-smi lists none)",
        "airgap01": "unreachable: cannot reach 10.213.0.13:22",
    }
    assert why_not(Candidate("gpu02", gpus=gpus(1)), 2) == "1 of 1 GPU(s) free, 2 needed"


def test_choice_gives_docker_exactly_those_devices() -> None:
    assert Choice("h", (2, 3), ("a", "b"), 4).gpus_value == '"device=2,3"'
    assert Choice("h", (1,), ("a",), 1).gpus_value == "device=1"


def test_any_needs_a_number_of_gpus() -> None:
    assert from_flags("img", gpus="2", place="any").place == "any"
    validate(RunSpec("img", gpus="count=3", place="any"))
    for bad in (None, "all", '"device=0,1"', "0"):
        with pytest.raises(SpecError, match="--any places the container"):
            validate(RunSpec("img", gpus=bad, place="any"))
    with pytest.raises(SpecError, match="unknown placement"):
        validate(RunSpec("img", gpus="1", place="some"))


def test_gpu_lock_argv_and_answers() -> None:
    argv = gpulock.lock_argv("/var/tmp/deployer", '{"token":"t"}', ["GPU-1", "GPU-2"])
    assert argv[:2] == ("sh", "-c") and argv[3:] == ("sh", "/var/tmp/deployer/gpu-locks", '{"token":"t"}',
                                                     "GPU-1", "GPU-2")
    assert gpulock.unlock_argv("/s", "tok", ["GPU-1"])[3:] == ("sh", "/s/gpu-locks", "tok", "GPU-1")
    assert gpulock.takeover_argv("/s", "GPU-1", "tok")[3:] == ("sh", "/s/gpu-locks", "GPU-1", "tok")
    with pytest.raises(ValueError):
        gpulock.lock_argv("/s", "o", ["../x"])
    assert gpulock.parse_lock("acquired\n").acquired
    held = gpulock.parse_lock('held GPU-2 12 {"token":"abc","pid":7}\n')
    assert (held.acquired, held.uuid, held.age_s, held.owner) == (False, "GPU-2", 12, {"token": "abc", "pid": 7})
    assert gpulock.parse_lock("held GPU-2 3 \n").owner == {}  # owner line not written yet
    with pytest.raises(ValueError):
        gpulock.parse_lock("")


def test_lock_clears_a_dead_placements_lock_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from deployer.inventory.host import Host
    from deployer.runs import place

    host = Host("gpu02", vars={"deploy_staging_dir": "/s"})
    session = FakeSession("gpu02")
    lock = gpulock.lock_argv("/s", "me", ["GPU-1"])
    session.on(lock, stdout="acquired\n")
    session.on(lock, stdout='held GPU-1 9999 {"token":"dead"}\n', times=1)  # first answer: a dead lock
    session.on(gpulock.takeover_argv("/s", "GPU-1", "dead"))
    assert place._lock(session, host, ["GPU-1"], "tok", "me") is None
    assert session.argvs() == [lock, gpulock.takeover_argv("/s", "GPU-1", "dead"), lock]
    live = FakeSession("gpu02").on(lock, stdout='held GPU-1 5 {"token":"live"}\n')
    monkeypatch.setattr(place, "_dead", lambda state: False)
    assert place._lock(live, host, ["GPU-1"], "tok", "me") == "GPU-1"


def _playbook(tmp_path: Path, run: str) -> Path:
    path = tmp_path / "pb.yml"
    path.write_text("name: job\nimage: {ref: busybox}\nrun:\n" + textwrap.indent(run, "  "))
    return path


def test_playbook_run_place(tmp_path: Path) -> None:
    pb = load(str(_playbook(tmp_path, "gpus: 2\nplace: any\n")))
    assert pb.run is not None and pb.run.place == "any" and pb.run.gpus == "2"
    with pytest.raises(PlaybookError) as err:
        load(str(_playbook(tmp_path, "gpus: all\nplace: any\n")))
    assert err.value.key_path == "run.place" and err.value.line == 5
    with pytest.raises(PlaybookError) as err:
        load(str(_playbook(tmp_path, "gpus: 1\nplace: anywhere\n")))
    assert err.value.key_path == "run.place" and "unknown placement" in str(err.value)


def test_a_lock_is_dead_when_old_or_its_process_here_is_gone() -> None:
    import os
    import socket
    import subprocess
    import sys

    from deployer.runs.place import _dead

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = socket.gethostname()
    assert _dead(gpulock.GpuLockState(False, "GPU-1", 5, {"workstation": here, "pid": gone.pid}))
    assert not _dead(gpulock.GpuLockState(False, "GPU-1", 5, {"workstation": here, "pid": os.getpid()}))
    assert not _dead(gpulock.GpuLockState(False, "GPU-1", 5, {"workstation": "elsewhere", "pid": gone.pid}))
    assert _dead(gpulock.GpuLockState(False, "GPU-1", 3600, {"workstation": "elsewhere", "pid": 1}))
    assert not _dead(gpulock.GpuLockState(False, "GPU-1", 1, {}))  # owner line not written yet


def test_dry_run_says_a_placed_run_starts_on_one_host() -> None:
    from deployer.inventory.host import Host
    from deployer.runs.start import planned_steps

    plain = planned_steps(Host("gpu01"), RunSpec("img", gpus="2"), "sha256:" + "b" * 64)
    placed = planned_steps(Host("gpu01"), RunSpec("img", gpus="2", place="any"), "sha256:" + "b" * 64)
    assert [s.argv[:3] for s in placed] == [s.argv[:3] for s in plain]
    (run,) = [s for s in placed if s.label.startswith("docker run")]
    assert run.note is not None and run.note.startswith("only on the one host placement picks (the fewest free GPUs "
                                                         "that fit 2)")
