"""Rendering: JSON on stdout for machines, rich tables on a terminal, plain lines when piped.

Messages and progress go to stderr so that stdout stays clean for --json.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def is_tty() -> bool:
    return sys.stdout.isatty()


def emit_json(data: Any) -> None:
    """Print data as JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table on a terminal; tab-separated lines with a header when piped."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    if is_tty():
        t = Table(title=title, show_edge=False, header_style="bold")
        for col in columns:
            t.add_column(col)
        for row in rows:
            t.add_row(*row)
        stdout.print(t)
    else:
        print("\t".join(columns))
        for row in rows:
            print("\t".join(row))
    sys.stdout.flush()


def info(message: str) -> None:
    stderr.print(message, markup=False, highlight=False)


def warn(message: str) -> None:
    stderr.print(f"warning: {message}", style="yellow", markup=False, highlight=False)
