"""The per-host deploy lock: an atomic `mkdir STAGING/lock` with an owner line.

Two ships to one host would corrupt each other's staging; the loser is told who holds the lock
and since when. A stale lock (too old, or its owner process on this workstation is gone) is
never broken silently: the user clears it with --break-lock.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from deployer.commands import ship as cmd
from deployer.errors import LockError
from deployer.history import who
from deployer.transport.session import Session

log = logging.getLogger(__name__)

STALE_AFTER_S = float(os.environ.get("DEPLOYER_LOCK_STALE_HOURS", "6")) * 3600


def owner_record(image: str, token: str) -> dict[str, Any]:
    """The owner line we write into the lock (pure apart from the clock and pid)."""
    return {
        "by": who(),
        "workstation": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "image": image,
        "token": token,
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(state: cmd.LockState, *, stale_after_s: float = STALE_AFTER_S,
                 workstation: str | None = None, pid_alive: Callable[[int], bool] = _pid_alive) -> str | None:
    """Why a held lock looks abandoned, or None when it looks live."""
    owner = state.owner or {}
    if owner.get("workstation") == (workstation or socket.gethostname()):
        pid = owner.get("pid")
        if isinstance(pid, int) and not pid_alive(pid):
            return f"its process {pid} on this workstation is gone"
    if state.age_s is not None and state.age_s > stale_after_s:
        return f"it is {state.age_s // 3600} h old"
    return None


def describe(state: cmd.LockState) -> str:
    owner = state.owner or {}
    who_ = owner.get("by") or "an unknown deploy"
    parts = [f"held by {who_}"]
    if owner.get("pid"):
        parts.append(f"pid {owner['pid']}")
    if owner.get("image"):
        parts.append(f"shipping {owner['image']}")
    if owner.get("since"):
        parts.append(f"since {owner['since']}")
    elif state.age_s is not None:
        parts.append(f"for {state.age_s} s")
    return ", ".join(parts)


@dataclass
class Lock:
    """A lock we hold on one host; release() removes it only while it is still ours."""

    host: str
    staging: str
    token: str

    def release(self, session: Session) -> None:
        session.run(cmd.unlock_argv(self.staging, self.token), timeout=30)


def acquire(session: Session, staging: str, image: str, *, break_lock: bool = False,
            wait_s: float = 0.0, poll_s: float = 2.0) -> Lock:
    """Take the host's deploy lock, waiting up to wait_s; LockError naming the holder otherwise."""
    host = session.host
    if break_lock:
        log.warning("%s: breaking the deploy lock at %s/lock (--break-lock)", host, staging)
        session.run(cmd.break_lock_argv(staging), timeout=30)
    token = uuid.uuid4().hex
    line = json.dumps(owner_record(image, token), sort_keys=True, separators=(",", ":"))
    deadline = time.monotonic() + wait_s
    while True:
        state = cmd.parse_lock(session.run(cmd.lock_argv(staging, line), timeout=30).stdout)
        if state.acquired or (state.owner or {}).get("token") == token:  # ours: a retried reply
            return Lock(host, staging, token)
        stale = stale_reason(state)
        if stale is None and time.monotonic() + poll_s <= deadline:
            time.sleep(poll_s)
            continue
        if stale:
            raise LockError(host, f"the deploy lock looks stale ({stale}): {describe(state)}",
                            hint="if no deploy is running there, re-run with --break-lock")
        raise LockError(host, f"another deploy is in progress: lock {describe(state)}",
                        hint="wait for it to finish (or --lock-wait SECONDS); if it is dead, use --break-lock")
