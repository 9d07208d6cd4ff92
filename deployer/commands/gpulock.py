"""Pure argv builders and parsers for the per-GPU placement locks on a host.

Layout under the host's staging dir: `gpu-locks/<GPU uuid>/owner`, one directory per GPU a
placement is starting a container on. `mkdir` is atomic, so two placements never both hold a GPU;
a placement takes all its GPUs or none (in index order, so two placements cannot deadlock), and
removes them once its container runs (from then on the container holds them, as status shows).
"""
from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# $1 lock dir, $2 owner line, then the GPU uuids. Prints `acquired`, or `held UUID AGE_S OWNER` for
# the first one someone else holds, after removing the ones this call had taken.
_LOCK = (
    'dir=$1; owner=$2; shift 2; mkdir -p -- "$dir" || exit $?\n'
    'got=\n'
    'for u do\n'
    '  if mkdir -- "$dir/$u" 2>/dev/null; then\n'
    '    printf "%s\\n" "$owner" > "$dir/$u/owner"; got="$got $u"\n'
    '  else\n'
    '    now=$(date +%s); m=$(stat -c %Y -- "$dir/$u" 2>/dev/null || echo "$now")\n'
    '    printf "held %s %s " "$u" "$((now - m))"; cat -- "$dir/$u/owner" 2>/dev/null; echo\n'
    '    for g in $got; do rm -rf -- "${dir:?}/$g"; done\n'
    '    exit 0\n'
    '  fi\n'
    'done\n'
    'echo acquired'
)

# $1 lock dir, $2 token, then uuids: remove each lock whose owner line carries the token.
_UNLOCK = ('dir=$1; token=$2; shift 2\n'
           'for u do grep -qF -- "$token" "$dir/$u/owner" 2>/dev/null && rm -rf -- "${dir:?}/$u"; done; exit 0')

# $1 lock dir, $2 uuid, $3 the dead owner's token: one claimant (mkdir takeover) moves the lock away
# while it still carries that token, so a fresh lock someone took meanwhile is never removed.
_TAKEOVER = (
    'l=$1/$2\n'
    'mkdir -- "$l/takeover" 2>/dev/null || exit 0\n'
    'if grep -qF -- "$3" "$l/owner" 2>/dev/null && grave=$(mktemp -d -- "$1/.dead.XXXXXX") && mv -- "$l" "$grave/"; then\n'
    '  rm -rf -- "$grave"\n'
    'else rmdir -- "$l/takeover" 2>/dev/null; fi; exit 0'
)

_UUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def lock_dir(staging: str) -> str:
    return posixpath.join(staging, "gpu-locks")


def _check(uuids: Sequence[str]) -> None:
    for u in uuids:
        if not _UUID.match(u):
            raise ValueError(f"not a GPU uuid: {u!r}")


def lock_argv(staging: str, owner: str, uuids: Sequence[str]) -> tuple[str, ...]:
    """Take every GPU of uuids, or none (parse with parse_lock)."""
    _check(uuids)
    return ("sh", "-c", _LOCK, "sh", lock_dir(staging), owner, *uuids)


def unlock_argv(staging: str, token: str, uuids: Sequence[str]) -> tuple[str, ...]:
    """Release the GPUs of uuids that this token still holds."""
    _check(uuids)
    return ("sh", "-c", _UNLOCK, "sh", lock_dir(staging), token, *uuids)


def takeover_argv(staging: str, uuid: str, dead_token: str) -> tuple[str, ...]:
    """Remove a GPU lock a dead placement left (only while it still carries dead_token)."""
    _check([uuid])
    return ("sh", "-c", _TAKEOVER, "sh", lock_dir(staging), uuid, dead_token)


@dataclass(frozen=True)
class GpuLockState:
    """The answer to lock_argv: acquired, or which GPU someone holds, for how long, and who."""

    acquired: bool
    uuid: str = ""
    age_s: int | None = None
    owner: dict[str, Any] = field(default_factory=dict)


def parse_lock(stdout: str) -> GpuLockState:
    for line in stdout.splitlines():
        if line.strip() == "acquired":
            return GpuLockState(True)
        if line.startswith("held "):
            parts = line.split(" ", 3)
            owner: Any = {}
            try:
                owner = json.loads(parts[3]) if len(parts) > 3 and parts[3].strip() else {}
            except ValueError:
                owner = {}
            age = int(parts[2]) if len(parts) > 2 and parts[2].lstrip("-").isdigit() else None
            return GpuLockState(False, parts[1] if len(parts) > 1 else "", age,
                                owner if isinstance(owner, dict) else {})
    raise ValueError(f"unexpected answer from the GPU lock: {stdout.strip()[:200]!r}")
