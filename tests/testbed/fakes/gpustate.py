"""Shared by the fake hook and nvidia-smi: the host's GPUs and which live containers hold them.

Both fakes are copied into <state>/hosts/<name>/bin; the GPU table is <host>/gpus.json and holdings
are <host>/gpu-holders/<pid>.json, written by the hook at container start.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

HOST_DIR = Path(os.path.realpath(__file__)).parent.parent
HOLDERS = HOST_DIR / "gpu-holders"


def load_gpus() -> dict:
    """{"host", "driver_version", "gpus": [{"index", "name", "uuid", "memory"}]}."""
    return json.loads((HOST_DIR / "gpus.json").read_text())


def proc_start(pid: int) -> str | None:
    """Process start time (jiffies since boot): guards against a recycled pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def live_holders() -> list[dict]:
    """Holdings whose container process is still alive; stale files are removed."""
    out: list[dict] = []
    if not HOLDERS.is_dir():
        return out
    for path in HOLDERS.glob("*.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if proc_start(int(rec["pid"])) == rec.get("start"):
            out.append(rec)
        else:
            path.unlink(missing_ok=True)
    return out


def usage(gpus: list[dict]) -> dict[int, tuple[int, int, list[int]]]:
    """index -> (memory used MiB, utilization %, holder pids) from live holdings."""
    total = {g["index"]: g["memory"] for g in gpus}
    mem = dict.fromkeys(total, 0)
    util = dict.fromkeys(total, 0)
    pids: dict[int, list[int]] = {i: [] for i in total}
    for rec in live_holders():
        for idx in rec["devices"]:
            if idx in total:
                mem[idx] = min(total[idx], mem[idx] + int(rec["memory"]))
                util[idx] = min(100, util[idx] + int(rec["util"]))
                pids[idx].append(int(rec["pid"]))
    return {i: (mem[i], util[i], pids[i]) for i in total}
