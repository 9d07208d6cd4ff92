#!/usr/bin/python3
"""Fake nvidia-smi for a testbed GPU host: -L, --query-gpu/--query-compute-apps with --format=csv[...],
-i, and a short default table. GPUs held by live containers show memory and utilization in use."""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from gpustate import load_gpus, usage

UNITS = {"memory.total": "MiB", "memory.used": "MiB", "memory.free": "MiB", "utilization.gpu": "%",
         "utilization.memory": "%", "power.draw": "W", "power.limit": "W", "used_memory": "MiB",
         "used_gpu_memory": "MiB", "clocks.sm": "MHz"}


def gpu_fields(g: dict, used: tuple[int, int, list[int]], info: dict, count: int) -> dict[str, str]:
    mem, util, _ = used
    return {
        "index": str(g["index"]), "name": g["name"], "uuid": g["uuid"], "count": str(count),
        "memory.total": str(g["memory"]), "memory.used": str(mem), "memory.free": str(g["memory"] - mem),
        "utilization.gpu": str(util), "utilization.memory": str(min(100, util // 2)),
        "driver_version": info["driver_version"], "temperature.gpu": str(34 + util // 3),
        "power.draw": f"{70 + 3 * util:.2f}", "power.limit": "700.00", "clocks.sm": "1980" if util else "345",
        "pci.bus_id": f"00000000:{0x18 + g['index'] * 0x10:02X}:00.0", "persistence_mode": "Enabled",
        "pstate": "P0" if util else "P8", "serial": str(1650000000000 + g["index"]),
        "compute_mode": "Default", "mig.mode.current": "Disabled", "gpu_name": g["name"], "gpu_uuid": g["uuid"],
    }


def csv_out(names: list[str], rows: list[dict[str, str]], fmt: set[str]) -> str:
    lines = []
    if "noheader" not in fmt:
        lines.append(", ".join(f"{n} [{UNITS[n]}]" if n in UNITS else n for n in names))
    for row in rows:
        vals = []
        for n in names:
            v = row[n]
            if n in UNITS and "nounits" not in fmt:
                v = f"{v} {UNITS[n]}"
            vals.append(v)
        lines.append(", ".join(vals))
    return "\n".join(lines) + ("\n" if lines else "")


def parse_fields(spec: str, valid: set[str]) -> list[str]:
    names = []
    for raw in spec.split(","):
        n = raw.strip()
        if n not in valid:
            sys.stderr.write(f'Field "{n}" is not a valid field to query.\n\n')
            sys.exit(2)
        names.append(n)
    return names


def table(info: dict, gpus: list[dict], use: dict) -> str:
    bar = "+-----------------------------------------+------------------------+----------------------+"
    out = [time.strftime("%a %b %d %H:%M:%S %Y"),
           "+-----------------------------------------------------------------------------------------+",
           (f"| NVIDIA-SMI {info['driver_version']:<22} Driver Version: {info['driver_version']:<14}"
            " CUDA Version: 12.4     |"),
           bar,
           "| GPU  Name                               | Memory-Usage           | GPU-Util             |",
           bar.replace("-", "=").replace("+", "|")]
    for g in gpus:
        mem, util, _ = use[g["index"]]
        out.append(f"| {g['index']:>3}  {g['name']:<35}| {mem:>7}MiB / {g['memory']:>6}MiB | {util:>6}%"
                   f"              |")
    out.append(bar)
    out.append("| Processes:  GPU  PID                                                                      |")
    procs = [(i, p) for i, (_, _, pids) in use.items() for p in pids]
    for i, p in procs:
        out.append(f"|             {i:>3}  {p:<72}|")
    if not procs:
        out.append("|  No running processes found                                                             |")
    out.append("+-----------------------------------------------------------------------------------------+")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="nvidia-smi", add_help=True)
    ap.add_argument("-L", "--list-gpus", action="store_true")
    ap.add_argument("--query-gpu")
    ap.add_argument("--query-compute-apps")
    ap.add_argument("--format")
    ap.add_argument("-i", "--id")
    args = ap.parse_args(argv)
    info = load_gpus()
    gpus = info["gpus"]
    if args.id is not None:
        ids = [t.strip() for t in args.id.split(",")]
        sel = [g for g in gpus if str(g["index"]) in ids or g["uuid"] in ids]
        if len(sel) != len(ids):
            sys.stderr.write("No devices were found\n")
            return 6
        gpus = sel
    use = usage(info["gpus"])
    if args.list_gpus:
        sys.stdout.write("".join(f"GPU {g['index']}: {g['name']} (UUID: {g['uuid']})\n" for g in gpus))
        return 0
    if args.query_gpu or args.query_compute_apps:
        if not args.format or not args.format.startswith("csv"):
            sys.stderr.write('Please specify --format=csv (with optional "noheader" and "nounits").\n')
            return 2
        fmt = {f.strip() for f in args.format.split(",")}
        if args.query_gpu:
            rows = [gpu_fields(g, use[g["index"]], info, len(info["gpus"])) for g in gpus]
            valid = set(gpu_fields({"index": 0, "name": "", "uuid": "", "memory": 0}, (0, 0, []), info, 0))
            names = parse_fields(args.query_gpu, valid)
        else:
            valid = {"pid", "process_name", "gpu_uuid", "gpu_name", "used_memory", "used_gpu_memory"}
            names = parse_fields(args.query_compute_apps, valid)
            rows = []
            for g in gpus:
                mem, _, pids = use[g["index"]]
                for pid in pids:
                    full = {"pid": str(pid), "process_name": "python", "gpu_uuid": g["uuid"], "gpu_name": g["name"],
                            "used_memory": str(mem // max(1, len(pids))),
                            "used_gpu_memory": str(mem // max(1, len(pids)))}
                    rows.append({n: full[n] for n in names})
        sys.stdout.write(csv_out(names, rows, fmt))
        return 0
    sys.stdout.write(table(info, gpus, use))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
