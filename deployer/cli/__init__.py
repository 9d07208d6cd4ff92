"""The `deploy` command line. main() is the one place errors become exit codes."""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click

from deployer import interrupt
from deployer.cli.app import cli  # commands register themselves when first used (app.COMMANDS)
from deployer.errors import DeployError

__all__ = ["cli", "main"]


def _verbose(args: list[str]) -> bool:
    """-v/--verbose among the global options only (after the command, `run -v` is a volume)."""
    it = iter(args)
    for arg in it:
        if arg in ("-v", "--verbose"):
            return True
        if arg in ("-i", "--inventory"):
            next(it, None)
        elif not arg.startswith("-"):
            return False
    return False


def _terminate(signum: int, frame: object) -> None:
    raise interrupt.Terminated


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM stops a command as Ctrl-C does (each host's clean-up runs) instead of killing it
    mid-step; unless something above deployer chose to ignore or handle it."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    before = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _stopped(exc: BaseException) -> int:
    """Say that Ctrl-C or SIGTERM stopped the command; its exit code (128 + the signal)."""
    if isinstance(exc, interrupt.Terminated):
        click.echo("terminated", err=True)
        return 143
    click.echo("interrupted", err=True)
    return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, map deployer errors to exit codes, no traceback unless -v."""
    verbose = _verbose(argv if argv is not None else sys.argv[1:])
    interrupt.reset()  # a command run in this process before may have been stopped by Ctrl-C
    try:
        # Without standalone mode click returns (not raises) the code of ctx.exit(code).
        with _sigterm_as_ctrl_c():
            rv = cli.main(args=argv, prog_name="deploy", standalone_mode=False)
    except DeployError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        if verbose and exc.detail:
            click.echo(f"  {exc.detail}", err=True)
        return exc.exit_code
    except click.exceptions.Abort as exc:  # click's own for Ctrl-C, or a prompt answered no
        if isinstance(exc.__context__, KeyboardInterrupt):
            return _stopped(exc.__context__)
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt as exc:
        return _stopped(exc)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2 if isinstance(exc, click.UsageError) else exc.exit_code
    except Exception as exc:
        if verbose:
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {exc}\n  (run with -v for the traceback)", err=True)
        return 1
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
