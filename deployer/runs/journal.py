"""`deploy history`: every host's append-only log, merged newest first."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deployer import history
from deployer.errors import DeployError
from deployer.fleet import for_each_host
from deployer.inventory.host import Host
from deployer.transport.retry import connect_retrying


def merge(per_host: dict[str, list[dict[str, Any]]], *, name: str | None = None,
          limit: int | None = None) -> list[dict[str, Any]]:
    """Records of all hosts with a "host" key, newest first (ties keep log order), optionally filtered.

    A multi-node job's record is the same line (one id, with `nodes`) on each of its nodes: listed once."""
    rows = []
    jobs: set[str] = set()
    for host, records in per_host.items():
        for seq, rec in enumerate(records):
            if name is not None and rec.get("name") != name:
                continue
            if rec.get("nodes") and rec.get("id"):
                if rec["id"] in jobs:
                    continue
                jobs.add(str(rec["id"]))
            rows.append((str(rec.get("time") or ""), seq, {"host": host, **rec}))
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    out = [r[2] for r in rows]
    return out[:limit] if limit is not None else out


def collect(hosts: Sequence[Host], *, name: str | None = None, limit: int | None = None, parallel: int = 16,
            timeout: float = 10.0) -> tuple[list[dict[str, Any]], dict[str, DeployError]]:
    """(merged records, errors by host) for hosts."""

    def read(host: Host) -> list[dict[str, Any]]:
        with connect_retrying(host, timeout=timeout) as session:
            return history.read(session, host.staging_dir)

    outcomes = for_each_host(hosts, read, parallel)
    records = {o.host.name: o.value or [] for o in outcomes if o.ok}
    errors = {o.host.name: o.error for o in outcomes if o.error is not None}
    return merge(records, name=name, limit=limit), errors
