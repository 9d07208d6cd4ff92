"""The per-host append-only history log: one JSON object per line in the staging dir.

Every ship, run and stop appends a record; `deploy history` reads them back.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

from deployer.transport.session import Session

HISTORY_FILE = "history.jsonl"

# Appends are single write(2) calls of one line, so concurrent writers never interleave
# within a line (O_APPEND), and a failed write leaves earlier records untouched.
_APPEND = 'mkdir -p -- "$1" && cat >> "$1/history.jsonl"'


def who() -> str:
    """user@workstation, for records and container labels."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = os.environ.get("USER", "unknown")
    return f"{user}@{socket.gethostname()}"


def record(action: str, *, image: str | None = None, image_id: str | None = None,
           command: str | None = None, result: str = "ok", **extra: Any) -> dict[str, Any]:
    """A history record (pure)."""
    rec: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "user": who(),
        "action": action,
        "image": image,
        "image_id": image_id,
        "command": command,
        "result": result,
    }
    rec.update({k: v for k, v in extra.items() if v is not None})
    return rec


def append(session: Session, staging_dir: str, rec: dict[str, Any]) -> None:
    """Append one record to the host's history log."""
    line = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    session.run(["sh", "-c", _APPEND, "sh", staging_dir], input=line.encode())


def parse(text: str) -> list[dict[str, Any]]:
    """Records from the log's text; a torn or corrupt line is skipped, never fatal."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def read(session: Session, staging_dir: str) -> list[dict[str, Any]]:
    """All records on the host, oldest first (empty when there is no log yet)."""
    res = session.run(["sh", "-c", 'cat -- "$1/history.jsonl" 2>/dev/null || true', "sh", staging_dir])
    return parse(res.stdout)
