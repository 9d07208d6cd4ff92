"""The deploy lock's takeover of a dead owner: who counts as provably dead, and the host script, run by a real sh."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest

from deployer import lock as locks
from deployer.commands import ship as cmd
from deployer.errors import CommandError, LockError
from deployer.transport.session import Session
from tests.lock_support import dead_deploy
from tests.unit.test_ship_transfer import LocalSession

ME = locks.Owner(workstation="ws1", machine="m1", boot="b1", pidns="pid:[4026531836]", pid=100, started=5000)


def owner(**changes: object) -> dict[str, object]:
    """An owner line as another deploy on ME's workstation wrote it (pid 42, started at tick 700)."""
    rec: dict[str, object] = {**dataclasses.asdict(ME), "pid": 42, "started": 700, "token": "t-dead", "by": "ann@ws1"}
    rec.update(changes)
    return rec


def starts(table: dict[int, int]) -> Callable[[int], int | None]:
    return table.get  # a pid missing from the table has no process


def test_parse_proc_stat_survives_odd_command_names() -> None:
    fields = " ".join(str(n) for n in range(3, 53)).replace("3", "S", 1)  # fields 3..52; field 22 is "22"
    assert locks.parse_proc_stat(f"4711 (a) b (c)) {fields}") == (4711, 22)
    assert locks.parse_proc_stat(f"4711 (deploy) {fields}\n") == (4711, 22)
    assert locks.parse_proc_stat("") is None
    assert locks.parse_proc_stat("4711 (deploy) S 1 2") is None  # cut short


def test_identity_of_this_process() -> None:
    me = locks.identity()
    assert me.pid == os.getpid() and me.workstation
    if Path("/proc/self/stat").exists():
        assert me.started is not None and me.started > 0 and me.boot and me.pidns.startswith("pid:")
        assert locks.process_start(me.pid) == me.started
    raw = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
    assert raw == "" or (me.machine and raw not in me.machine)  # a keyed hash, never the id itself


def test_process_start_of_a_dead_process_is_none() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert locks.process_start(dead.pid) is None
    assert locks.process_start(0) is None and locks.process_start(-1) is None


def test_dead_reason_needs_proof_from_this_workstation() -> None:
    gone, alive, reused = starts({}), starts({42: 700}), starts({42: 9999})
    assert locks.dead_reason(owner(), ME, gone) == "its process 42 on this workstation is gone"
    assert locks.dead_reason(owner(), ME, reused) == (
        "its process 42 on this workstation is gone; pid 42 is another process now")
    assert locks.dead_reason(owner(), ME, alive) is None
    assert locks.dead_reason(owner(), ME, starts({42: locks.UNKNOWN_START})) is None  # exists, hidden from us
    assert locks.dead_reason(owner(started=None), ME, reused) is None  # no start recorded: only "gone" proves it
    # another workstation, or this one's pids not comparable: never provably dead
    assert locks.dead_reason(owner(workstation="ws2"), ME, gone) is None
    assert locks.dead_reason(owner(pidns="pid:[1]"), ME, gone) is None
    assert locks.dead_reason(owner(boot="b0", machine="m2"), ME, gone) is None  # same name, other machine
    assert locks.dead_reason(owner(token=None), ME, gone) is None  # nothing to take over by
    legacy = {"by": "ann@ws1", "workstation": "ws1", "pid": 42, "token": "t"}  # before owners carried boot ids
    assert locks.dead_reason(legacy, ME, gone) is None
    # the same machine on an earlier boot: every process of that boot is gone
    assert locks.dead_reason(owner(boot="b0"), ME, alive) == "this workstation has restarted since it took the lock"
    assert locks.dead_reason(owner(boot="b0"), dataclasses.replace(ME, machine=""), alive) is None
    assert locks.dead_reason(owner(pid="42"), ME, gone) is None


def sh(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


def leave_lock(staging: Path, rec: dict[str, object]) -> None:
    (staging / "lock").mkdir(parents=True)
    (staging / "lock" / "owner").write_text(json.dumps(rec) + "\n")


def test_takeover_argv_passes_everything_as_positional_arguments() -> None:
    argv = cmd.takeover_argv("/srv/st; rm -rf /", '{"token":"t-new"}', "t-dead")
    assert argv[:2] == ("sh", "-c") and argv[3:] == ("sh", "/srv/st; rm -rf /", '{"token":"t-new"}', "t-dead")


def test_takeover_script_replaces_only_the_named_lock(tmp_path: Path) -> None:
    staging = tmp_path / "st ag"
    leave_lock(staging, {"token": "t-dead"})
    new = json.dumps({"token": "t-new"})
    # a token that is not the holder's changes nothing
    state = cmd.parse_lock(sh(cmd.takeover_argv(str(staging), new, "t-other")))
    assert not state.acquired and state.owner == {"token": "t-dead"}
    assert sorted(p.name for p in staging.iterdir()) == ["lock"] and not (staging / "lock" / "takeover").exists()
    assert not cmd.parse_lock(sh(cmd.takeover_argv(str(staging), new, ""))).acquired  # empty matches nothing
    # the holder's token: the lock is ours, and nothing of the old one is left
    assert cmd.parse_lock(sh(cmd.takeover_argv(str(staging), new, "t-dead"))).acquired
    assert sorted(p.name for p in staging.iterdir()) == ["lock"]
    assert sorted(p.name for p in (staging / "lock").iterdir()) == ["owner"]
    assert json.loads((staging / "lock" / "owner").read_text()) == {"token": "t-new"}
    # no lock at all: takes a fresh one like lock_argv
    sh(cmd.unlock_argv(str(staging), "t-new"))
    assert cmd.parse_lock(sh(cmd.takeover_argv(str(staging), new, "t-dead"))).acquired


def test_takeover_is_won_by_exactly_one_of_many(tmp_path: Path) -> None:
    for attempt in range(12):  # a naive grep-then-rm takeover lets two win in about 1 of 10
        staging = tmp_path / f"s{attempt}"
        leave_lock(staging, {"token": "t-dead"})
        argvs = [cmd.takeover_argv(str(staging), json.dumps({"token": f"t-{i}"}), "t-dead") for i in range(8)]
        argvs += [cmd.lock_argv(str(staging), json.dumps({"token": f"plain-{i}"})) for i in range(4)]
        with ThreadPoolExecutor(len(argvs)) as pool:
            states = [cmd.parse_lock(out) for out in pool.map(sh, argvs)]
        winners = [i for i, s in enumerate(states) if s.acquired]
        assert len(winners) == 1, states
        holder = json.loads((staging / "lock" / "owner").read_text())["token"]
        assert holder == json.loads(argvs[winners[0]][5])["token"]
        assert sorted(p.name for p in staging.iterdir()) == ["lock"]  # no grave left behind


def local() -> Session:
    """A Session whose 'host' is this machine (the lock needs only run())."""
    return cast(Session, LocalSession([]))


def test_acquire_takes_over_a_lock_whose_deploy_was_killed(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    staging = tmp_path / "staging"
    leave_lock(staging, locks.owner_record("trainer:v1", "t-dead", dead_deploy()))
    with caplog.at_level(logging.WARNING, logger="deployer.lock"):
        mine = locks.acquire(local(), str(staging), "trainer:v2")
    assert json.loads((staging / "lock" / "owner").read_text())["token"] == mine.token
    [notice] = [r.getMessage() for r in caplog.records]
    assert notice.startswith(f"local: took over the deploy lock at {staging}/lock, held by ")
    assert "shipping trainer:v1" in notice and "on this workstation is gone" in notice
    mine.release(local())
    assert not (staging / "lock").exists()


def test_acquire_leaves_other_workstations_and_live_deploys_alone(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    elsewhere = dataclasses.replace(dead_deploy(), workstation="elsewhere", machine="m", boot="b")
    leave_lock(staging, locks.owner_record("trainer:v1", "t-other", elsewhere))
    with pytest.raises(LockError, match="another deploy is in progress") as info:
        locks.acquire(local(), str(staging), "trainer:v2")
    assert "--break-lock" in str(info.value)
    assert json.loads((staging / "lock" / "owner").read_text())["token"] == "t-other"
    # a live deploy on this workstation (this very process, another ship)
    held = locks.acquire(local(), str(tmp_path / "s2"), "a:1")
    with pytest.raises(LockError, match="another deploy is in progress"):
        locks.acquire(local(), str(tmp_path / "s2"), "b:1")
    held.release(local())


def test_a_staging_dir_the_host_cannot_make_fails_the_lock_saying_which_setting(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    staging = str(tmp_path / "a-file" / "staging")  # under a file: no mkdir can make it
    with pytest.raises(CommandError) as err:
        locks.acquire(local(), staging, "job:v1")
    assert str(err.value).startswith("local: taking the deploy lock failed") and "Not a directory" in str(err.value)
    assert err.value.hint == (f"the staging dir ({staging}, deploy_staging_dir) must be a directory the SSH user "
                              "can create and write on the host")
