#!/usr/bin/python3
"""Fake nvidia-container-runtime-hook: validates NVIDIA_VISIBLE_DEVICES like the real one and records
which GPUs the container holds. Docker runs it as an OCI prestart hook with the state JSON on stdin."""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from gpustate import HOLDERS, live_holders, load_gpus, proc_start

DEFAULT_MEMORY_FRACTION = 0.25  # of the GPU's memory shown in use per holding container
DEFAULT_UTIL = 100


def select(spec: str, gpus: list[dict]) -> list[int]:
    """Indexes named by NVIDIA_VISIBLE_DEVICES; SystemExit(1) with the real message for unknown ones."""
    spec = spec.strip()
    if spec in ("", "void", "none"):
        return []
    if spec == "all":
        return [g["index"] for g in gpus]
    by_uuid = {g["uuid"]: g["index"] for g in gpus}
    out = []
    for tok in (t.strip() for t in spec.split(",")):
        if tok.isdigit() and int(tok) < len(gpus):
            out.append(int(tok))
        elif tok in by_uuid:
            out.append(by_uuid[tok])
        else:
            sys.stderr.write(f"nvidia-container-cli: device error: {tok}: unknown device\n")
            sys.exit(1)
    return out


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[-1] != "prestart":
        return 0
    state = json.load(sys.stdin)
    with open(os.path.join(state["bundle"], "config.json")) as f:
        env = dict(e.split("=", 1) for e in json.load(f).get("process", {}).get("env", []) if "=" in e)
    if "NVIDIA_VISIBLE_DEVICES" not in env:
        return 0
    gpus = load_gpus()["gpus"]
    devices = select(env["NVIDIA_VISIBLE_DEVICES"], gpus)
    pid = int(state.get("pid") or 0)
    if devices and pid and proc_start(pid):
        live_holders()  # prunes stale records
        mem_each = env.get("DEPLOYER_FAKE_GPU_MEMORY_MIB")
        rec = {"pid": pid, "start": proc_start(pid), "id": state.get("id", ""), "devices": devices,
               "memory": int(mem_each) if mem_each and mem_each.isdigit()
               else int(gpus[devices[0]]["memory"] * DEFAULT_MEMORY_FRACTION),
               "util": int(env.get("DEPLOYER_FAKE_GPU_UTIL", DEFAULT_UTIL))}
        HOLDERS.mkdir(exist_ok=True)
        tmp = HOLDERS / f".{pid}.tmp"
        tmp.write_text(json.dumps(rec))
        tmp.rename(HOLDERS / f"{pid}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
