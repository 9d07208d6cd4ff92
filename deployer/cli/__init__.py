"""The `deploy` command line. main() is the one place errors become exit codes."""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from deployer import interrupt
from deployer.cli.app import cli  # commands register themselves when first used (app.COMMANDS)
from deployer.errors import DeployError

__all__ = ["cli", "main"]


def _verbose(args: list[str]) -> bool:
    """-v/--verbose before the command, or --verbose after it (where `run -v` is a volume); not
    past a `--` (what follows is the container's command)."""
    it = iter(args)
    before = True
    for arg in it:
        if arg == "--":
            return False
        if arg == "--verbose" or (before and arg == "-v"):
            return True
        if before and arg in ("-i", "--inventory"):
            next(it, None)
        elif not arg.startswith("-"):
            before = False
    return False


STOPPING = (signal.SIGTERM, signal.SIGHUP)  # handled as Ctrl-C is


def _terminator(terminal: tuple[int, ...]) -> Callable[[int, object], None]:
    """The handler of STOPPING; TERMINAL: the stdio fds that are a terminal (known before a
    hang-up: after it, isatty() says no)."""
    def terminate(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            _leave(terminal)
        raise interrupt.Terminated(signum)

    return terminate


def _leave(terminal: tuple[int, ...]) -> None:
    """The terminal hung up: writing to it fails (EIO), so what would go there (progress, the
    hosts' outcome) goes nowhere while each host's clean-up runs. Files and pipes are kept."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in terminal:
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)


@contextmanager
def _signals_as_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a command as Ctrl-C does (each host's clean-up runs) instead of
    killing it mid-step; unless something above deployer chose to ignore or handle them (`nohup`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    terminate = _terminator(tuple(fd for fd in (0, 1, 2) if os.isatty(fd)))
    before = {sig: signal.signal(sig, terminate) for sig in STOPPING if signal.getsignal(sig) is signal.SIG_DFL}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _stopped(exc: BaseException) -> int:
    """Say that Ctrl-C, SIGTERM or SIGHUP stopped the command; its exit code (128 + the signal)."""
    if isinstance(exc, interrupt.Terminated):
        click.echo("hung up" if exc.signum == signal.SIGHUP else "terminated", err=True)
        return 128 + exc.signum
    click.echo("interrupted", err=True)
    return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, map deployer errors to exit codes, no traceback unless -v."""
    verbose = _verbose(argv if argv is not None else sys.argv[1:])
    interrupt.reset()  # a command run in this process before may have been stopped by Ctrl-C
    try:
        # Without standalone mode click returns (not raises) the code of ctx.exit(code).
        with _signals_as_ctrl_c():
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
        if isinstance(exc, click.NoSuchOption) and exc.option_name == "-v":
            exc = click.NoSuchOption("-v", f"{exc.message} For debug logs: --verbose here, or -v before the command "
                                     "(deploy -v COMMAND).", ctx=exc.ctx)
        exc.show()
        return 2 if isinstance(exc, click.UsageError) else exc.exit_code
    except Exception as exc:
        if verbose:
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {exc}\n  (run with -v for the traceback)", err=True)
        return 1
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
