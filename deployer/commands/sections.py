"""Reading the output of deployer's one-round-trip scripts: named sections, JSON lines (pure)."""
from __future__ import annotations

import json
from typing import Any

MARKER = "--- deployer:"  # a script prints `--- deployer:<name>` before each part of its output


def split(stdout: str) -> dict[str, list[str]]:
    """Each section's lines, by name; lines before the first marker are dropped."""
    parts: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            current = line[len(MARKER):].strip()
            parts[current] = []
        elif current is not None:
            parts[current].append(line)
    return parts


def json_object(text: str) -> dict[str, Any] | None:
    """The first line of TEXT that is a JSON object (docker prints warnings around its JSON)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None
