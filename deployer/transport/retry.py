"""Retry policy (tenacity): transient failures only, exponential backoff with jitter, bounded time.

Retried: ConnectError, TransferError(transient=True), socket timeouts/resets, paramiko channel
errors. Never: AuthError, HostKeyError, CommandError, PreflightError, LockError, usage errors.
A host not reached yet that refuses the connection, has no route or no name, or does not answer
at all (it is down or filtered, or the inventory is wrong) is retried for UNREACHABLE_BUDGET_S
only, not the whole budget: a fleet command with one server switched off ends in seconds. Once
reached, a host that drops gets it all; so does a failed SSH handshake (sshd's MaxStartups). A
site relay's part of a send gives up on a relay that is down as soon (GiveUp), its hosts going
direct.
tenacity cannot retry a generator: make the retried unit "reconnect, re-read the offset, send
the rest" and call it through retrying().
"""
from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import paramiko
import tenacity

from deployer import interrupt
from deployer.errors import ConnectError, DeployError, HostError
from deployer.inventory.host import Host
from deployer.transport.ssh import SshSession, connect

log = logging.getLogger("deployer.retry")

T = TypeVar("T")
DEFAULT_BUDGET_S = 120.0
UNREACHABLE_BUDGET_S = 15.0


def _any_host(host: str) -> bool:
    return True


@dataclass(frozen=True)
class GiveUp:
    """When retries stop before the budget is spent: once AFTER_S have passed, on a ConnectError
    saying that a host OF accepts is unreachable (it refused, has no route or no name, or did not
    answer: deployer.transport.dial). An attempt under way is let finish. A host's first connection
    gives up so (it is down, or the inventory is wrong); so does a relay's part of a send, where
    a direct send is the fallback (OF: the relay, not the host the send goes to)."""

    after_s: float = UNREACHABLE_BUDGET_S
    of: Callable[[str], bool] = _any_host

    def now(self, exc: BaseException | None, spent: float) -> bool:
        return (isinstance(exc, ConnectError) and exc.unreachable and spent >= self.after_s
                and self.of(exc.host))


def budget_seconds(default: float = DEFAULT_BUDGET_S) -> float:
    """Total time retries may take: DEPLOYER_RETRY_BUDGET (seconds) or the default."""
    raw = os.environ.get("DEPLOYER_RETRY_BUDGET")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            log.warning("ignoring DEPLOYER_RETRY_BUDGET=%r: not a number", raw)
    return default


def is_transient(exc: BaseException) -> bool:
    """True for failures that may well succeed on a new attempt."""
    if isinstance(exc, HostError):
        return bool(exc.transient)
    if isinstance(exc, DeployError):
        return False
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException)):
        return False
    if isinstance(exc, (paramiko.ChannelException, paramiko.SSHException, EOFError)):
        return True
    if isinstance(exc, (socket.timeout, TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError))


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, HostError):
        return exc.reason.splitlines()[0]
    return f"{type(exc).__name__}: {exc}"


def retrying(
    fn: Callable[[], T],
    *,
    what: str,
    host: str,
    budget_s: float | None = None,
    initial_s: float = 1.0,
    max_wait_s: float = 20.0,
    on_retry: Callable[[int, BaseException], None] | None = None,
    give_up: GiveUp | None = None,
) -> T:
    """Call fn(), retrying transient failures until it succeeds or the time budget is spent.

    GIVE_UP: stop sooner on an unreachable host, as it says. The last error is re-raised; an
    untranslated low-level transient error becomes ConnectError.
    """
    budget = budget_seconds() if budget_s is None else budget_s

    def stop(state: tenacity.RetryCallState) -> bool:
        spent = state.seconds_since_start or 0.0
        if spent >= budget:
            return True
        return give_up is not None and give_up.now(state.outcome.exception() if state.outcome else None, spent)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s failed (attempt %d): %s; retrying in %.1fs", host, what, state.attempt_number,
                    _reason(exc), wait)
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, exc)

    def attempt() -> T:
        interrupt.check()  # Ctrl-C: no new attempt
        return fn()

    retryer = tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda exc: is_transient(exc) and not interrupt.requested()),
        sleep=interrupt.sleep,  # a back-off ends early on Ctrl-C, and the next attempt does not start
        stop=stop,
        wait=tenacity.wait_exponential(multiplier=initial_s, max=max_wait_s) + tenacity.wait_random(0, initial_s),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retryer(attempt)
    except DeployError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise ConnectError(host, f"{what} failed: {_reason(exc)}",
                               hint="the connection kept failing; check the network and retry") from exc
        raise


def retry_transient(what: str, *, budget_s: float | None = None,
                    initial_s: float = 1.0) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator form of retrying(); the host in messages comes from a `host` kwarg/attribute if any."""

    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> T:
            host = kwargs.get("host") or (getattr(args[0], "name", None) if args else None) or "-"
            return retrying(lambda: fn(*args, **kwargs), what=what, host=str(getattr(host, "name", host)),
                            budget_s=budget_s, initial_s=initial_s)

        return wrapper

    return deco


def connect_retrying(host: Host, *, timeout: float = 10.0, budget_s: float | None = None,
                     first: bool = True) -> SshSession:
    """connect(host) under the transient-failure policy (host-key and auth failures stop at once).
    FIRST: the command has not reached the host yet (an unreachable one gives up sooner)."""
    return retrying(lambda: connect(host, timeout=timeout), what="connect", host=host.name, budget_s=budget_s,
                    give_up=GiveUp() if first else None)
