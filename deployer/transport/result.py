"""The value a remote command returns."""
from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

LABEL_MAX = 60  # a command this short is its own label; longer ones (scripts) are named by their first words
LINE_MAX = 200  # one stderr line in a message; a script that echoes itself must not flood the terminal
_WORD = re.compile(r"[\w./:@=+,-]{1,40}")
TIMEOUT_EXIT = 124  # a command deployer stopped waiting for; what coreutils `timeout` uses, so messages read familiar


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

    @property
    def label(self) -> str:
        """A short name for messages: the command itself when short, else its first words (`sh -c …`)."""
        return label(self.argv)

    def stderr_tail(self, lines: int = 5) -> str:
        tail = [ln for ln in self.stderr.strip().splitlines() if ln.strip()][-lines:]
        # a long line keeps its start and its end: Docker puts the cause last ("...: no basic auth credentials")
        return "\n          ".join(ln if len(ln) <= LINE_MAX else ln[: LINE_MAX // 2 - 1] + "…" + ln[-(LINE_MAX // 2):]
                                  for ln in tail)

    @classmethod
    def of(cls, argv: Sequence[str], exited: int, stdout: str = "", stderr: str = "", host: str = "") -> Result:
        return cls(tuple(argv), exited, stdout, stderr, host)


def label(argv: Sequence[str]) -> str:
    """`docker load` for a short argv; the first three plain words and `…` for a long one (pure)."""
    command = shlex.join(argv)
    if len(command) <= LABEL_MAX:
        return command
    words: list[str] = []
    for arg in argv[:3]:
        if not _WORD.fullmatch(arg):
            break
        words.append(arg)
    return " ".join([*words, "…"])
