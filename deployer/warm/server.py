"""The warm server: import deployer once, then fork a child per command.

Run as `python -m deployer.warm.server SOCKET` (launch.spawn_server does). It holds SOCKET.lock
for its life, so one server serves a socket; it exits after DEPLOY_WARM_IDLE_S without a command,
and when deployer's code or the installed packages change (the next `deploy` then runs cold and
starts a fresh one). Children start from the state right after the imports: nothing a command did
stays in the server.
"""
from __future__ import annotations

import atexit
import fcntl
import importlib
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn, TextIO, cast

from deployer.warm import wire

PACKAGE = Path(__file__).resolve().parent.parent
HANDSHAKE_S = 5.0  # for a request to arrive whole, and for the client's GO


Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(package: Path = PACKAGE, import_path: list[str] | None = None) -> Fingerprint:
    """deployer's source files and the import path's dirs, by mtime and size: a change means stale."""
    # sys.path[0] is the server's working dir (`python -m`): the socket dir, which changes all the time
    # every command pays for this before its fork: os.walk and os.stat, at half pathlib's cost
    dirs = (sys.path if import_path is None else import_path)[1:]
    sources = [os.path.join(root, n) for root, _, names in os.walk(package) for n in names if n.endswith(".py")]
    out = []
    for p in sorted(sources) + [p for p in dirs if p and os.path.isdir(p)]:
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.append((p, st.st_mtime_ns, st.st_size))
    return tuple(out)


def preload() -> None:
    """Import what the commands use, so children start with it loaded."""
    from deployer.cli import app

    for module in sorted({m for m, _ in app.COMMANDS.values()}):
        importlib.import_module(module)
    for module in ("deployer.ship.runner", "deployer.local.client", "rich.console", "rich.live", "rich.table"):
        importlib.import_module(module)


def serve(path: Path, idle_s: float) -> None:
    """Listen on path until idle or stale; fork a child for each command."""
    if not wire.private_dir(str(path.parent)):
        return
    lock = _lock(Path(f"{path}.lock"))
    if lock is None:
        return  # another server has this socket
    known = fingerprint()  # before the imports: a file changed meanwhile makes this server stale at once
    preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(64)
        listener.settimeout(idle_s)
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                return
            if not _accept(conn, known, keep=(listener.fileno(), lock)):
                return
    finally:
        path.unlink(missing_ok=True)
        listener.close()


def _lock(path: Path) -> int | None:
    """The server's lock, held for its life; a server that is just exiting gets 2 s to let go."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    for _ in range(20):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            time.sleep(0.1)
    os.close(fd)
    return None


def _accept(conn: socket.socket, known: Fingerprint, keep: tuple[int, int]) -> bool:
    """Take one command; False when this server is stale and must go. keep: the server's own fds."""
    fds: list[int] = []
    try:
        conn.settimeout(HANDSHAKE_S)
        if not _same_user(conn):
            return True
        header, fds, _, _ = socket.recv_fds(conn, wire.HEADER.size, 3)
        if len(header) != wire.HEADER.size or len(fds) != 3:
            return True
        (size,) = wire.HEADER.unpack(header)
        if size > wire.MAX_FRAME:
            return True
        request = wire.Request.parse(_read_exactly(conn, size))
        if fingerprint() != known:
            conn.sendall(wire.STALE)
            return False
        if os.fork() == 0:
            for fd in keep:  # the lock above all: a long `deploy logs -f` must not keep it held
                os.close(fd)
            _child(conn, fds, request)
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return True
    finally:
        conn.close()
        for fd in fds:
            os.close(fd)


def _same_user(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.getuid()


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(min(size - len(data), 1 << 16))
        if not chunk:
            raise ValueError("the client closed mid-request")
        data += chunk
    return data


def _child(conn: socket.socket, fds: list[int], request: wire.Request) -> NoReturn:
    """Become the process `deploy` would have been, run the command, report its exit code."""
    code = 1
    try:
        os.setpgid(0, 0)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _reopen_stdio()
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.env)
        os.umask(request.umask)
        sys.argv = list(request.argv)
        random.seed()
        conn.settimeout(HANDSHAKE_S)
        conn.sendall(wire.READY)
        if conn.recv(1) != wire.GO:
            os._exit(0)  # the client gave up and runs the command itself
        conn.settimeout(None)
        threading.Thread(target=_watch, args=(conn,), daemon=True, name="warm-client").start()
        from deployer.cli import main

        code = main(sys.argv[1:])
        _shut_down()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 (print it as the cold process would, then report)
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            conn.sendall(wire.EXIT + wire.CODE.pack(code))
        except OSError:
            pass
        os._exit(code & 0xFF)


def _shut_down() -> None:
    """What the interpreter does at exit before the exit code is known to the shell: wait for
    non-daemon threads (and executors' workers), then run atexit callbacks. The child ends with
    os._exit, since unwinding would run the server's own clean-up (which removes the socket)."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()


def _reopen_stdio() -> None:
    """New text streams on fds 0-2: the server's were made for /dev/null (no tty, block buffered).

    (sys.__stdout__ and the like still wrap fds 0-2, now the client's: terminal size reads work.)"""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"

    def text(fd: int, mode: str, errors: str) -> TextIO:
        line = fd == 2 or os.isatty(fd)
        stream = open(fd, mode, buffering=1 if line and mode == "w" else -1, encoding=encoding, errors=errors,
                      closefd=False)
        return cast(TextIO, stream)

    sys.stdin, sys.stdout, sys.stderr = text(0, "r", "strict"), text(1, "w", "strict"), \
        text(2, "w", "backslashreplace")


def _watch(conn: socket.socket) -> None:
    """Pass the client's signals on to this process; if the client dies, die with it."""
    while True:
        try:
            data = conn.recv(1)
            if data == wire.SIGNAL:
                data += conn.recv(1)
        except OSError:
            data = b""
        if not data:  # the client is gone (killed): so is the command, as with a cold process
            os.killpg(0, signal.SIGKILL)
        if len(data) == 2:  # at the main thread, whose wait it must interrupt, as a terminal's Ctrl-C does
            signal.pthread_kill(threading.main_thread().ident or 0, data[1])


def main() -> None:
    path = Path(sys.argv[1])
    serve(path, wire.idle_seconds(os.environ))


if __name__ == "__main__":
    main()
