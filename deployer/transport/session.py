"""The Session interface: what the rest of deployer may do on a host.

The real implementation speaks SSH (deployer.transport.ssh); a recording fake for unit
tests lives in deployer.transport.fake. argv tuples cross into the remote shell in exactly
one place: `remote_command()` below, which quotes them with shlex.join.
"""
from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from deployer.transport.result import Result


def remote_command(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    """The single place an argv becomes a remote shell string."""
    if not argv:
        raise ValueError("empty argv")
    cmd = shlex.join(list(argv))
    if env:
        cmd = shlex.join(["env", *(f"{k}={v}" for k, v in env.items())]) + " " + cmd
    return cmd


class Session(Protocol):
    """An open connection to one host."""

    host: str

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: bytes | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run argv, capture stdout/stderr. With check, non-zero exit raises CommandError."""
        ...

    def send(
        self,
        argv: Sequence[str],
        chunks: Iterable[bytes],
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Run argv with the given bytes streamed to its stdin (binary-safe)."""
        ...

    def stream(self, argv: Sequence[str], *, timeout: float | None = None) -> Iterator[bytes]:
        """Run argv and yield its stdout as it arrives; CommandError at the end on non-zero exit."""
        ...

    def close(self) -> None:
        ...
