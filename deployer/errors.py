"""One exception tree for deployer.

    DeployError                     base; exit code 1 unless a family says otherwise
    ├── UsageError                  bad input from the user: exit code 2
    │   ├── InventoryError          inventory file/vars/pattern problems (file, line, key path)
    │   ├── PlaybookError           playbook validation (file, line, key path)
    │   └── SpecError               malformed flag values (--gpus, -v, -e ...)
    ├── LocalError                  the workstation side: local Docker, files
    │   └── ImageNotFound           the local Docker has no such image (.ref)
    ├── HostError                   something failed on or while reaching one host (.host)
    │   ├── ConnectError            cannot reach/open SSH; transient (retried)
    │   ├── AuthError               authentication refused; never retried
    │   ├── HostKeyError            unknown or changed host key; never retried
    │   ├── CommandError            a remote command exited non-zero (.result)
    │   ├── TransferError           bytes did not arrive intact (hash mismatch, short file)
    │   ├── PreflightError          a precondition on the host is not met (disk, docker, gpus)
    │   └── LockError               another deploy holds the host lock
    └── (nothing else: lower-layer exceptions are translated where they are caught)

Every message says what failed, where, and what to do. The CLI maps families to exit
codes in one place (deployer.cli.main).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployer.transport.result import Result

log = logging.getLogger(__name__)


class DeployError(Exception):
    """Base of every error deployer raises on purpose."""

    exit_code = 1
    transient = False  # a dropped link or a timeout: worth another try
    detail: str | None = None  # more than a person needs to read; the CLI prints it with -v

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return with_hint(self.message, self.hint)


def with_hint(message: str, hint: str | None) -> str:
    """A message as the terminal shows it: the hint, if any, on a line of its own below it."""
    return f"{message}\n  hint: {hint}" if hint else message


class UsageError(DeployError):
    """Bad input: flags, files, patterns. Exit code 2."""

    exit_code = 2


class LocatedError(UsageError):
    """A usage error that points into a file: file:line and a key path."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key_path: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.key_path = key_path
        where = ""
        if file:
            where = file + (f":{line}" if line else "")
        if key_path:
            where = f"{where}: {key_path}" if where else key_path
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.reason = message


class InventoryError(LocatedError):
    """Inventory could not be loaded or a pattern is invalid."""


class PlaybookError(LocatedError):
    """Playbook failed validation."""


class SpecError(UsageError):
    """A malformed value given on the command line or in a spec."""


class LocalError(DeployError):
    """The local side failed: local Docker daemon, local files."""


class ImageNotFound(LocalError):
    """The local Docker has no image by this reference (raised by deployer.local)."""

    def __init__(self, ref: str, *, hint: str | None = None) -> None:
        super().__init__(f"image {ref} not found in the local Docker", hint=hint)
        self.ref = ref


class HostError(DeployError):
    """A failure tied to one host."""

    transient = False

    def __init__(self, host: str, message: str, *, hint: str | None = None) -> None:
        self.host = host
        super().__init__(f"{host}: {message}", hint=hint)
        self.reason = message


class ConnectError(HostError):
    """The host could not be reached, or the connection dropped. Retried. UNREACHABLE: it refused
    the connection, has no route or no name, or never answered (down, filtered, or a wrong
    address), unlike a failed SSH handshake or a dropped link."""

    transient = True

    def __init__(self, host: str, message: str, *, hint: str | None = None, unreachable: bool = False) -> None:
        super().__init__(host, message, hint=hint)
        self.unreachable = unreachable


class AuthError(HostError):
    """SSH authentication was refused. Never retried."""


class HostKeyError(HostError):
    """The host key is unknown, has changed or is revoked (.state); or known_hosts is unreadable. Never retried."""

    def __init__(self, host: str, message: str, *, hint: str | None = None, state: str = "unknown") -> None:
        super().__init__(host, message, hint=hint)
        self.state = state  # "unknown" | "changed" | "revoked"


class CommandError(HostError):
    """A remote command exited non-zero (.result). The message names the command by a short label
    and shows the tail of its stderr; `detail` (shown with -v) has the whole command line."""

    def __init__(self, host: str, result: Result, *, what: str | None = None, hint: str | None = None) -> None:
        self.result = result
        self.what = what
        # the probe and install scripts are whole programs: their argv would bury the cause
        msg = f"{what + ': ' if what else ''}`{result.label}` exited {result.exited}"
        tail = result.stderr_tail()
        if tail:
            msg += f"\n  stderr: {tail}"
        super().__init__(host, msg, hint=hint)
        self.detail = f"command: {result.command}"
        # -v turns on debug logging: the full command then shows wherever this error is reported
        log.debug("%s: `%s` exited %d; %s", host, result.label, result.exited, self.detail)


class TransferError(HostError):
    """Bytes did not arrive intact. Transient when the link dropped mid-stream."""

    def __init__(self, host: str, message: str, *, transient: bool = False, hint: str | None = None) -> None:
        super().__init__(host, message, hint=hint)
        self.transient = transient


class PreflightError(HostError):
    """A precondition on the host is not met; nothing was changed."""


class LockError(HostError):
    """Another deploy holds this host's lock."""


class Interrupted(HostError):
    """Ctrl-C (or SIGTERM, SIGHUP) stopped this host's work (deployer.interrupt), or kept it from starting
    (.started False); what it staged stays for the next run."""

    exit_code = 130

    def __init__(self, host: str, why: str = "Ctrl-C", *, started: bool = True) -> None:
        super().__init__(host, f"{'' if started else 'not started: '}interrupted ({why})",
                         hint="run the same command again: a ship resumes where it stopped")
        self.started = started


def error_text(error: BaseException | None) -> str | None:
    """An error's message without the host or file prefix (a JSON record names those itself), nor
    its hint (error_hint: a key of its own)."""
    if error is None:
        return None
    if isinstance(error, DeployError):
        return getattr(error, "reason", None) or error.message
    return str(error)


def error_hint(error: BaseException | None) -> str | None:
    """What to do about ERROR, if deployer knows (a --json record's `hint`)."""
    return error.hint if isinstance(error, DeployError) else None


def error_shown(error: BaseException | None) -> str:
    """ERROR as the terminal shows it, without the host or file prefix (the line names them)."""
    return with_hint(error_text(error) or "", error_hint(error))


def error_fields(error: BaseException | None) -> dict[str, str | None]:
    """The `error` and `hint` keys of a host's --json record (both None when it went well)."""
    return {"error": error_text(error), "hint": error_hint(error)}
