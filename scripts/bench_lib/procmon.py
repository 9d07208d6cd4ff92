"""Run a command and watch its whole process tree: wall time and peak resident memory."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Finished:
    argv: tuple[str, ...]
    exited: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int  # bytes: max over time of the tree's summed RSS, or one process's VmHWM if larger


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children_map() -> dict[int, list[int]]:
    """ppid -> pids, for every live process."""
    out: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parens: ppid is the 2nd field after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def tree(root: int, kids: Mapping[int, list[int]]) -> list[int]:
    """root and all its descendants."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


WARM_SERVER = b"deployer.warm.server"  # deployer's warm start: the command runs in a child of it


def warm_servers(pids: Iterable[int]) -> list[int]:
    """The pids among pids that are deployer warm servers."""
    out = []
    for pid in pids:
        try:
            if WARM_SERVER in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


class _Watcher(threading.Thread):
    """Samples the command's tree and, since `deploy` hands its command to a warm server's child,
    every child a warm server forked after the command started (and its tree)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.hwm = pid, 0, 0
        self.done = threading.Event()
        self.before = {p for kids in children_map().values() for p in kids}

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(POLL_SECONDS)

    def sample(self) -> None:
        kids = children_map()
        pids = tree(self.pid, kids)
        for server in warm_servers({p for ps in kids.values() for p in ps}):
            pids += [p for child in kids.get(server, ()) if child not in self.before for p in tree(child, kids)]
        total = 0
        for pid in pids:
            total += _status_kb(pid, "VmRSS")
            # VmHWM catches a single process's spike between two samples.
            self.hwm = max(self.hwm, _status_kb(pid, "VmHWM"))
        self.peak = max(self.peak, total)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float | None = None,
        cwd: str | None = None, cgroup_procs: Path | None = None) -> Finished:
    """Run argv to completion, timing it and sampling its process tree's memory; with cgroup_procs,
    the child joins that cgroup before it execs (so its sockets are accounted there)."""
    if cgroup_procs is not None:
        # A shell joins the cgroup and then execs the command (same pid), no preexec_fn needed.
        argv = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup_procs), *argv]

    start = time.monotonic()
    # Its own process group, so that a timeout or an interrupted bench ends the whole pipeline.
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
    watcher = _Watcher(proc.pid)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        err += f"\n(killed after {timeout:.0f} s)".encode()
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        watcher.done.set()
        watcher.join()
    seconds = time.monotonic() - start
    return Finished(tuple(argv), proc.returncode, out.decode(errors="replace"),
                    err.decode(errors="replace"), seconds, max(watcher.peak, watcher.hwm) * 1024)
