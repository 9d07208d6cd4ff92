"""deployer.warm for real, on this machine only (no SSH or Docker crosses here): a server process,
`deploy` handing it commands, and the cold process as the reference they must match."""
from __future__ import annotations

import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.warm import wire

INVENTORY = """all:
  hosts:
    gpu01:
      ansible_host: 127.0.0.1
      ansible_port: {port}
  children:
    gpus:
      hosts:
        gpu01:
"""
# Tells whether the warm path served the command: 0 if a server ran it, 99 if none did.
WARM_ONLY = ("import os, sys\nfrom deployer.warm import launch\n"
             "code = launch.run_warm(sys.argv[1:], os.environ)\nsys.exit(99 if code is None else code)")


class Bed:
    """A private socket dir, a project dir with an inventory, and the env that points at them."""

    def __init__(self, tmp: Path, port: int = 1) -> None:
        self.run_dir, self.project = tmp / "run", tmp / "project"
        self.project.mkdir()
        (self.project / "inv.yml").write_text(INVENTORY.format(port=port))
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(self.run_dir), "DEPLOY_WARM_IDLE_S": "120"}
        self.env.pop("DEPLOY_INVENTORY", None)
        self.env.pop("DEPLOY_WARM", None)
        self.servers: list[subprocess.Popen[bytes]] = []

    @property
    def socket(self) -> Path:
        return Path(wire.socket_path(self.env))

    def start_server(self, **env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "deployer.warm.server", str(self.socket)],
                                env={**self.env, **env}, start_new_session=True)
        self.servers.append(proc)
        _wait_for(self.socket.exists, f"the server's socket {self.socket}")
        return proc

    def warm(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Through the warm path only (exit 99: no server took it); env: variables to add."""
        return subprocess.run([sys.executable, "-c", WARM_ONLY, *args], env={**self.env, **env}, cwd=self.project,
                              capture_output=True, text=True, timeout=60, check=False)

    def cold(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_deploy(), *args], env={**self.env, "DEPLOY_WARM": "0"}, cwd=self.project,
                              capture_output=True, text=True, timeout=60, check=False)

    def close(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait()


def _deploy() -> list[str]:
    script = Path(sys.executable).parent / "deploy"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from deployer.warm.launch import main; main()"]


def _wait_for(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    b = Bed(tmp_path)
    yield b
    b.close()


def test_a_warm_command_matches_the_cold_one_exit_codes_and_streams(bed: Bed) -> None:
    bed.start_server()
    for args in (("-i", "inv.yml", "inventory", "list"),  # a relative path: the client's working dir
                 ("-i", "inv.yml", "inventory", "list", "--json"),
                 ("-i", "inv.yml", "inventory", "show", "nosuchhost"),  # bad input: 2
                 ("ship", "--no-such-option"),  # a usage error: 2, click's message
                 ("--version",)):
        warm, cold = bed.warm(*args), bed.cold(*args)
        assert warm.returncode != 99, f"no server took {args}"
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr), args
    assert bed.cold("-i", "inv.yml", "inventory", "show", "nosuchhost").returncode == 2


def test_the_environment_and_umask_are_the_clients(bed: Bed) -> None:
    bed.start_server()
    (bed.project / "other.yml").write_text(INVENTORY.replace("gpu01", "gpu77").format(port=1))
    listed = bed.warm("inventory", "list", DEPLOY_INVENTORY="other.yml")
    assert listed.returncode == 0 and "gpu77" in listed.stdout and "gpu01" not in listed.stdout
    started = subprocess.run(
        ["sh", "-c", 'umask 077 && exec "$0" -c "$1" init starter', sys.executable, WARM_ONLY],
        env=bed.env, cwd=bed.project, capture_output=True, text=True, timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    written = bed.project / "starter" / "train.py"  # under the client's working dir, with its umask
    assert written.stat().st_mode & 0o777 == 0o600


def test_a_terminal_stays_a_terminal(bed: Bed) -> None:
    bed.start_server()
    outputs = []
    for runner in (["-c", WARM_ONLY], None):
        leader, follower = pty.openpty()
        argv = [sys.executable, *runner] if runner else _deploy()
        env = bed.env if runner else {**bed.env, "DEPLOY_WARM": "0"}
        proc = subprocess.Popen([*argv, "-i", "inv.yml", "inventory", "list"], env={**env, "COLUMNS": "100"},
                                cwd=bed.project, stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.wait(timeout=60) == 0
        outputs.append(b"".join(chunks).decode())
    warm, cold = outputs
    assert "gpu01" in warm and "\t" not in warm  # a table for a person, not the tab-separated lines of a pipe
    assert warm == cold


class SilentSshd:
    """A TCP port that takes connections and never answers: `deploy status` waits on it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = threading.Event()
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self.accepted.set()
        while conn.recv(4096):
            pass
        self.closed.set()


def test_ctrl_c_reaches_the_command(tmp_path: Path) -> None:
    sshd = SilentSshd()
    bed = Bed(tmp_path, port=sshd.port)
    try:
        bed.start_server()
        # as at a terminal: SIGINT not ignored (a shell's `cmd &`, as in scripts/pythons, ignores it, and
        # `deploy` then leaves it ignored for the command too, as a cold process would)
        at_a_terminal = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" + WARM_ONLY
        proc = subprocess.Popen([sys.executable, "-c", at_a_terminal, "-i", "inv.yml", "status", "--host", "gpu01"],
                                env=bed.env, cwd=bed.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert sshd.accepted.wait(30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (out, err)  # what the cold process gives for Ctrl-C
        assert err.strip().endswith("interrupted")  # Ctrl-C, said as such (a prompt answered no is "aborted")
    finally:
        bed.close()


def test_a_killed_client_takes_its_command_down(tmp_path: Path) -> None:
    sshd = SilentSshd()
    bed = Bed(tmp_path, port=sshd.port)
    try:
        server = bed.start_server()
        proc = subprocess.Popen([sys.executable, "-c", WARM_ONLY, "-i", "inv.yml", "status", "--host", "gpu01"],
                                env=bed.env, cwd=bed.project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert sshd.accepted.wait(30)
        assert _children(server.pid), "the command runs in a child of the server"
        proc.kill()
        proc.wait()
        # the child goes at once (its SSH handshake would have waited seconds more)
        _wait_for(lambda: not _children(server.pid), "the server's child to exit", timeout=3)
        assert sshd.closed.wait(3)
        assert server.poll() is None, "the server itself lives on"
    finally:
        bed.close()


def test_a_server_whose_code_changed_steps_aside(bed: Bed) -> None:
    extra = bed.project.parent / "extra"
    extra.mkdir()
    bed.env["PYTHONPATH"] = str(extra)  # an import dir the server watches (and its own server key)
    server = bed.start_server()
    assert bed.warm("--version").returncode == 0
    (extra / "newdist-1.0.dist-info").mkdir()  # as `pip install` would change it
    stale = bed.warm("--version")
    assert stale.returncode == 99 and stale.stdout == ""  # nothing ran: the client runs the command itself
    assert server.wait(timeout=30) == 0
    assert not bed.socket.exists()


def test_an_idle_server_exits_and_removes_its_socket(bed: Bed) -> None:
    server = bed.start_server(DEPLOY_WARM_IDLE_S="1")
    assert server.wait(timeout=30) == 0
    assert not bed.socket.exists()


def test_deploy_starts_a_server_for_the_next_command_unless_turned_off(bed: Bed) -> None:
    off = bed.cold("--version")
    assert off.returncode == 0 and not bed.run_dir.exists()
    first = subprocess.run([*_deploy(), "--version"], env=bed.env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0 and "version" in first.stdout
    _wait_for(bed.socket.exists, "the server the first command started")
    assert bed.warm("--version").stdout == first.stdout
    lock = Path(f"{bed.socket}.lock")
    holders = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _holds(p, lock)]
    for proc_dir in holders:
        os.kill(int(proc_dir.name), signal.SIGTERM)


def _holds(proc_dir: Path, path: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(path) for fd in (proc_dir / "fd").iterdir())
    except OSError:
        return False
