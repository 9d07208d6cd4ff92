"""`deploy logs`: stream a container's output; with follow, survive dropped connections.

Following always asks docker for timestamps; after a drop we reconnect and resume with
`--since <last timestamp seen>` (inclusive), skipping the lines at that instant we already
printed, so nothing repeats. Timestamps are stripped again unless the user asked for them.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime

from deployer.commands import run as cmd
from deployer.errors import HostError
from deployer.inventory.host import Host
from deployer.transport import connect
from deployer.transport.retry import budget_seconds
from deployer.transport.session import Session

log = logging.getLogger(__name__)

_TS = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ")


def timestamp_ns(line: bytes) -> tuple[int, int] | None:
    """(ns since epoch, prefix length) of a docker --timestamps line, or None."""
    m = _TS.match(line)
    if not m:
        return None
    tz = "+00:00" if m.group(3) == b"Z" else m.group(3).decode()
    secs = int(datetime.fromisoformat(m.group(1).decode() + tz).timestamp())
    frac = (m.group(2) or b"").decode().ljust(9, "0")
    return secs * 1_000_000_000 + int(frac), m.end()


class LogCursor:
    """Turns timestamped chunks into lines to print, remembering where to resume (pure).

    Docker copies a container's stdout and stderr separately, so the merged stream is not
    strictly in timestamp order: every line of a live stream is printed. Only after a resume
    (`--since` is inclusive) are the lines at the resume instant that were printed before dropped.
    """

    def __init__(self, keep_timestamps: bool) -> None:
        self.keep_timestamps = keep_timestamps
        self.last_ns: int | None = None  # the latest timestamp printed
        self.last_raw: str | None = None  # ... as docker printed it
        self.at_last = 0  # lines printed with exactly last_ns, over every connection
        self._floor: int | None = None  # on resume: the --since instant
        self._skip = 0  # on resume: lines at the floor still to drop
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Complete lines (with newline) from chunk that should be printed."""
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [out for line in lines if (out := self._line(line + b"\n")) is not None]

    def flush(self) -> list[bytes]:
        """A final unterminated line at a clean end of stream."""
        rest, self._buf = self._buf, b""
        out = self._line(rest) if rest else None
        return [out] if out is not None else []

    def _line(self, line: bytes) -> bytes | None:
        ts = timestamp_ns(line)
        if ts is None:
            return line  # not docker's format: pass through untouched
        ns, end = ts
        if self._floor is not None:
            if ns < self._floor:
                return None
            if ns == self._floor and self._skip:
                self._skip -= 1
                return None
        if self.last_ns is None or ns > self.last_ns:
            self.last_ns, self.at_last = ns, 1
            self.last_raw = line[: end - 1].decode()
        elif ns == self.last_ns:
            self.at_last += 1
        return line if self.keep_timestamps else line[end:]

    def resume(self) -> str | None:
        """Forget the partial line of a dropped stream; the --since value to resume from."""
        self._buf = b""
        self._floor, self._skip = self.last_ns, self.at_last
        return self.last_raw


def _check_exists(session: Session, host: Host, name: str) -> None:
    """UsageError (exit 2, with the names that exist) when there is no such container."""
    from deployer.runs.manage import unknown_name

    res = session.run(cmd.container_inspect_argv(host.docker, name), check=False)
    if not res.ok and "no such" in res.stderr.lower():
        names = tuple(n for n in session.run(cmd.names_argv(host.docker)).stdout.splitlines() if n)
        raise unknown_name(name, names, [host.name])


def show(host: Host, name: str, write: Callable[[bytes], None], *, follow: bool = False,
         tail: str | None = None, since: str | None = None, timestamps: bool = False,
         timeout: float = 10.0, on_reconnect: Callable[[str], None] | None = None) -> None:
    """Write the container's logs; with follow, reconnect after drops without repeating lines."""
    if not follow:
        with connect(host, timeout=timeout) as session:
            _check_exists(session, host, name)
            for chunk in session.stream(cmd.logs_argv(host.docker, name, tail=tail, since=since,
                                                      timestamps=timestamps)):
                write(chunk)
        return
    cursor = LogCursor(timestamps)
    budget = budget_seconds()
    deadline: float | None = None
    pause = 0.25
    first = True
    while True:
        try:
            with connect(host, timeout=timeout) as session:
                if first:
                    _check_exists(session, host, name)
                resume_at = None if first else cursor.resume()
                argv = cmd.logs_argv(host.docker, name, follow=True, timestamps=True,
                                     tail=tail if resume_at is None else None, since=resume_at or since)
                first, deadline, pause = False, None, 0.25
                for chunk in session.stream(argv):
                    for line in cursor.feed(chunk):
                        write(line)
            for line in cursor.flush():
                write(line)
            return
        except HostError as exc:
            if not exc.transient:
                raise
            now = time.monotonic()
            deadline = deadline or now + budget
            if now >= deadline:
                raise
            why = exc.reason.splitlines()[0].split(" while ", 1)[0]
            if on_reconnect is not None:
                on_reconnect(why)
            log.info("%s: log stream dropped (%s); reconnecting", host.name, why)
            time.sleep(min(pause, max(0.0, deadline - now)))
            pause = min(pause * 2, 4.0)
