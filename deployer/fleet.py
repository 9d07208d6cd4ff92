"""Run one function per host in parallel; one host's failure never hides the others."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from deployer import interrupt
from deployer.errors import DeployError, HostError, Interrupted
from deployer.inventory.host import Host

log = logging.getLogger(__name__)

WIND_DOWN_S = 15.0  # after Ctrl-C, how long the hosts' work may take to unwind (unlock, history)
WAKE_S = 0.25  # the main thread's waits are sliced so that a signal is handled at once

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The result of one host's work: its value, or the error that stopped it together with the
    value of what was done before (when the work said so, by raising Unfinished)."""

    host: Host
    value: T | None = None
    error: DeployError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Unfinished(Exception):  # a signal from a host's work to for_each_host
    """Raised by a host's work: ERROR stopped it, PARTIAL is what it had done (Outcome.value)."""

    def __init__(self, error: DeployError, partial: object) -> None:
        super().__init__(str(error))
        self.error, self.partial = error, partial


def for_each_host(hosts: Iterable[Host], work: Callable[[Host], T], parallel: int = 8, *,
                  undo: bool = False) -> list[Outcome[T]]:
    """Call work(host) for every host, at most `parallel` at once; results keep host order.

    DeployErrors are captured per host; anything else is wrapped as a HostError so that
    a bug on one host still leaves the other hosts' results intact.

    Ctrl-C (in the main thread) stops every host's work at its next step (deployer.interrupt):
    each unwinds through its failure path (lock released, partial blobs kept) for up to
    WIND_DOWN_S, no host starts anew, and KeyboardInterrupt goes on once they have; a second
    Ctrl-C leaves at once. The workers are daemon threads, so a host still stuck then (a TCP
    connect to a host that is down) does not keep the process alive. UNDO: WORK takes back what
    Ctrl-C interrupted (it runs after Ctrl-C, and is not interrupted itself).
    """
    hosts = list(hosts)
    if not hosts:
        return []
    outcomes: list[Outcome[T] | None] = [None] * len(hosts)
    queue = iter(enumerate(hosts))
    take = threading.Lock()

    def one(host: Host) -> Outcome[T]:
        with interrupt.work(host.name, interruptible=not undo):
            try:
                interrupt.check()
                return Outcome(host, value=work(host))
            except Unfinished as unfinished:
                return Outcome(host, value=unfinished.partial, error=unfinished.error)  # type: ignore[arg-type]
            except DeployError as exc:
                return Outcome(host, error=exc)
            except Exception as exc:  # noqa: BLE001 - reported per host, traceback with -v
                err = HostError(host.name, f"unexpected error: {type(exc).__name__}: {exc}")
                err.__cause__ = exc
                return Outcome(host, error=err)

    def worker() -> None:
        try:
            while True:
                with take:
                    item = next(queue, None)
                if item is None:
                    return
                index, host = item
                if interrupt.requested() and not undo:  # Ctrl-C: no host starts anew
                    outcomes[index] = Outcome(host, error=Interrupted(host.name, interrupt.why(), started=False))
                else:
                    outcomes[index] = one(host)
        finally:
            with finished:
                running[0] -= 1
                finished.notify_all()

    # Waited for through a condition, not Thread.join: a join that Ctrl-C interrupted leaves the
    # thread looking finished to every later join and is_alive() (CPython), which the wind-down needs.
    finished = threading.Condition()
    running = [0]

    def wait(timeout: float | None = None) -> bool:
        # in slices: a signal (Ctrl-C, SIGTERM, SIGHUP) is handled when this thread next runs Python;
        # a wait with no end was seen not to wake for one (unit tests, three suites at once on 2 cores)
        end = None if timeout is None else time.monotonic() + timeout
        with finished:
            while running[0]:
                left = WAKE_S if end is None else min(WAKE_S, end - time.monotonic())
                if left <= 0:
                    return False
                finished.wait(left)
            return True

    try:
        for i in range(max(1, min(parallel, len(hosts)))):
            with finished:
                running[0] += 1
            threading.Thread(target=worker, name=f"host-work-{i}", daemon=True).start()
        wait()
    except KeyboardInterrupt as exc:
        interrupt.request(interrupt.named(exc))
        if not wait(0.5):  # longer work than a status or a check: say what happens
            log.warning("interrupted: stopping the work on each host (Ctrl-C again to quit at once)")
            wait(WIND_DOWN_S)
            log.warning("interrupted: %s", wind_down_summary(hosts, outcomes))
        carry(exc, [o or Outcome(h, error=Interrupted(h.name, interrupt.why())) for h, o in zip(hosts, outcomes)])
        raise
    return [o for o in outcomes if o is not None]


def carry(stop: BaseException, said: object) -> None:
    """Let the Ctrl-C (SIGTERM, SIGHUP) that stopped a command carry what it has to say about each
    host (for_each_host: the outcomes; a later caller may put its own view in their place), so
    that --json still prints it (deployer.cli); or the error that ended it before any host's work
    (a `ship -p`'s build)."""
    stop.said = said  # type: ignore[attr-defined]


def carried(stop: BaseException) -> object:
    """What the stop carries (carry), or None."""
    return getattr(stop, "said", None)


def stopped_outcomes(stop: BaseException, hosts: Sequence[Host], kind: type[T]) -> list[Outcome[T]]:
    """Each of HOSTS' outcome as the STOP carries it from for_each_host, if its work gives KIND (a
    stop in another step, a probe say, carries other values); else interrupted before it began."""
    said = carried(stop)
    found = {o.host.name: o for o in (said if isinstance(said, list) else [])
             if isinstance(o, Outcome) and (isinstance(o.value, kind) or (o.value is None and o.error is not None))}
    # the stop names its signal: a stop outside any host's work (a build) asked no one to stop
    return [found.get(h.name) or Outcome(h, error=Interrupted(h.name, interrupt.named(stop), started=False))
            for h in hosts]


def wind_down_summary(hosts: Sequence[Host], outcomes: Sequence[Outcome[Any] | None]) -> str:
    """Where each host stands after Ctrl-C: done, stopped (or failed), not started, still stopping."""
    groups: dict[str, list[str]] = {}
    for host, outcome in zip(hosts, outcomes):
        if outcome is None:
            state = "still stopping"
        elif outcome.ok:
            state = "done"
        elif isinstance(outcome.error, Interrupted):
            state = "stopped" if outcome.error.started else "not started"
        else:
            state = "failed"
        groups.setdefault(state, []).append(host.name)
    return "; ".join(f"{state} on {', '.join(names)}" for state, names in groups.items())
