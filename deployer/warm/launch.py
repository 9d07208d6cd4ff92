"""The `deploy` executable: hand the command to a warm server if one serves, else run it here.

Standard library only until the cold path: the warm path must not pay for the imports it avoids.
"""
from __future__ import annotations

import os
import signal
import socket
import sys

from deployer.warm import wire

HANDSHAKE_S = 3.0  # a server that has not answered by then is wedged: run cold instead
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


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
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(HANDSHAKE_S)
        sock.connect(path)
        frame = wire.Request(argv=[sys.argv[0], *argv], cwd=os.getcwd(), env=dict(env), umask=_umask()).frame()
        socket.send_fds(sock, [frame[:wire.HEADER.size]], [0, 1, 2])
        sock.sendall(frame[wire.HEADER.size:])
        if _read(sock, 1) != wire.READY:
            return None  # STALE, or the server went away: nothing ran
        sock.sendall(wire.GO)
    except (OSError, ValueError):  # no server, a refused or wedged one, a closed stdio fd, an odd env: nothing ran
        sock.close()
        return None
    return _follow(sock)


def _follow(sock: socket.socket) -> int:
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
        if signal.getsignal(sig) is not signal.SIG_IGN:  # one ignored here (`cmd &`) is ignored by the command
            signal.signal(sig, forward)
    try:
        reply = _read(sock, 1 + wire.CODE.size)
    except OSError:
        reply = b""
    if len(reply) == 1 + wire.CODE.size and reply[:1] == wire.EXIT:
        return int(wire.CODE.unpack(reply[1:])[0])
    if received:  # the child died of the signal we passed on: so do we, as the cold process would
        signal.signal(received[-1], signal.SIG_DFL)
        os.kill(os.getpid(), received[-1])
    sys.stderr.write("error: deployer's warm process ended without an exit code; "
                     "run again with DEPLOY_WARM=0 to run in this process\n")
    return 1


def _read(sock: socket.socket, size: int) -> bytes:
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
