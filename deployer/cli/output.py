"""Rendering: JSON on stdout for machines, rich tables on a terminal, plain lines when piped.

Messages and progress go to stderr so that stdout stays clean for --json.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


@cache
def _console(name: str) -> Console:
    # rich loads on first use: `--json` and piped output never need it, and --help answers at once
    from rich.console import Console

    return Console(stderr=name == "stderr", soft_wrap=True)


def __getattr__(name: str) -> Console:
    """`output.stdout` and `output.stderr`: the rich consoles, made when first used."""
    if name in ("stdout", "stderr"):
        return _console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_tty() -> bool:
    return sys.stdout.isatty()


def emit_json(data: Any) -> None:
    """Print data as JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def emit_json_on_stop(data: Any) -> None:
    """emit_json while Ctrl-C (SIGTERM, SIGHUP) stops the command: a reader that went with the
    terminal (a pipe's `jq`, a hung-up tty) gets nothing, and the stop's exit code stands."""
    try:
        emit_json(data)
    except OSError:
        with contextlib.suppress(OSError, ValueError):  # else the exit's flush fails again, out loud
            fd = sys.stdout.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)


@contextlib.contextmanager
def records_on_stop(as_json: bool, records: Callable[[BaseException], Any]) -> Iterator[None]:
    """With --json, a command that Ctrl-C (SIGTERM, SIGHUP) stops still prints each host's record:
    RECORDS of the stop, from what it carries (deployer.fleet.carry; None: nothing to print); then
    the stop goes on to its exit code. So does a DeployError that carries records (a ship's build or
    local image that failed it before any host's work), which main() then says."""
    from deployer.errors import DeployError
    from deployer.fleet import carried

    try:
        yield
    except KeyboardInterrupt as stop:
        if as_json and (data := records(stop)) is not None:
            emit_json_on_stop(data)
        raise
    except DeployError as exc:
        if as_json and carried(exc) is not None and (data := records(exc)) is not None:
            emit_json(data)
        raise


def outcomes_on_stop(as_json: bool, hosts: Sequence[Any], kind: type,
                     render: Callable[[list[Any]], Any]) -> contextlib.AbstractContextManager[None]:
    """records_on_stop for a fleet command: RENDER of each of HOSTS' outcome as the stop carries it
    (deployer.fleet.stopped_outcomes: KIND's, else "not started")."""
    from deployer.fleet import stopped_outcomes

    return records_on_stop(as_json, lambda stop: render(stopped_outcomes(stop, hosts, kind)))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table on a terminal; tab-separated lines with a header when piped."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    if is_tty():
        from rich.table import Table

        t = Table(title=title, show_edge=False, header_style="bold")
        for col in columns:
            t.add_column(col)
        for row in rows:
            t.add_row(*row)
        _console("stdout").print(t)
    else:
        print("\t".join(columns))
        for row in rows:
            print("\t".join(row))
    sys.stdout.flush()


def info(message: str) -> None:
    _console("stderr").print(message, markup=False, highlight=False)


def warn(message: str) -> None:
    _console("stderr").print(f"warning: {message}", style="yellow", markup=False, highlight=False)
