"""Turning statuses and history into rows and rich renderables (pure: no I/O)."""
from __future__ import annotations

import signal
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from deployer.commands.run import ContainerStatus, parse_time
from deployer.runs.status import HostStatus, assigned_gpus

STATUS_COLUMNS = ("HOST", "NAME", "IMAGE", "STATE", "EXIT", "OOM", "STARTED", "UPTIME/FINISHED", "RESTARTS", "GPUS")
GPU_COLUMNS = ("HOST", "GPU", "MODEL", "MEMORY MiB", "UTIL", "USE")
HISTORY_COLUMNS = ("TIME", "HOST", "ACTION", "NAME", "IMAGE", "RESULT", "USER")
JOB_COLUMNS = ("JOB", "JOB STATE", "RANK", "HOST", "STATE", "EXIT")
_STATE_STYLE = {"running": "green", "exited": "yellow", "dead": "red", "restarting": "magenta",
                "unreachable": "red", "error": "red"}


def ago(seconds: float) -> str:
    """Compact duration: 45s, 12m, 3h05m, 2d4h."""
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _when(c: ContainerStatus, now: datetime) -> str:
    started, finished = parse_time(c.started_at), parse_time(c.finished_at)
    if c.state in ("exited", "dead") and finished:
        return f"finished {ago((now - finished).total_seconds())} ago"
    if c.state in ("running", "restarting", "paused") and started:
        return f"up {ago((now - started).total_seconds())}"
    return ""


def exit_text(code: int | None) -> str:
    """An exit code for people: 137 reads `137 (SIGKILL)`, since a kill is not the job's own failure."""
    if code is None:
        return ""
    if code > 128:
        try:
            return f"{code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return str(code)


def status_rows(statuses: Sequence[HostStatus], now: datetime | None = None) -> list[list[str]]:
    """One row per container; one row per host that could not be asked (with the reason)."""
    now = now or datetime.now(timezone.utc)
    rows: list[list[str]] = []
    for hs in statuses:
        if not hs.reachable or hs.error:
            state = "unreachable" if not hs.reachable else "error"
            rows.append([hs.host, "", "", state, "", "", "", hs.error or "", "", ""])
            continue
        for c in hs.containers:
            gpus = assigned_gpus(c, hs.gpus)
            rows.append([
                hs.host, c.name, c.label("deployer.image") or c.image, c.state,
                exit_text(c.exit_code), "yes" if c.oom_killed else "",
                (c.started_at or "").replace("T", " ").rstrip("Z"), _when(c, now), str(c.restarts),
                ",".join(gpus) if gpus is not None else "",
            ])
    return rows


def job_rows(statuses: Sequence[HostStatus]) -> list[list[str]]:
    """Multi-node jobs: one row per rank, the job's state on its rank 0 row."""
    from deployer.runs import gang

    found = {hs.host: hs.containers for hs in statuses if hs.reachable and not hs.error}
    rows = []
    for name, members in gang.jobs(found).items():
        state = gang.job_state([m for m in members if m.host in found])
        for m in members:
            c = m.container
            where = "not found" if m.host in found else "not asked (add it to --host)"
            rows.append([name if m.rank == 0 else "", state if m.rank == 0 else "", str(m.rank), m.host,
                         c.state if c else where, exit_text(c.exit_code) if c else ""])
    return rows


def gpu_rows(statuses: Sequence[HostStatus]) -> list[list[str]]:
    """One row per GPU of every host that has some: memory, utilization, and who uses it."""
    rows = []
    for hs in statuses:
        for g in hs.gpu_use:
            used = "?" if g.memory_used_mib is None else str(g.memory_used_mib)
            util = "?" if g.utilization_pct is None else f"{g.utilization_pct}%"
            use = ", ".join(g.held_by) if g.held_by else ("other process" if g.other_process else "free")
            rows.append([hs.host, str(g.index), g.name, f"{used}/{g.memory_total_mib}", util, use])
    return rows


_USE_STYLE = {"free": "green", "other process": "red"}


def gpu_table(statuses: Sequence[HostStatus]) -> Table:
    """The GPU view: one row per GPU, free ones green, ones busy outside deployer red."""
    table = Table(show_edge=False, header_style="bold")
    for col in GPU_COLUMNS:
        table.add_column(col, justify="right" if col in ("GPU", "MEMORY MiB", "UTIL") else "left")
    for row in gpu_rows(statuses):
        table.add_row(*row[:5], Text(row[5], style=_USE_STYLE.get(row[5], "cyan")))
    return table


def status_renderable(statuses: Sequence[HostStatus], now: datetime | None = None,
                      title: str | None = None) -> RenderableType:
    """The status table plus the GPU table, for a terminal (and --watch)."""
    table = Table(title=title, show_edge=False, header_style="bold")
    for col in STATUS_COLUMNS:
        table.add_column(col)
    for row in status_rows(statuses, now):
        style = _STATE_STYLE.get(row[3])
        table.add_row(*row[:3], Text(row[3], style=style or ""), *row[4:])
    if not any(hs.containers or not hs.reachable or hs.error for hs in statuses):
        table.add_row("", "(no deployer containers)", *[""] * (len(STATUS_COLUMNS) - 2))
    parts: list[RenderableType] = [table]
    jobs = job_rows(statuses)
    if jobs:
        job_table = Table(show_edge=False, header_style="bold")
        for col in JOB_COLUMNS:
            job_table.add_column(col)
        for row in jobs:
            job_table.add_row(*row)
        parts += [Text("\nMulti-node jobs", style="bold"), job_table]
    if any(hs.gpu_use for hs in statuses):
        parts += [Text("\nGPUs", style="bold"), gpu_table(statuses)]
    return Group(*parts)


def history_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[str(r.get("time", "")).replace("T", " ").replace("+00:00", "Z"), str(r.get("host", "")),
             str(r.get("action", "")), str(r.get("name") or ""), str(r.get("image") or ""),
             str(r.get("result", "")), str(r.get("user", ""))] for r in records]
