"""The per-host deploy lock: an atomic `mkdir STAGING/lock` with an owner line.

Two ships to one host would corrupt each other's staging; the loser is told who holds the lock
and since when. The owner line records who took the lock: workstation, machine, boot, pid
namespace, pid and the process's start time. A lock whose owner is provably dead (a deploy on
this very workstation whose process is gone, or whose pid now belongs to another process, or
taken before this workstation restarted) is taken over with a notice, so a killed ship resumes
on the next plain run. Any other old lock is only reported: the user clears it with --break-lock.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from deployer.commands import ship as cmd
from deployer.errors import CommandError, LockError
from deployer.history import who
from deployer.transport.result import Result
from deployer.transport.session import Session

log = logging.getLogger(__name__)

def stale_after() -> float:
    """How old a held lock may be before it counts as abandoned (DEPLOYER_LOCK_STALE_HOURS, default 6).

    Read at each use, not at import: a warm process (deployer.warm) imported this module long ago."""
    return float(os.environ.get("DEPLOYER_LOCK_STALE_HOURS", "6")) * 3600


# A process that exists but whose start time we may not read (hidepid, a race with its exit).
UNKNOWN_START = -1


@dataclass(frozen=True)
class Owner:
    """Who takes a lock: enough to prove later, on this workstation, that the process is gone."""

    workstation: str  # hostname
    machine: str  # app-specific hash of /etc/machine-id ("" when there is none)
    boot: str  # hash of the kernel's boot id: pids and start times count from this boot
    pidns: str  # pid namespace: pids are only comparable within one
    pid: int
    started: int | None  # /proc/PID/stat starttime (clock ticks after boot): tells a reused pid


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _app_hash(secret: str) -> str:
    # machine-id is confidential (machine-id(5)): record a keyed hash specific to this use, as
    # sd_id128_get_machine_app_specific() does, never the id itself.
    if not secret:
        return ""
    return hmac.new(secret.encode(), b"deployer lock owner", hashlib.sha256).hexdigest()[:32]


def parse_proc_stat(text: str) -> tuple[int, int] | None:
    """(pid, starttime) from a /proc/PID/stat line; the command name may hold spaces and ')'."""
    head, paren, rest = text.rpartition(")")
    fields = rest.split()
    pid = head.partition("(")[0].strip()
    if not paren or not pid.isdigit() or len(fields) < 20 or not fields[19].isdigit():
        return None
    return int(pid), int(fields[19])  # starttime is field 22; `rest` starts at field 3


def identity() -> Owner:
    """This process, as the lock records it (reads /etc and /proc; blanks where they are missing)."""
    pid = os.getpid()
    me = parse_proc_stat(_read("/proc/self/stat"))
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    if me is None or me[0] != pid:  # /proc from another pid namespace: its pids are not ours
        pidns, started = "", None
    else:
        started = me[1]
    return Owner(
        workstation=socket.gethostname(),
        machine=_app_hash(_read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")),
        boot=_app_hash(_read("/proc/sys/kernel/random/boot_id")),
        pidns=pidns, pid=pid, started=started,
    )


def process_start(pid: int) -> int | None:
    """Start time of process PID on this workstation; None when there is no such process."""
    if pid <= 0 or not _pid_alive(pid):
        return None
    stat = parse_proc_stat(_read(f"/proc/{pid}/stat"))
    return stat[1] if stat is not None and stat[0] == pid else UNKNOWN_START


def owner_record(image: str, token: str, me: Owner | None = None) -> dict[str, Any]:
    """The owner line we write into the lock (pure apart from the clock and identity())."""
    return {
        "by": who(),
        **asdict(me or identity()),
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


def dead_reason(owner: Mapping[str, Any], me: Owner,
                started: Callable[[int], int | None] = process_start) -> str | None:
    """Why the lock's owner is provably dead, or None when it may live (or ran elsewhere).

    Proof needs the same workstation: the same boot and pid namespace (then /proc answers for
    the pid), or the same machine on an earlier boot. Locks without these fields never qualify.
    """
    if not owner.get("token") or owner.get("workstation") != me.workstation:
        return None
    boot, pid = owner.get("boot"), owner.get("pid")
    if me.machine and owner.get("machine") == me.machine and me.boot and boot and boot != me.boot:
        return "this workstation has restarted since it took the lock"
    if not (me.boot and boot == me.boot and me.pidns and owner.get("pidns") == me.pidns):
        return None
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    now = started(pid)
    if now is None:
        return f"its process {pid} on this workstation is gone"
    recorded = owner.get("started")
    if isinstance(recorded, int) and now != UNKNOWN_START and now != recorded:
        return f"its process {pid} on this workstation is gone; pid {pid} is another process now"
    return None


def stale_reason(state: cmd.LockState, *, stale_after_s: float | None = None,
                 workstation: str | None = None, pid_alive: Callable[[int], bool] = _pid_alive) -> str | None:
    """Why a held lock looks abandoned, or None when it looks live."""
    stale_after_s = stale_after() if stale_after_s is None else stale_after_s
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

    @property
    def release_argv(self) -> tuple[str, ...]:
        return cmd.unlock_argv(self.staging, self.token)

    def release(self, session: Session) -> None:
        session.run(self.release_argv, timeout=30)


class Claim:
    """One attempt at a host's lock. Its first try (`argv`) may run in a batch with other reads
    (deployer.commands.batch); `settle` takes its reply and goes on as `acquire` does."""

    def __init__(self, host: str, staging: str, image: str) -> None:
        self.host, self.staging = host, staging
        self.token = uuid.uuid4().hex
        self.me = identity()
        self.line = json.dumps(owner_record(image, self.token, self.me), sort_keys=True, separators=(",", ":"))

    @property
    def argv(self) -> tuple[str, ...]:
        return cmd.lock_argv(self.staging, self.line)

    def settle(self, session: Session, reply: Result | None = None, *, wait_s: float = 0.0,
               poll_s: float = 2.0) -> Lock:
        """The lock, from REPLY (the first try's result, if it ran already) or new tries, waiting up
        to wait_s; a dead owner's lock is taken over with a warning; LockError naming the holder."""
        host, staging, token = self.host, self.staging, self.token
        deadline = time.monotonic() + wait_s
        tried: set[str] = set()  # dead owners' tokens: one takeover attempt each
        while True:
            if reply is None:
                reply = session.run(self.argv, timeout=30, check=False)
            if not reply.ok:
                raise CommandError(host, reply, what="taking the deploy lock failed",
                                   hint=f"the staging dir ({staging}, deploy_staging_dir) must be a directory "
                                        "the SSH user can create and write on the host")
            state = cmd.parse_lock(reply.stdout)
            reply = None
            owner = state.owner or {}
            dead = None if state.acquired else dead_reason(owner, self.me)
            if dead and str(owner["token"]) not in tried:
                tried.add(str(owner["token"]))
                taken = cmd.parse_lock(session.run(cmd.takeover_argv(staging, self.line, str(owner["token"])),
                                                   timeout=30).stdout)
                if taken.acquired:
                    log.warning("%s: took over the deploy lock at %s/lock, %s: %s",
                                host, staging, describe(state), dead)
                state = taken
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


def acquire(session: Session, staging: str, image: str, *, break_lock: bool = False,
            wait_s: float = 0.0, poll_s: float = 2.0) -> Lock:
    """Take the host's deploy lock, waiting up to wait_s; LockError naming the holder otherwise.

    A lock left by a dead deploy from this workstation is taken over with a warning.
    """
    if break_lock:
        log.warning("%s: breaking the deploy lock at %s/lock (--break-lock)", session.host, staging)
        session.run(cmd.break_lock_argv(staging), timeout=30)
    return Claim(session.host, staging, image).settle(session, wait_s=wait_s, poll_s=poll_s)
