"""Connections opened while the workstation reads the local image (deployer.ship.conn.EarlyConnects)."""
from __future__ import annotations

import threading
import time

import pytest
from ctrl_c import ctrl_c_during

from deployer import interrupt
from deployer.errors import Interrupted, TransferError
from deployer.inventory.host import Host
from deployer.ship import conn as conn_mod
from deployer.ship.conn import EarlyConnects, HostConn
from deployer.transport.retry import UNREACHABLE_BUDGET_S, GiveUp


class _Session:
    def __init__(self, name: str) -> None:
        self.name, self.alive, self.closed = name, True, False

    def close(self) -> None:
        self.closed, self.alive = True, False


class _Connector:
    """Counts connects; each waits for GATE (when given) and fails while FAIL is set."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.made: list[_Session] = []
        self.gate, self.fail = gate, False
        self.started = threading.Event()
        self.inside = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, host: Host) -> _Session:
        with self._lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        self.started.set()
        try:
            return self._connect(host)
        finally:
            with self._lock:
                self.inside -= 1

    def _connect(self, host: Host) -> _Session:
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail:
            raise TransferError(host.name, "connection refused", transient=True)
        self.made.append(_Session(host.name))
        return self.made[-1]


def _wait(cond: object, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_the_ships_connect_uses_the_connection_made_meanwhile() -> None:
    gate = threading.Event()
    connector = _Connector(gate)
    conn = HostConn(Host("gpu01"), connector=connector)  # type: ignore[arg-type]
    EarlyConnects([conn], parallel=4)
    assert connector.started.wait(5)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(conn.connect()))
    waiter.start()
    time.sleep(0.05)
    assert not got  # the ship's connect waits for the handshake under way...
    gate.set()
    waiter.join(5)
    assert got == connector.made and len(connector.made) == 1  # ...and uses it: one connection


def test_a_failed_early_connect_is_left_to_the_ships_own() -> None:
    connector = _Connector()
    connector.fail = True
    conn = HostConn(Host("gpu01"), connector=connector)  # type: ignore[arg-type]
    early = EarlyConnects([conn], parallel=1)
    _wait(lambda: early._done)
    connector.fail = False
    assert conn.connect() is connector.made[0]


def test_cancel_closes_what_was_made_and_what_is_still_being_made() -> None:
    gate = threading.Event()
    fast, slow = _Connector(), _Connector(gate)
    a = HostConn(Host("a"), connector=fast)  # type: ignore[arg-type]
    b = HostConn(Host("b"), connector=slow)  # type: ignore[arg-type]
    early = EarlyConnects([a, b], parallel=2)
    _wait(lambda: len(fast.made) == 1 and slow.started.is_set())
    _wait(lambda: a in early._done)
    early.cancel()  # returns at once: b's handshake is still under way
    assert fast.made[0].closed
    gate.set()
    _wait(lambda: len(slow.made) == 1 and slow.made[0].closed)


def test_at_most_parallel_connects_at_once() -> None:
    gate = threading.Event()
    connector = _Connector(gate)
    conns = [HostConn(Host(f"h{i}"), connector=connector) for i in range(5)]  # type: ignore[arg-type]
    def workers() -> int:
        return sum(1 for t in threading.enumerate() if t.name.startswith("connect-"))

    before = workers()
    early = EarlyConnects(conns, parallel=2)
    assert connector.started.wait(5)
    time.sleep(0.1)
    assert connector.inside == 2 and not connector.made  # two handshakes under way, three waiting
    assert workers() - before == 2  # two threads, whatever the number of hosts
    gate.set()
    _wait(lambda: len(early._done) == 5)
    assert len(connector.made) == 5 and connector.peak == 2


def test_ctrl_c_stops_an_early_connect_that_hangs_and_the_ships_own() -> None:
    """A host that is down: its early connect hangs (here: checks for Ctrl-C, as dial.connect does
    between its slices) while the ship's own connect waits for it; Ctrl-C ends both at once."""

    def hanging(host: Host) -> _Session:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            interrupt.check()
            time.sleep(0.01)
        raise AssertionError("the connect was never interrupted")

    conn = HostConn(Host("down01"), connector=hanging)  # type: ignore[arg-type]
    early = EarlyConnects([conn], parallel=1)
    raised, took = ctrl_c_during(conn.connect)
    assert isinstance(raised, Interrupted) and took < 1 and early._done == [conn]


def test_only_a_host_never_reached_gives_up_early_when_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shorter retry budget for a host that refuses or has no route applies to its first
    connection; once reached, a host whose link dropped is retried for the whole budget."""
    seen: list[GiveUp | None] = []
    real = conn_mod.retrying

    def spy(fn, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("give_up"))
        return real(fn, **kwargs)

    monkeypatch.setattr(conn_mod, "retrying", spy)
    connector = _Connector()
    conn = HostConn(Host("gpu01"), connector=connector)  # type: ignore[arg-type]
    first = conn.connect()
    first.alive = False  # the link dropped: the next connect is a reconnect
    conn.connect()
    assert seen == [GiveUp(UNREACHABLE_BUDGET_S), None] and len(connector.made) == 2
    given = HostConn(Host("gpu02"), connector=connector, session=_Session("gpu02"))  # type: ignore[arg-type]
    given.connect()
    assert seen[-1] is None
