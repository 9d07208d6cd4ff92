"""Ctrl-C in a fleet command: each host's work stops at its next step, through its failure path.

Python raises KeyboardInterrupt in the main thread only, while the hosts' work runs in worker
threads (deployer.fleet). The main thread turns Ctrl-C into request(); each worker's next check
(before a remote command starts, between the chunks it sends, while it waits for a command or a
retry) raises Interrupted in it, once. From there the host's work unwinds exactly as after any
other failure: the lock is released, the history says why, a partial blob stays for the next
ship to resume; the checks after the first pass, so that clean-up runs to its end.

Only threads that do a host's work for deployer.fleet are interrupted: the main thread has its
KeyboardInterrupt, and a helper thread stops when the worker that owns it does, or takes on that
host's work (host(), begin_work) when the worker waits for it. SIGTERM and SIGHUP are handled as
Ctrl-C is (deployer.cli raises Terminated, a KeyboardInterrupt, in the main thread).
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from deployer.errors import Interrupted


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, `timeout`, a service stopping) or SIGHUP (the terminal closed,
    the SSH session to the workstation dropped): stopped as Ctrl-C stops a command, with the
    signal's exit code (128 + its number: 143, 129) instead of 130."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        super().__init__(self.name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_requested = threading.Event()
_why = ["Ctrl-C"]  # what asked: Ctrl-C, SIGTERM or SIGHUP
_local = threading.local()  # .host: whose work runs here (None: no host's); .raised: it was interrupted


def request(why: str = "Ctrl-C") -> None:
    """Ctrl-C (or WHY): every host's work stops at its next check."""
    _why[0] = why
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def why() -> str:
    """What asked for the stop: "Ctrl-C", "SIGTERM" or "SIGHUP"."""
    return _why[0]


def named(stop: BaseException) -> str:
    """What STOP says stopped the command: its signal's name (SIGTERM, SIGHUP), else Ctrl-C."""
    return stop.name if isinstance(stop, Terminated) else "Ctrl-C"


def reset() -> None:
    """Forget a request (a new command in the same process starts clean)."""
    _requested.clear()


def begin_work(host: str, *, interruptible: bool = True) -> None:
    """This thread now does HOST's work: checks in it may raise Interrupted (unless not
    INTERRUPTIBLE: the work takes back what Ctrl-C interrupted)."""
    _local.host, _local.raised = host, not interruptible


def host() -> str | None:
    """The host whose work this thread does (None: no host's), for a helper thread to take on."""
    return getattr(_local, "host", None)


def end_work() -> None:
    _local.host = None


@contextmanager
def work(host: str, *, interruptible: bool = True) -> Iterator[None]:
    """begin_work(HOST) for the block, end_work() after it, however it ends."""
    begin_work(host, interruptible=interruptible)
    try:
        yield
    finally:
        end_work()


def check() -> None:
    """Raise Interrupted (once per host's work) if Ctrl-C was pressed and this thread does a
    host's work; after that, the work's clean-up runs to its end. It names the host whose work
    stops, whichever host the step was for (a site's relay, say)."""
    host = getattr(_local, "host", None)
    if _requested.is_set() and host is not None and not getattr(_local, "raised", False):
        _local.raised = True
        raise Interrupted(host, _why[0])


def sleep(seconds: float) -> None:
    """time.sleep that ends early on Ctrl-C (a retry's back-off need not be waited out)."""
    _requested.wait(seconds)
