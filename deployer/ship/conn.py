"""A host connection that reconnects: idempotent remote steps survive a dropped link."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from deployer import interrupt
from deployer.inventory.host import Host
from deployer.transport import connect
from deployer.transport.result import Result
from deployer.transport.retry import GiveUp, is_transient, retrying
from deployer.transport.session import Session

log = logging.getLogger(__name__)

Connector = Callable[[Host], Session]


class HostConn:
    """One host's current session; `run` retries transient failures on a fresh connection.

    Only idempotent commands go through `run` (stat, verify, mkdir, tag, inspect, load of the
    same tar); the resumable blob send has its own loop (deployer.ship.tarball).
    """

    def __init__(self, host: Host, *, timeout: float = 10.0, connector: Connector | None = None,
                 session: Session | None = None) -> None:
        self.host = host
        self.timeout = timeout
        # one attempt per call: the retry policy wraps whole steps (connect included), never nests
        self._connector = connector or (lambda h: connect(h, timeout=timeout))
        self._session = session
        self._reached = session is not None  # a host never reached that is unreachable is not waited for long
        self._lock = threading.RLock()  # steps of one host may overlap (parallel channels)
        self.reconnects = 0

    @property
    def name(self) -> str:
        return self.host.name

    def session(self) -> Session:
        """The live session, reconnecting (one attempt) when it died."""
        with self._lock:
            if self._session is not None and getattr(self._session, "alive", True):
                return self._session
            if self._session is not None:
                self.drop()
                self.reconnects += 1
                log.info("%s: reconnecting", self.name)
            self._session = self._connector(self.host)
            self._reached = True
            return self._session

    def connect(self) -> Session:
        """The session, connecting under the transient retry policy (auth/host-key errors stop at
        once; a host never reached that refuses, has no route or does not answer, after UNREACHABLE_BUDGET_S)."""
        return retrying(self.session, what="connect", host=self.name, on_retry=lambda _n, _e: self.drop(),
                        give_up=None if self._reached else GiveUp())

    def drop(self, failed: Session | None = None) -> None:
        """Forget the session (the one that failed, if given: a newer one made by another thread stays)."""
        with self._lock:
            if failed is not None and failed is not self._session:
                return
            session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead link may fail any way it likes
                log.debug("%s: closing a dropped session: %s", self.name, exc)

    def run(self, argv: Sequence[str], *, what: str = "remote command", give_up: GiveUp | None = None,
            **kwargs: Any) -> Result:
        """session.run under the transient retry policy (reconnecting between attempts; GIVE_UP: retrying's)."""

        def attempt() -> Result:
            session = self.session()
            try:
                return session.run(argv, **kwargs)
            except Exception as exc:
                if is_transient(exc):
                    self.drop(session)
                raise

        return retrying(attempt, what=what, host=self.name, give_up=give_up)

    def detach(self) -> Session | None:
        """The live session, now the caller's to use and close (None if it died); this conn forgets it."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None and not getattr(session, "alive", True):
            session.close()
            return None
        return session

    def close(self) -> None:
        self.drop()


class EarlyConnects:
    """Open hosts' connections in the background (at most PARALLEL at once) while the caller does
    local work that needs none of them yet; a HostConn whose connect is under way makes its other
    users wait for it (HostConn.session). A failure is left for the caller's own connect, which
    retries as usual. cancel(): the caller gave up (the local work failed), so every connection
    made or being made is closed, without waiting for one still under way."""

    def __init__(self, conns: Sequence[HostConn], parallel: int) -> None:
        self._lock = threading.Lock()
        self._pending = iter(conns)
        self._done: list[HostConn] = []
        self._cancelled = False
        for i in range(max(1, min(parallel, len(conns)))):  # daemon threads: never delay the exit
            threading.Thread(target=self._work, name=f"connect-{i}", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                conn = None if self._cancelled else next(self._pending, None)
            if conn is None:
                return
            try:
                with interrupt.work(conn.name):  # Ctrl-C stops a connect that hangs (the host is down) at once
                    conn.session()
            except Exception as exc:  # noqa: BLE001 - the ship's own connect reports it, after its retries
                log.debug("%s: early connect failed: %s", conn.name, exc)
            with self._lock:
                self._done.append(conn)
                cancelled = self._cancelled
            if cancelled:
                conn.close()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            done = list(self._done)
        for conn in done:
            conn.close()
