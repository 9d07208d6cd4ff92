"""Small process helpers shared by the testbed modules."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class TestbedError(RuntimeError):
    """A testbed step failed; the message says which and what to look at."""


def run(argv: Sequence[str], check: bool = True, input: bytes | None = None,
        timeout: float = 60, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    """Run argv, capture output; raise TestbedError with stderr when check and it fails."""
    try:
        res = subprocess.run(list(argv), check=False, input=input, capture_output=True, timeout=timeout, env=env,
                             cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip() or res.stdout.decode(errors="replace").strip()
        raise TestbedError(f"command failed ({res.returncode}): {' '.join(argv)}: {err}")
    return res


def ok(argv: Sequence[str]) -> bool:
    """True when argv exits 0 (output discarded)."""
    return run(argv, check=False).returncode == 0


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """argv run inside network namespace ns (nsenter, not `ip netns exec`, which remounts /sys)."""
    return ["nsenter", f"--net=/run/netns/{ns}", *argv]


def spawn(argv: Sequence[str], log: Path, pidfile: Path, env: dict[str, str] | None = None) -> int:
    """Start a long-running daemon detached from us (own session), log to `log`, record its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, env=env, close_fds=True)
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def read_pid(pidfile: Path) -> int | None:
    """The pid in pidfile if that process is alive (and not a zombie)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def stop_pid(pid: int, timeout: float = 10) -> None:
    """SIGTERM, wait, then SIGKILL the process (used for daemons we started)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_for(lambda: not pid_alive(pid), timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_for(lambda: not pid_alive(pid), 5)


def wait_for(cond: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll cond until true or timeout; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return True
        except Exception:  # noqa: BLE001 - a probe that errors simply is not ready yet
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)
