"""The `deploy` executable: hand the command to a warm server if one serves, else run it here.

Standard library only until the cold path: the warm path must not pay for the imports it avoids.
It takes sockets and signals from the C modules `socket` and `signal` wrap: those two import enum
and selectors, 8 ms of each command's start on the testbed (a warm `deploy --version` took 35 ms).
"""
from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stub: getsignal, signal and the numbers, as in `signal`
import _socket
import os
import struct
import sys

from deployer.warm import wire

HANDSHAKE_S = 3.0  # a server that has not answered by then is wedged: run cold instead
FORWARDED: tuple[int, ...] = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT)


def main() -> None:
    """Entry point of `deploy`."""
    argv = sys.argv[1:]
    env = os.environ
    if wire.enabled(env):
        code = run_warm(argv, env)
        if code is not None:
            sys.exit(code)
        spawn_server(env)
    from deployer.cli import main as cold_main

    sys.exit(cold_main(argv))


def run_warm(argv: list[str], env: os._Environ[str]) -> int | None:
    """The command's exit code from a warm server, or None when none took it (run cold then)."""
    path = wire.socket_path(env)
    if not wire.private_dir(os.path.dirname(path)):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(HANDSHAKE_S)
        sock.connect(path)
        frame = wire.Request(argv=[sys.argv[0], *argv], cwd=os.getcwd(), env=dict(env), umask=_umask()).frame()
        _send_fds(sock, frame[:wire.HEADER.size], [0, 1, 2])
        sock.sendall(frame[wire.HEADER.size:])
        if _read(sock, 1) != wire.READY:
            return None  # STALE, or the server went away: nothing ran
        sock.sendall(wire.GO)
    except (OSError, ValueError):  # no server, a refused or wedged one, a closed stdio fd, an odd env: nothing ran
        sock.close()
        return None
    return _follow(sock)


def _send_fds(sock: _socket.socket, data: bytes, fds: list[int]) -> None:
    """DATA with FDS attached (SCM_RIGHTS), as socket.send_fds sends them."""
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])


def _follow(sock: _socket.socket) -> int:
    """Forward signals to the child until its exit code arrives."""
    sock.settimeout(None)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        try:
            sock.sendall(wire.SIGNAL + bytes([signum]))
        except OSError:
            pass

    for sig in FORWARDED:
        if _signal.getsignal(sig) != _signal.SIG_IGN:  # one ignored here (`cmd &`) is ignored by the command
            _signal.signal(sig, forward)
    try:
        reply = _read(sock, 1 + wire.CODE.size)
    except OSError:
        reply = b""
    if len(reply) == 1 + wire.CODE.size and reply[:1] == wire.EXIT:
        return int(wire.CODE.unpack(reply[1:])[0])
    if received:  # the child died of the signal we passed on: so do we, as the cold process would
        _signal.signal(received[-1], _signal.SIG_DFL)
        os.kill(os.getpid(), received[-1])
    sys.stderr.write("error: deployer's warm process ended without an exit code; "
                     "run again with DEPLOY_WARM=0 to run in this process\n")
    return 1


def _read(sock: _socket.socket, size: int) -> bytes:
    """size bytes, or fewer if the peer closed first."""
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    return data


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def spawn_server(env: os._Environ[str]) -> None:
    """Start a server in the background for the next command; any failure just means no warm start."""
    import subprocess  # only here: the warm path does without it

    path = wire.socket_path(env)
    try:
        subprocess.Popen([sys.executable, "-m", "deployer.warm.server", path], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         close_fds=True, cwd=os.path.dirname(path))
    except OSError:
        pass
