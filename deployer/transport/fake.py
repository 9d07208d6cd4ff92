"""FakeSession: a recording Session for unit tests of pure logic (never for tests that claim SSH).

    fake = FakeSession("gpu01")
    fake.on(["docker", "version"], stdout="20.10.24")           # exact argv
    fake.on(["docker", "load"], prefix=True, exited=1, stderr="no space left")
    fake.on(["cat"], handler=lambda call: Result.of(call.argv, 0, call.sent.decode()))
    fake.run(["docker", "version"]).stdout  -> "20.10.24"
    fake.calls[-1].argv, fake.sent_bytes(), fake.argvs()

Exact matches win over prefix matches; among prefixes the longest wins; among equals the
most recently added. Unscripted commands raise AssertionError unless strict=False.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployer.errors import CommandError
from deployer.transport.result import Result
from deployer.transport.session import remote_command

if TYPE_CHECKING:
    from typing_extensions import Self


@dataclass
class Call:
    """One recorded call: kind is run/send/stream; sent holds stdin bytes (input= or send chunks)."""

    kind: str
    argv: tuple[str, ...]
    sent: bytes = b""
    timeout: float | None = None

    @property
    def command(self) -> str:
        return remote_command(self.argv)


@dataclass
class Response:
    """A scripted answer. `chunks` are what stream() yields (default: stdout in one chunk)."""

    argv: tuple[str, ...]
    prefix: bool = False
    stdout: str | bytes = ""
    stderr: str = ""
    exited: int = 0
    chunks: Sequence[bytes] | None = None
    raises: BaseException | None = None
    handler: Callable[[Call], Result] | None = None
    times: int | None = None  # answer this many calls, then fall through to other responses
    used: int = 0

    def matches(self, argv: tuple[str, ...]) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        return argv[: len(self.argv)] == self.argv if self.prefix else argv == self.argv


@dataclass
class FakeSession:
    """Implements the Session protocol from scripted responses, recording every call."""

    host: str = "fake"
    strict: bool = True
    calls: list[Call] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    closed: bool = False

    def on(self, argv: Sequence[str], *, prefix: bool = False, stdout: str | bytes = "", stderr: str = "",
           exited: int = 0, chunks: Sequence[bytes] | None = None, raises: BaseException | None = None,
           handler: Callable[[Call], Result] | None = None, times: int | None = None) -> FakeSession:
        """Script the answer for argv (or any argv starting with it when prefix=True)."""
        self.responses.append(Response(tuple(argv), prefix, stdout, stderr, exited, chunks, raises, handler, times))
        return self

    # -- Session protocol -------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, check: bool = True, input: bytes | None = None,
            timeout: float | None = None) -> Result:
        return self._answer(Call("run", tuple(argv), input or b"", timeout), check)

    def send(self, argv: Sequence[str], chunks: Iterable[bytes], *, check: bool = True,
             timeout: float | None = None) -> Result:
        call = Call("send", tuple(argv), b"", timeout)
        call.sent = b"".join(bytes(c) for c in chunks)
        return self._answer(call, check)

    def stream(self, argv: Sequence[str], *, timeout: float | None = None) -> Iterator[bytes]:
        call = Call("stream", tuple(argv), b"", timeout)
        self._record(call)
        resp = self._find(call.argv)
        if resp is not None and resp.raises is not None:
            raise resp.raises
        result = self._result(call, resp)
        if resp is not None and resp.chunks is not None:
            yield from resp.chunks
        elif result.stdout:
            yield result.stdout.encode()
        if not result.ok:
            raise CommandError(self.host, result)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspection -------------------------------------------------------------------------
    def argvs(self) -> list[tuple[str, ...]]:
        """Every argv run so far, in order."""
        return [c.argv for c in self.calls]

    def commands(self) -> list[str]:
        """Every command as the remote shell would see it."""
        return [c.command for c in self.calls]

    def sent_bytes(self) -> bytes:
        """All bytes sent to remote stdins, concatenated."""
        return b"".join(c.sent for c in self.calls)

    # -- internals --------------------------------------------------------------------------
    def _record(self, call: Call) -> None:
        if self.closed:
            raise AssertionError(f"{self.host}: {call.kind} on a closed session: {call.command}")
        self.calls.append(call)

    def _answer(self, call: Call, check: bool) -> Result:
        self._record(call)
        resp = self._find(call.argv)
        if resp is not None and resp.raises is not None:
            raise resp.raises
        result = self._result(call, resp)
        if check and not result.ok:
            raise CommandError(self.host, result)
        return result

    def _find(self, argv: tuple[str, ...]) -> Response | None:
        candidates = [r for r in self.responses if r.matches(argv)]
        if not candidates:
            if self.strict:
                raise AssertionError(f"{self.host}: unscripted command: {remote_command(argv)}")
            return None
        exact = [r for r in candidates if not r.prefix]
        best = exact[-1] if exact else max(reversed(candidates), key=lambda r: len(r.argv))
        best.used += 1
        return best

    def _result(self, call: Call, resp: Response | None) -> Result:
        if resp is None:
            return Result.of(call.argv, 0, "", "", self.host)
        if resp.handler is not None:
            return resp.handler(call)
        out = resp.stdout.decode("utf-8", "replace") if isinstance(resp.stdout, bytes) else resp.stdout
        return Result.of(call.argv, resp.exited, out, resp.stderr, self.host)


__all__ = ["Call", "FakeSession", "Response"]
