"""for_each_host: one Outcome per host, in host order; errors stay per host, with partial values."""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from deployer import fleet, interrupt
from deployer.errors import HostError, Interrupted
from deployer.fleet import Unfinished, for_each_host
from deployer.inventory.host import Host


def test_values_errors_and_partial_values_per_host() -> None:
    def work(host: Host) -> int:
        if host.name == "bad":
            raise HostError(host.name, "boom")
        if host.name == "half":
            raise Unfinished(HostError(host.name, "cut"), 7)
        if host.name == "bug":
            raise KeyError("x")
        return 1

    hosts = [Host(n) for n in ("ok", "bad", "half", "bug")]
    out = for_each_host(hosts, work, parallel=2)
    assert [o.host.name for o in out] == ["ok", "bad", "half", "bug"]
    assert (out[0].ok, out[0].value) == (True, 1)
    assert not out[1].ok and out[1].value is None and "boom" in str(out[1].error)
    assert not out[2].ok and out[2].value == 7 and "cut" in str(out[2].error)
    assert not out[3].ok and "unexpected error: KeyError" in str(out[3].error)



# Ctrl-C: Python raises KeyboardInterrupt in the main thread, where for_each_host waits; here a
# helper thread sends SIGINT there once a host's work is under way.

@pytest.fixture(autouse=True)
def _clean_interrupt() -> Iterator[None]:
    # as at a terminal: a shell's `cmd &` (scripts/pythons runs these lanes so) ignores SIGINT
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt.reset()
    try:
        yield
    finally:
        interrupt.reset()
        signal.signal(signal.SIGINT, before)


def _until(seconds: float) -> Iterator[None]:
    """A host's loop of steps, bounded so that a test that goes wrong fails instead of hanging."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield
    raise AssertionError("the work was never interrupted")


def _ctrl_c_once(under_way: threading.Event) -> None:
    def press() -> None:
        if under_way.wait(timeout=5):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    threading.Thread(target=press, daemon=True).start()


def test_ctrl_c_stops_each_hosts_work_at_its_next_check_and_lets_its_clean_up_run(
        caplog: pytest.LogCaptureFixture) -> None:
    under_way = threading.Event()
    cleaned: list[str] = []
    started: list[str] = []

    def work(host: Host) -> int:
        started.append(host.name)
        if host.name == "quick":
            return 1
        try:
            under_way.set()
            for _ in _until(20):  # a send: a check between chunks
                interrupt.check()
                time.sleep(0.01)
        except Interrupted:
            time.sleep(0.6)  # the unlock and the history record take a round trip
            interrupt.check()  # clean-up's own remote commands are not interrupted
            cleaned.append(host.name)
            raise

    _ctrl_c_once(under_way)
    caplog.set_level(logging.WARNING, logger="deployer.fleet")
    hosts = [Host("quick"), Host("slow"), Host("later")]
    with pytest.raises(KeyboardInterrupt) as stop:
        for_each_host(hosts, work, parallel=1)
    assert started == ["quick", "slow"] and cleaned == ["slow"]
    assert interrupt.requested()
    # the stop carries each host's outcome, for --json (deployer.cli)
    quick, slow, later = fleet.stopped_outcomes(stop.value, hosts, int)
    assert (quick.ok, quick.value) == (True, 1)
    assert isinstance(slow.error, Interrupted) and slow.error.started
    assert isinstance(later.error, Interrupted) and not later.error.started
    # a caller whose work gives other values (a stop in another step) gets each host interrupted
    assert [str(o.error).splitlines()[0] for o in fleet.stopped_outcomes(stop.value, hosts[:2], str)] == [
        "quick: not started: interrupted (Ctrl-C)", "slow: interrupted (Ctrl-C)"]
    assert "interrupted: stopping the work on each host (Ctrl-C again to quit at once)" in caplog.text
    assert "interrupted: done on quick; stopped on slow; not started on later" in caplog.text


def test_a_stop_outside_any_hosts_work_names_its_own_signal() -> None:
    """SIGTERM while building (`ship -p`): no host's work ran, so nothing asked the hosts to stop;
    each host's record still says what stopped the command."""
    hosts = [Host("gpu01"), Host("gpu02")]
    assert not interrupt.requested()
    for stop, said in ((interrupt.Terminated(signal.SIGTERM), "SIGTERM"), (interrupt.Terminated(signal.SIGHUP),
                                                                           "SIGHUP"), (KeyboardInterrupt(), "Ctrl-C")):
        assert [str(o.error).splitlines()[0] for o in fleet.stopped_outcomes(stop, hosts, int)] == [
            f"gpu01: not started: interrupted ({said})", f"gpu02: not started: interrupted ({said})"]


def test_ctrl_c_waits_a_bounded_time_for_a_host_stuck_where_no_check_runs(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fleet, "WIND_DOWN_S", 0.3)
    under_way, release = threading.Event(), threading.Event()

    def work(host: Host) -> int:
        under_way.set()
        release.wait(timeout=30)  # a TCP connect to a host that is down
        return 1

    _ctrl_c_once(under_way)
    caplog.set_level(logging.WARNING, logger="deployer.fleet")
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            for_each_host([Host("stuck")], work)
        assert time.monotonic() - began < 5
        assert "interrupted: still stopping on stuck" in caplog.text
    finally:
        release.set()


def test_quick_work_stops_on_ctrl_c_without_a_report(caplog: pytest.LogCaptureFixture) -> None:
    under_way = threading.Event()

    def work(host: Host) -> int:
        under_way.set()
        for _ in _until(20):
            interrupt.check()
            time.sleep(0.01)

    _ctrl_c_once(under_way)
    caplog.set_level(logging.WARNING, logger="deployer.fleet")
    with pytest.raises(KeyboardInterrupt):
        for_each_host([Host("a"), Host("b")], work)
    assert "interrupted" not in caplog.text  # a status or a check: Ctrl-C just ends it


def test_no_host_starts_once_ctrl_c_was_pressed() -> None:
    interrupt.request()
    out = for_each_host([Host("a")], lambda h: 1)
    assert not out[0].ok and isinstance(out[0].error, Interrupted)
    assert not out[0].error.started and out[0].error.reason == "not started: interrupted (Ctrl-C)"


def test_check_raises_once_per_hosts_work_and_only_in_a_worker() -> None:
    interrupt.request()
    interrupt.check()  # the main thread has its own KeyboardInterrupt
    raised: list[str] = []

    def worker() -> None:
        for _ in range(2):
            interrupt.begin_work("h")
            for _ in range(3):
                try:
                    interrupt.check()
                except Interrupted as exc:
                    raised.append(exc.reason)
            interrupt.end_work()
        interrupt.check()  # after the work: a helper like any other

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert raised == ["interrupted (Ctrl-C)"] * 2


def test_sleep_ends_early_on_ctrl_c() -> None:
    threading.Timer(0.1, interrupt.request).start()
    began = time.monotonic()
    interrupt.sleep(10)
    assert time.monotonic() - began < 5


def test_a_second_ctrl_c_leaves_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "WIND_DOWN_S", 30)
    under_way, release = threading.Event(), threading.Event()

    def work(host: Host) -> int:
        under_way.set()
        release.wait(timeout=60)  # stuck where no check runs
        return 1

    def press_twice() -> None:
        under_way.wait(timeout=5)
        for _ in range(2):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            time.sleep(1)

    threading.Thread(target=press_twice, daemon=True).start()
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            for_each_host([Host("stuck")], work)
        assert time.monotonic() - began < 10  # not the 30 s wind-down
    finally:
        release.set()


def test_undo_work_runs_after_ctrl_c_and_is_not_interrupted() -> None:
    """What takes back an interrupted start (the ranks of a multi-node job) still runs on every host."""
    interrupt.request()

    def undo(host: Host) -> str:
        interrupt.check()  # its remote commands go through
        return host.name

    out = for_each_host([Host("a"), Host("b")], undo, undo=True)
    assert [o.value for o in out] == ["a", "b"] and all(o.ok for o in out)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_stops_the_work_as_ctrl_c_does_and_says_so(signum: int) -> None:
    """deployer.cli raises Terminated (a KeyboardInterrupt) on SIGTERM and SIGHUP; the hosts' errors name it."""
    under_way = threading.Event()
    errors: list[Interrupted] = []

    def terminate(signum: int, frame: object) -> None:
        raise interrupt.Terminated(signum)

    def work(host: Host) -> int:
        under_way.set()
        try:
            for _ in _until(20):
                interrupt.check()
                time.sleep(0.01)
        except Interrupted as exc:
            errors.append(exc)
            raise
        return 1

    def press() -> None:
        if under_way.wait(timeout=5):
            signal.pthread_kill(threading.main_thread().ident or 0, signum)

    before = signal.signal(signum, terminate)
    try:
        threading.Thread(target=press, daemon=True).start()
        with pytest.raises(interrupt.Terminated):
            for_each_host([Host("a")], work)
    finally:
        signal.signal(signum, before)
    assert [e.reason for e in errors] == [f"interrupted ({signal.Signals(signum).name})"]
