"""`scripts/bench --startup`: how fast `deploy` answers, against `python -c 'import click, yaml'`.

Each command runs as a whole process, N times, interleaved with the baseline so that drift hits
both alike; the medians count. Target (issue 12): `deploy --help` and `deploy inventory list`
under 0.3 s on this machine. Needs no testbed: the inventory is inventories/example.yml.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_S = 0.3
INVENTORY = ROOT / "inventories" / "example.yml"  # the commented example fleet


def commands(python: str) -> dict[str, list[str]]:
    deploy = str(Path(python).parent / "deploy")
    return {
        "python -c 'import click, yaml'": [python, "-c", "import click, yaml"],
        "deploy --help": [deploy, "--help"],
        "deploy inventory list": [deploy, "-i", str(INVENTORY), "inventory", "list"],
        "deploy inventory list --json": [deploy, "-i", str(INVENTORY), "inventory", "list", "--json"],
    }


def measure(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench --startup", description=__doc__)
    p.add_argument("--runs", type=int, default=15, help="runs per command (default 15)")
    p.add_argument("--out", default="bench-results", help="directory for the JSON (default bench-results/)")
    args = p.parse_args(argv)
    cmds = commands(sys.executable)
    for cmd in cmds.values():
        measure(cmd)  # warm the page cache and .pyc files once
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            times[name].append(measure(cmd))
    base = statistics.median(times["python -c 'import click, yaml'"])
    rows = []
    print("| command | min s | median s | max s | median / baseline | target |")
    print("|---|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = "baseline" if name.startswith("python") else (
            f"< {TARGET_S} s: {'met' if med < TARGET_S else 'NOT met'}")
        rows.append({"command": name, "min": min(ts), "median": med, "max": max(ts), "ratio": med / base,
                     "runs": len(ts)})
        print(f"| {name} | {min(ts):.3f} | {med:.3f} | {max(ts):.3f} | {med / base:.2f}x | {target} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"startup-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"runs": args.runs, "rows": rows}, indent=1) + "\n")
    print(f"\n(written to {path})", file=sys.stderr)
    return 0 if all(r["median"] < TARGET_S for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
