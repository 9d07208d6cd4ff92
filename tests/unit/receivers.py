"""A receive whose ship died, for the tests of how the next ship stops it."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def dead_receive(argv: Sequence[str], head: bytes, path: Path, until: int | None = None) -> subprocess.Popen[bytes]:
    """A receive whose ship died: its own process group (as sshd gives each command), still
    alive, its stdin open (the link is half-open), HEAD written (PATH holds UNTIL bytes, by
    default HEAD's length). Not reaped when it dies until the test waits for it, like a
    process under an init that does not reap: its zombies must not hold up the stop."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(head)
    proc.stdin.flush()
    want = len(head) if until is None else until
    deadline = time.monotonic() + 10
    while (path.stat().st_size if path.exists() else 0) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc
