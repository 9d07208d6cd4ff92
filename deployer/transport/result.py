"""The value a remote command returns."""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """What one remote command did: argv, exit code, captured output."""

    argv: tuple[str, ...]
    exited: int
    stdout: str = ""
    stderr: str = ""
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def stderr_tail(self, lines: int = 5) -> str:
        tail = [ln for ln in self.stderr.strip().splitlines() if ln.strip()][-lines:]
        return "\n          ".join(tail)

    @classmethod
    def of(cls, argv: Sequence[str], exited: int, stdout: str = "", stderr: str = "", host: str = "") -> Result:
        return cls(tuple(argv), exited, stdout, stderr, host)
