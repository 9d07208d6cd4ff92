"""How `deploy` ends when a signal stops it: Ctrl-C, SIGTERM, or SIGHUP when its terminal hangs up."""
from __future__ import annotations

import json
import os
import select
import signal
import sys
from pathlib import Path

import pytest

from deployer import cli, fleet, interrupt
from deployer.cli import output
from deployer.errors import Interrupted


@pytest.mark.parametrize(("exc", "code", "said"), [(KeyboardInterrupt(), 130, "interrupted"),
                                                   (interrupt.Terminated(signal.SIGTERM), 143, "terminated"),
                                                   (interrupt.Terminated(signal.SIGHUP), 129, "hung up")])
def test_each_stop_says_what_stopped_it_and_exits_with_its_signals_code(
        capsys: pytest.CaptureFixture[str], exc: KeyboardInterrupt, code: int, said: str) -> None:
    assert cli._stopped(exc) == code
    assert capsys.readouterr().err == f"{said}\n"


def test_sigterm_and_sighup_raise_terminated_unless_already_handled_or_ignored() -> None:
    before = {sig: signal.getsignal(sig) for sig in cli.STOPPING}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # `nohup deploy ...`: a hang-up is not deployer's to handle
    try:
        with cli._signals_as_ctrl_c():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            with pytest.raises(interrupt.Terminated) as raised:
                os.kill(os.getpid(), signal.SIGTERM)
                signal.sigtimedwait([], 0.1)  # let the handler run
            assert raised.value.signum == signal.SIGTERM and raised.value.name == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]  # put back after the command
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_after_a_hang_up_what_went_to_the_terminal_goes_nowhere() -> None:
    """A hung-up terminal fails every write (EIO), and no longer says it is a terminal; the fds
    that were one when the command began write to /dev/null, so each host's clean-up runs whole."""
    master, slave = os.openpty()
    terminal = os.dup(slave)
    try:
        cli._leave((terminal,))
        assert os.write(terminal, b"progress\n") == 9
        assert not select.select([master], [], [], 0.2)[0], "it still reached the terminal"
        assert os.write(slave, b"x") == 1  # only the fd named was moved
    finally:
        for fd in (master, slave, terminal):
            os.close(fd)


def test_a_stopped_ship_with_json_still_prints_each_hosts_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`deploy ship -p ... --json` stopped by SIGTERM (a cancelled CI job): the records the stop
    carries (deployer.oneshot.pipeline) go to stdout, then the signal's exit code."""
    from deployer.cli import ship_playbook
    from deployer.oneshot.report import HostReport
    from deployer.ship.model import ShipResult

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "job.yml").write_text("name: job\nhosts: gpu01\nimage: {build: .}\n")
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    gpu01: {ansible_host: 127.0.0.1}\n")
    report = HostReport(host="gpu01", ship=ShipResult(host="gpu01", via="tarball", bytes_sent=5), image="job:abc",
                        playbook="job", ship_error=Interrupted("gpu01", "SIGTERM"), state="skipped")

    def deploy(*args: object, **kwargs: object) -> None:
        stop = interrupt.Terminated(signal.SIGTERM)
        fleet.carry(stop, [report])
        raise stop

    monkeypatch.setattr(ship_playbook, "deploy", deploy)
    monkeypatch.setattr(ship_playbook._LocalDocker, "__call__", lambda self: object())  # no Docker here
    code = cli.main(["-i", str(tmp_path / "hosts.yml"), "ship", "-p", str(tmp_path / "job.yml"), "--json"])
    out, err = capsys.readouterr()
    assert code == 143 and err.endswith("terminated\n"), err
    [rec] = json.loads(out)
    assert (rec["host"], rec["ok"], rec["error"], rec["bytes_sent"]) == ("gpu01", False, "interrupted (SIGTERM)", 5)


def test_json_for_a_reader_that_went_away_is_dropped_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C at a terminal stops `deploy ... --json | jq` too: the records then have no reader."""
    read, write = os.pipe()
    os.close(read)
    stdout = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    output.emit_json_on_stop([{"host": "gpu01"}])  # no BrokenPipeError
    stdout.write("more")
    stdout.flush()  # the exit's flush too: stdout now goes to /dev/null
    stdout.close()


@pytest.mark.parametrize("command", ["ship", "run", "prune", "rollback"])
def test_a_stopped_fleet_command_with_json_still_prints_each_hosts_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """`deploy ship|run|prune|rollback --json` stopped by SIGTERM: each host's record, as the stop
    carries it (a host done, a host stopped), and a host never begun, then the signal's exit code."""
    from deployer.cli import ship as ship_cli
    from deployer.runs import prune, rollback, start
    from deployer.runs.pruning import PrunePlan
    from deployer.ship.model import ShipResult

    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    gpu01: {ansible_host: 127.0.0.1}\n"
                                        "    gpu02: {ansible_host: 127.0.0.2}\n    gpu03: {ansible_host: 127.0.0.3}\n")
    done: object = {"ship": ShipResult(host="gpu01", via="tarball", bytes_sent=7, verified=True),
                    "prune": prune.Pruned("gpu01", PrunePlan((), ()), dry_run=False)}.get(
        command, start.Started("gpu01", "job", "d" * 64, "sha256:" + "c" * 64, "docker run ...", "all"))

    def stopped(hosts: list[object], *args: object, **kwargs: object) -> None:
        a, b, _ = hosts
        interrupt.request("SIGTERM")  # as the signal's handler does
        stop = interrupt.Terminated(signal.SIGTERM)
        fleet.carry(stop, [fleet.Outcome(a, done), fleet.Outcome(b, error=Interrupted("gpu02", "SIGTERM"))])
        raise stop

    target, name, args = {"ship": (ship_cli, "ship_image", ["--image", "job:1"]),
                          "run": (start, "start", ["--image", "job:1"]),
                          "prune": (prune, "prune", []),
                          "rollback": (rollback, "rollback", ["job"])}[command]
    monkeypatch.setattr(target, name, stopped)
    try:
        code = cli.main(["-i", str(tmp_path / "hosts.yml"), command, "--host", "all", *args, "--json"])
    finally:
        interrupt.reset()
    out, err = capsys.readouterr()
    assert code == 143 and err.endswith("terminated\n"), err
    one, two, three = json.loads(out)
    assert [r["host"] for r in (one, two, three)] == ["gpu01", "gpu02", "gpu03"]
    assert (one["ok"], one["error"]) == (True, None)
    # run, prune and rollback records say the error as the terminal does (host, hint), ship's without
    assert not two["ok"] and "interrupted (SIGTERM)" in two["error"]
    assert not three["ok"] and "not started: interrupted (SIGTERM)" in three["error"]
    if command == "ship":
        assert one["bytes_sent"] == 7
    elif command == "prune":
        assert one["bytes_freed"] == 0 and three["removed"] == []
    else:
        assert one["container_id"] == "d" * 64
