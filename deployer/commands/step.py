"""One remote command as a value: what executors run and dry runs print (pure)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    """One remote command: a short label for messages, its argv, and a note for the dry run."""

    label: str
    argv: tuple[str, ...]
    note: str | None = None  # when it runs if not always, or what travels on stdin
    stdin: bytes | None = field(default=None, repr=False)  # env values: never printed or logged
