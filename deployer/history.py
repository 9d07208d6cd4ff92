"""The per-host append-only history log: one JSON object per line in the staging dir.

Every ship, run and stop appends a record; `deploy history` reads them back.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from datetime import datetime, timezone
from typing import Any

from deployer.transport.session import Session

HISTORY_FILE = "history.jsonl"

# Appends are single write(2) calls of one line, so concurrent writers never interleave
# within a line (O_APPEND), and a failed write leaves earlier records untouched.
# The transport retries a command whose reply was lost, so the same line may arrive twice:
# a line whose id ("$2") is already in the log is read and dropped. Only retries share an id
# and they run one after another, so the check-then-append needs no lock.
# the line comes on stdin, or as $3 (for a record appended in a batch, whose stdin is another step's)
_APPEND = ('mkdir -p -- "$1" || exit $?\n'
           'if [ -n "$2" ] && grep -qF -- "$2" "$1/history.jsonl" 2>/dev/null; then [ "$#" -ge 3 ] || cat > /dev/null\n'
           'elif [ "$#" -ge 3 ]; then printf "%s\\n" "$3" >> "$1/history.jsonl"\n'
           'else cat >> "$1/history.jsonl"; fi')


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
        "id": uuid.uuid4().hex,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "user": who(),
        "action": action,
        "image": image,
        "image_id": image_id,
        "command": command,
        "result": result,
    }
    rec.update({k: v for k, v in extra.items() if v is not None})
    return rec


def _dumps(rec: dict[str, Any]) -> str:
    return json.dumps(rec, sort_keys=True, separators=(",", ":"))


def append_command(staging_dir: str, rec: dict[str, Any], *, inline: bool = False) -> tuple[tuple[str, ...], bytes]:
    """(argv, stdin) that append REC unless a line with its id is already logged (pure).

    INLINE: the line is an argument and stdin is empty (a ship's own record, which holds no
    secret, appended in a batch). A record without an id gets one here, so every line appended
    from now on can be deduplicated.
    """
    if not rec.get("id"):
        rec = {**rec, "id": uuid.uuid4().hex}
    # the exact serialized key, so an id quoted inside another record's command never matches
    marker = _dumps({"id": str(rec["id"])})[1:-1]
    argv = ("sh", "-c", _APPEND, "sh", staging_dir, marker)
    if inline:
        return (*argv, _dumps(rec)), b""
    return argv, (_dumps(rec) + "\n").encode()


def append(session: Session, staging_dir: str, rec: dict[str, Any]) -> None:
    """Append one record to the host's history log (at most once, even when the command is retried)."""
    argv, line = append_command(staging_dir, rec)
    session.run(list(argv), input=line)


def parse(text: str) -> list[dict[str, Any]]:
    """Records from the log's text; a torn or corrupt line is skipped, never fatal.

    A repeated id (two writers racing with one retried record) is listed once; old records have no id.
    """
    out = []
    seen: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        rid = obj.get("id")
        if isinstance(rid, str) and rid:
            if rid in seen:
                continue
            seen.add(rid)
        out.append(obj)
    return out


def read(session: Session, staging_dir: str) -> list[dict[str, Any]]:
    """All records on the host, oldest first (empty when there is no log yet)."""
    res = session.run(["sh", "-c", 'cat -- "$1/history.jsonl" 2>/dev/null || true', "sh", staging_dir])
    return parse(res.stdout)
