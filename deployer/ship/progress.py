"""Progress of a ship, per host: a live rich table on a terminal, plain lines otherwise.

Reporters are called from many worker threads; every method is thread-safe and cheap.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from deployer.ship.plan import human_bytes


class Reporter(Protocol):
    def phase(self, host: str, phase: str, detail: str = "") -> None: ...
    def total(self, host: str, nbytes: int) -> None: ...
    def sent(self, host: str, nbytes: int) -> None: ...
    def held(self, host: str, nbytes: int) -> None: ...
    def note(self, host: str, message: str) -> None: ...
    def done(self, host: str, ok: bool, summary: str) -> None: ...
    def timings(self, host: str) -> tuple[tuple[str, float], ...]: ...


SETTLE_S = 1.0


@dataclass
class HostProgress:
    phase: str = "waiting"
    detail: str = ""
    total: int = 0
    sent: int = 0
    held: int = 0  # of the total, what the host had from an earlier ship (a resume): there, not sent
    started: float = field(default_factory=time.monotonic)
    send_started: float | None = None
    ok: bool | None = None
    since: float = field(default_factory=time.monotonic)  # when the current phase began
    spent: dict[str, float] = field(default_factory=dict)  # seconds per phase so far, in first-seen order

    def enter(self, phase: str) -> None:
        """Close the current phase's clock and start PHASE's (a repeated phase adds up)."""
        now = time.monotonic()
        self.spent[self.phase] = self.spent.get(self.phase, 0.0) + now - self.since
        self.phase, self.since = phase, now

    def timings(self) -> tuple[tuple[str, float], ...]:
        """Seconds per phase, the current one up to now; "waiting" (before connecting) left out."""
        spent = dict(self.spent)
        if self.ok is None:
            spent[self.phase] = spent.get(self.phase, 0.0) + time.monotonic() - self.since
        return tuple((k, v) for k, v in spent.items() if k != "waiting")

    def speed(self) -> float:
        """Average bytes/s since sending began; 0 (unknown) for the first second, whose few
        small early blobs would promise an ETA of hours."""
        elapsed = time.monotonic() - self.send_started if self.send_started else 0.0
        if elapsed < SETTLE_S or not self.sent:
            return 0.0
        return self.sent / elapsed

    def amount(self) -> str:
        """"there/total" (sent, and held from an earlier ship), "" before anything is known. The total
        is an estimate until every blob is compressed (deployer.ship.route): one that turns out low
        shows as what is there so far."""
        there = self.sent + self.held
        if not self.total and not there:
            return ""
        return f"{human_bytes(there)}/{human_bytes(max(self.total, there))}"

    def eta(self) -> float | None:
        speed, left = self.speed(), self.total - self.sent - self.held
        if speed <= 0 or left <= 0:
            return None
        return left / speed


class _Base:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hosts: dict[str, HostProgress] = {}

    def _get(self, host: str) -> HostProgress:
        return self.hosts.setdefault(host, HostProgress())

    def phase(self, host: str, phase: str, detail: str = "") -> None:
        with self._lock:
            p = self._get(host)
            if phase != p.phase:
                p.enter(phase)
            p.detail = detail
            if phase == "sending" and p.send_started is None:
                p.send_started = time.monotonic()
        self._changed(host, phase=True)

    def total(self, host: str, nbytes: int) -> None:
        with self._lock:
            self._get(host).total = nbytes

    def sent(self, host: str, nbytes: int) -> None:
        with self._lock:
            p = self._get(host)
            p.sent += nbytes
            if p.send_started is None:
                p.send_started = time.monotonic()
        self._changed(host, phase=False)

    def held(self, host: str, nbytes: int) -> None:
        with self._lock:
            self._get(host).held += nbytes

    def note(self, host: str, message: str) -> None:
        self._message(f"{host}: {message}")

    def done(self, host: str, ok: bool, summary: str) -> None:
        with self._lock:
            p = self._get(host)
            p.enter("done" if ok else "failed")
            p.ok, p.detail = ok, summary
        self._changed(host, phase=True)

    def timings(self, host: str) -> tuple[tuple[str, float], ...]:
        """Where HOST's time went so far: seconds per phase, in the order they began."""
        with self._lock:
            return self._get(host).timings()

    def _changed(self, host: str, phase: bool) -> None:
        pass

    def _message(self, text: str) -> None:
        pass


class NullReporter(_Base):
    """Tracks progress, prints nothing (library use, --json without a terminal)."""


def _bytes_line(p: HostProgress) -> str:
    text = p.amount()
    if not text:
        return ""
    speed = p.speed()
    if speed:
        text += f" {human_bytes(speed)}/s"
    eta = p.eta()
    if eta is not None:
        text += f" eta {int(eta)}s"
    return text


class PlainReporter(_Base):
    """One line per phase change, and a sending line at most every `interval` seconds."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 5.0) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last: dict[str, float] = {}

    def _changed(self, host: str, phase: bool) -> None:
        with self._lock:
            p = self._get(host)
            now = time.monotonic()
            if not phase and now - self._last.get(host, 0.0) < self.interval:
                return
            self._last[host] = now
            line = f"{host}: {p.phase}"
            if p.detail:
                line += f"{':' if p.ok is False else ''} {p.detail}"
            if p.phase == "sending" or not phase:
                line += f" {_bytes_line(p)}"
            self.stream.write(line.rstrip() + "\n")
            self.stream.flush()

    def _message(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()


class RichReporter(_Base):
    """A live table: host, phase, bytes sent/total, speed, ETA. Use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console(stderr=True)
        self._live = Live(console=self.console, refresh_per_second=4, get_renderable=self._render, transient=False)

    def __enter__(self) -> RichReporter:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def _render(self) -> Table:
        table = Table(show_edge=False, header_style="bold")
        for col in ("host", "phase", "sent", "speed", "eta", ""):
            table.add_column(col)
        with self._lock:
            items = list(self.hosts.items())
        for host, p in items:
            style = "" if p.ok is None else ("green" if p.ok else "red")
            speed = p.speed()
            eta = p.eta()
            table.add_row(  # Text, not markup: hosts and messages may contain [brackets]
                Text(host), Text(p.phase, style=style),
                p.amount(),
                f"{human_bytes(speed)}/s" if speed and p.ok is None else "",
                f"{int(eta)}s" if eta is not None and p.ok is None else "",
                Text(p.detail),
            )
        return table

    def _message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


def reporter_for(json_mode: bool, tty: bool | None = None) -> _Base:
    """Rich live table on a terminal (stderr), plain lines otherwise."""
    tty = sys.stderr.isatty() if tty is None else tty
    if tty:
        return RichReporter()
    return PlainReporter()
