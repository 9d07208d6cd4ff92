"""Per-step byte accounting on the uplink that ignores everyone else's traffic.

The interface counters count every byte on the uplink, including other tests' traffic on a shared
testbed. Each step's processes therefore run in a cgroup v2 of their own; an nftables rule counts the
packets their sockets send out over the uplink and marks those connections, and a second rule counts
the marked connections' packets coming back. Traffic made on the step's behalf by a daemon (dockerd's
`docker push`) is not in the cgroup: registry tools have no own-bytes figure.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Self

from .config import UPLINK_IF

MARK = 0x0BEC


def _cgroup2_root() -> Path | None:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def _nft(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def ruleset(table: str, cgroup_path: str) -> str:
    """The nftables table for one bench process (pure)."""
    return f"""table inet {table} {{
  chain out {{
    type filter hook output priority 0; policy accept;
    oifname "{UPLINK_IF}" socket cgroupv2 level 1 "{cgroup_path}" ct mark set {MARK:#x} counter
  }}
  chain in {{
    type filter hook input priority 0; policy accept;
    iifname "{UPLINK_IF}" ct mark {MARK:#x} counter
  }}
}}
"""


class Accounting:
    """A cgroup to run steps in and the counter of its uplink bytes; use as a context manager."""

    def __init__(self) -> None:
        self.table = f"deployer_bench_{os.getpid()}"
        self.cgroup: Path | None = None
        self.error: str | None = None

    def __enter__(self) -> Self:
        root = _cgroup2_root()
        if root is None:
            self.error = "no cgroup v2 mount"
            return self
        name = f"deployer-bench-{os.getpid()}"
        # nft resolves the path under /sys/fs/cgroup; on a hybrid host cgroup2 lives below it.
        rel = os.path.relpath(root / name, "/sys/fs/cgroup")
        try:
            (root / name).mkdir(exist_ok=True)
            _nft("-f", "-", stdin=ruleset(self.table, rel))
            self.cgroup = root / name
        except (OSError, RuntimeError) as exc:
            self.error = str(exc)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cgroup is None:
            return
        try:
            _nft("delete", "table", "inet", self.table)
        except RuntimeError:
            pass
        try:
            self.cgroup.rmdir()
        except OSError:
            pass  # a straggler still inside; the empty dir is harmless

    def procs_file(self) -> Path | None:
        """Where a child writes its pid to join the cgroup (None when accounting is off)."""
        return self.cgroup / "cgroup.procs" if self.cgroup else None

    def bytes(self) -> int | None:
        """Bytes so far (IP packets, both directions) of connections made from inside the cgroup."""
        if self.cgroup is None:
            return None
        data = json.loads(_nft("-j", "list", "table", "inet", self.table))
        total = 0
        for item in data.get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["bytes"])
        return total
