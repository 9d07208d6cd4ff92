"""Byte plumbing on one paramiko channel: drain stdout+stderr together, feed stdin, notice dead links.

stdout and stderr share the channel's flow-control window, so both are always drained
concurrently (reading only one can deadlock a chatty command).
"""
from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import paramiko

POLL_S = 0.5
SETTLE_S = 1.0
CHUNK = 256 * 1024


class LinkLost(Exception):
    """The transport died under the channel (translated by the caller into a HostError)."""


class TimedOut(Exception):
    """The command ran past its deadline."""


def _wait_readable(chan: paramiko.Channel, wait: float) -> None:
    if chan.recv_ready() or chan.recv_stderr_ready() or chan.exit_status_ready() or chan.closed:
        return
    select.select([chan], [], [], wait)


def _check(chan: paramiko.Channel, deadline: float | None) -> None:
    transport = chan.get_transport()
    if transport is None or not transport.is_active():
        raise LinkLost("connection lost")
    if deadline is not None and time.monotonic() > deadline:
        raise TimedOut()


def pump(
    chan: paramiko.Channel,
    deadline: float | None,
    on_stdout: Callable[[bytes], None],
    on_stderr: Callable[[bytes], None],
    stop: threading.Event | None = None,
) -> int:
    """Read both streams until EOF and exit status; returns the exit code (-1 if none was sent)."""
    while True:
        _wait_readable(chan, POLL_S)
        got_out = _move(chan.recv_ready, chan.recv, on_stdout)
        if _move(chan.recv_stderr_ready, chan.recv_stderr, on_stderr) or got_out:
            continue
        if chan.exit_status_ready():
            # Exit status can arrive before the final EOF; drain whatever is still in flight.
            _drain_tail(chan, on_stdout, on_stderr)
            return _exit_status(chan)
        if stop is not None and stop.is_set():
            return -1
        _check(chan, deadline)


def _move(ready: Callable[[], bool], recv: Callable[[int], bytes], sink: Callable[[bytes], None]) -> bool:
    """Hand whatever one stream has buffered to sink; True if anything came."""
    got = False
    while ready():
        data = recv(CHUNK)
        if not data:
            break
        sink(data)
        got = True
    return got


def _exit_status(chan: paramiko.Channel) -> int:
    """The exit code; -1 when the command died by a signal. LinkLost when the link died instead."""
    status = chan.exit_status
    if status == -1:
        transport = chan.get_transport()
        # paramiko closes a dead link's channels just before it marks the transport inactive:
        # give that a moment, or a dropped link reads as a command killed by a signal
        settle = time.monotonic() + SETTLE_S
        while transport is not None and transport.is_active() and time.monotonic() < settle:
            time.sleep(0.01)
        if transport is None or not transport.is_active():
            raise LinkLost("connection lost before the command finished")
    return int(status)


def _drain_tail(chan: paramiko.Channel, on_stdout: Callable[[bytes], None],
                on_stderr: Callable[[bytes], None]) -> None:
    end = time.monotonic() + 5
    while not chan.eof_received and not chan.closed and time.monotonic() < end:
        if chan.recv_ready():
            on_stdout(chan.recv(CHUNK))
        elif chan.recv_stderr_ready():
            on_stderr(chan.recv_stderr(CHUNK))
        else:
            time.sleep(0.01)
    while chan.recv_ready():
        on_stdout(chan.recv(CHUNK))
    while chan.recv_stderr_ready():
        on_stderr(chan.recv_stderr(CHUNK))


def _nothing() -> None:
    pass


class Feeder:
    """Sends chunks to the channel's stdin; stops early (without error) if the command exits."""

    def __init__(self, chan: paramiko.Channel, deadline: float | None,
                 check: Callable[[], None] | None = None) -> None:
        self.chan = chan
        self.deadline = deadline
        self.check = check or _nothing  # raises to stop the sending (Ctrl-C: deployer.interrupt)
        self.sent = 0
        self.remote_closed = False

    def feed(self, chunks: Iterable[bytes]) -> None:
        """Send everything then shutdown_write. LinkLost/TimedOut on a dead link or deadline."""
        self.chan.settimeout(POLL_S)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                self.check()
                if self.chan.exit_status_ready() or self.chan.closed:
                    if self._transport_alive():
                        self.remote_closed = True  # the command quit early; its exit code says why
                        return
                    raise LinkLost(f"connection lost after {self.sent} bytes")
                try:
                    n = self.chan.send(view[:CHUNK])
                except TimeoutError:
                    _check(self.chan, self.deadline)  # window full: fine while the link is alive
                    continue
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    if self._transport_alive() and (self.chan.exit_status_ready() or self.chan.closed):
                        self.remote_closed = True
                        return
                    raise LinkLost(f"connection lost after {self.sent} bytes: {exc}") from exc
                if n <= 0:
                    if self._transport_alive() and self.chan.exit_status_ready():
                        self.remote_closed = True
                        return
                    raise LinkLost(f"connection lost after {self.sent} bytes")
                self.sent += n
                view = view[n:]
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not self._transport_alive():
                raise LinkLost(f"connection lost after {self.sent} bytes: {exc}") from exc

    def _transport_alive(self) -> bool:
        t = self.chan.get_transport()
        return t is not None and t.is_active()


def iter_stdout(chan: paramiko.Channel, deadline: float | None, stderr: bytearray,
                check: Callable[[], None] | None = None) -> Iterator[bytes]:
    """Yield stdout as it arrives (stderr collected into `stderr`); returns at EOF + exit status.
    CHECK (if any) runs between reads and may raise to stop the stream."""
    while True:
        if check is not None:
            check()
        _wait_readable(chan, POLL_S)
        if chan.recv_ready():
            data = chan.recv(CHUNK)
            if data:
                yield data
                continue
        if chan.recv_stderr_ready():
            stderr.extend(chan.recv_stderr(CHUNK))
            del stderr[:-65536]  # keep the tail only: logs -f can run for days
            continue
        if chan.exit_status_ready():
            tail: list[bytes] = []
            _drain_tail(chan, tail.append, stderr.extend)
            yield from (t for t in tail if t)
            _exit_status(chan)
            return
        _check(chan, deadline)
