"""SshSession: the real Session over one paramiko transport (run, send, stream)."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import paramiko

if TYPE_CHECKING:
    from typing_extensions import Self

from deployer import interrupt
from deployer.errors import CommandError, ConnectError, DeployError, TransferError
from deployer.inventory.host import Host
from deployer.transport import channel as ch
from deployer.transport.config import ConnectSpec, load_ssh_config, resolve
from deployer.transport.dial import Link, open_link
from deployer.transport.result import TIMEOUT_EXIT, Result, label
from deployer.transport.session import remote_command

log = logging.getLogger(__name__)

LONG_WAIT_S = 2.0  # Ctrl-C stops waiting for a command that has run this long (a short one ends first)


class SshSession:
    """An authenticated SSH connection to one host; a context manager. Thread-safe per channel."""

    def __init__(self, host: str, spec: ConnectSpec, link: Link, *, timeout: float = 10.0) -> None:
        self.host = host
        self.spec = spec
        self.timeout = timeout
        self._link = link

    @property
    def transport(self) -> paramiko.Transport:
        return self._link.transport

    @property
    def server_key(self) -> paramiko.PKey | None:
        return self._link.server_key

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._link.close()

    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    def _open(self, argv: Sequence[str]) -> paramiko.Channel:
        interrupt.check()  # Ctrl-C stops a host's work before a command starts (and see _exchange)
        try:
            chan = self.transport.open_session(timeout=self.timeout)
            chan.exec_command(remote_command(argv))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(self.host, f"cannot start `{label(argv)}`: {exc or 'connection lost'}",
                               hint="the connection dropped; retry") from exc
        return chan

    def run(self, argv: Sequence[str], *, check: bool = True, input: bytes | None = None,
            timeout: float | None = None) -> Result:
        """Run argv and capture its output; with check, a non-zero exit raises CommandError."""
        return self._exchange(argv, [input] if input else [], check=check, timeout=timeout, sending=False)

    def send(self, argv: Sequence[str], chunks: Iterable[bytes], *, check: bool = True,
             timeout: float | None = None) -> Result:
        """Run argv with chunks streamed to its stdin. TransferError(transient) if the link drops."""
        return self._exchange(argv, chunks, check=check, timeout=timeout, sending=True)

    def _exchange(self, argv: Sequence[str], chunks: Iterable[bytes], *, check: bool,
                  timeout: float | None, sending: bool) -> Result:
        deadline = time.monotonic() + timeout if timeout else None
        chan = self._open(argv)
        out, err = bytearray(), bytearray()
        state: dict[str, object] = {}
        stop = threading.Event()

        def drain() -> None:
            try:
                state["status"] = ch.pump(chan, deadline, out.extend, err.extend, stop)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                state["error"] = exc

        reader = threading.Thread(target=drain, name=f"ssh-drain-{self.host}", daemon=True)
        reader.start()
        # Ctrl-C may cut a send short (the receiver keeps the part for a resume), never another
        # command's stdin (a script, a file's content); and it stops waiting only for a command
        # that takes long (a load, a pull), which goes on or fails on the host by itself
        feeder = ch.Feeder(chan, deadline, interrupt.check if sending else None)
        began = time.monotonic()
        try:
            try:
                feeder.feed(chunks)
            except (ch.LinkLost, ch.TimedOut) as exc:
                state.setdefault("error", exc)
            else:
                while reader.is_alive():
                    reader.join(ch.POLL_S)
                    if time.monotonic() - began >= LONG_WAIT_S:
                        interrupt.check()
        finally:
            stop.set()
            reader.join(timeout=2 * ch.POLL_S + 1)
            chan.close()
        error = state.get("error")
        if isinstance(error, ch.TimedOut):
            result = self._result(argv, TIMEOUT_EXIT, out, err + f"\n(timed out after {timeout:g}s)".encode())
            raise CommandError(self.host, result, what=f"timed out after {timeout:g}s")
        if isinstance(error, ch.LinkLost):
            if sending:
                raise TransferError(self.host, f"{error} while sending to `{label(argv)}`",
                                    transient=True, hint="the link dropped; the transfer can be resumed") from error
            raise ConnectError(self.host, f"{error} while running `{label(argv)}`",
                               hint="the link dropped; check the network and retry") from error
        if isinstance(error, DeployError):
            raise error
        if isinstance(error, BaseException):  # paramiko or socket trouble in the reader: ours to translate
            raise ConnectError(self.host, f"reading the output of `{label(argv)}` failed: "
                               f"{type(error).__name__}: {error}", hint="the connection broke; retry") from error
        result = self._result(argv, int(state.get("status", -1)), out, err)  # type: ignore[call-overload]
        if check and not result.ok:
            raise CommandError(self.host, result)
        return result

    def _result(self, argv: Sequence[str], status: int, out: bytes | bytearray, err: bytes | bytearray) -> Result:
        return Result.of(argv, status, bytes(out).decode("utf-8", "replace"),
                         bytes(err).decode("utf-8", "replace"), self.host)

    def stream(self, argv: Sequence[str], *, timeout: float | None = None) -> Iterator[bytes]:
        """Yield stdout as it arrives; CommandError at the end on non-zero exit. Closing it closes the channel."""
        deadline = time.monotonic() + timeout if timeout else None
        chan = self._open(argv)
        err = bytearray()
        try:
            chan.shutdown_write()
            yield from ch.iter_stdout(chan, deadline, err, interrupt.check)
            status = chan.exit_status
        except ch.LinkLost as exc:
            raise ConnectError(self.host, f"{exc} while streaming `{label(argv)}`",
                               hint="the link dropped; run the command again") from exc
        except ch.TimedOut:
            result = self._result(argv, TIMEOUT_EXIT, b"", err)
            raise CommandError(self.host, result, what=f"timed out after {timeout:g}s") from None
        finally:
            chan.close()
        if status != 0:
            raise CommandError(self.host, self._result(argv, status, b"", err))


def connect(host: Host, *, timeout: float = 10.0, ssh_config: paramiko.SSHConfig | None = None) -> SshSession:
    """Open an authenticated session to an inventory host (strict host keys, key/agent auth). The
    host's ansible_ssh_timeout, if set, is its TIMEOUT."""
    spec = resolve(host, ssh_config if ssh_config is not None else load_ssh_config())
    timeout = host.connect_timeout(timeout)
    log.debug("%s: connecting to %s%s", host.name, spec.label, f" via {spec.jump.label}" if spec.jump else "")
    link = open_link(spec, host=host.name, timeout=timeout, trust_name=host.name)
    return SshSession(host.name, spec, link, timeout=timeout)
