"""The SSH transport against the real testbed: argv quoting, binary send, streaming, timeouts,
jump hosts, dead links, retries, authentication."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deployer.errors import AuthError, CommandError, ConnectError, TransferError
from deployer.inventory import load
from deployer.inventory.host import Host
from deployer.transport import connect, connect_retrying
from tests.conftest import Testbed


@contextmanager
def cut(testbed: Testbed, name: str, after: float = 0.0) -> Iterator[None]:
    """Keep the host cut (re-cutting every 0.3 s: other test runs may heal shared hosts); heal on exit."""
    stop = threading.Event()

    def keep_cut() -> None:
        if stop.wait(after):
            return
        while not stop.is_set():
            testbed.cut(name)
            stop.wait(0.3)

    thread = threading.Thread(target=keep_cut, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        testbed.heal(name)


def host(testbed: Testbed, name: str, **extra: object) -> Host:
    base = load(testbed.inventory).select(name)[0]
    return Host(base.name, {**base.vars, **extra}, base.groups)


@pytest.fixture()
def gpu01(testbed: Testbed):
    with connect(host(testbed, "gpu01")) as session:
        yield session


NASTY = ["a b", "it's", '"double"', "$HOME", "$(id)", "`id`", "semi;colon", "pipe|amp&", "back\\slash",
         "new\nline", "*", "", "--flag", "tab\there", "ünïcødé"]


def test_argv_round_trips_intact(gpu01) -> None:
    result = gpu01.run(["printf", "%s\\0", *NASTY])
    assert result.stdout.split("\0")[:-1] == NASTY
    assert result.ok and result.host == "gpu01"


def test_exit_codes_and_stderr(gpu01) -> None:
    result = gpu01.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.exited, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandError) as err:
        gpu01.run(["sh", "-c", "echo 'no such thing' >&2; exit 42"])
    assert err.value.result.exited == 42 and "no such thing" in str(err.value) and err.value.host == "gpu01"


def test_send_20mb_random_bytes_arrive_intact(gpu01) -> None:
    data = os.urandom(20 * 1024 * 1024)
    chunks = (data[i:i + 1_000_003] for i in range(0, len(data), 1_000_003))
    result = gpu01.send(["sha256sum"], chunks)
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_a_server_that_rekeys_often_is_followed_mid_stream(testbed: Testbed, caplog: pytest.LogCaptureFixture) -> None:
    """cpu01's sshd re-keys every 8 MB. 40 MB up and 24 MB down, with sessions opened and closed on
    the same link between them, cross several key re-exchanges, all started by the server: deployer
    leaves re-keying to it (dial.REKEY_BYTES), so a channel close never races a re-exchange paramiko
    asked for itself (paramiko#822, a 30 s stall and a dropped link)."""
    caplog.set_level(logging.DEBUG, logger="paramiko.transport")
    data = os.urandom(40 * 1024 * 1024)
    with connect(host(testbed, "cpu01")) as session:
        chunks = (data[i:i + 1_000_003] for i in range(0, len(data), 1_000_003))
        assert session.send(["sha256sum"], chunks).stdout.split()[0] == hashlib.sha256(data).hexdigest()
        for _ in range(3):
            assert session.run(["true"]).exited == 0
        assert len(session.run(["head", "-c", str(24 * 1024 * 1024), "/dev/zero"], timeout=60).stdout) == 24 * 1024 * 1024
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Switch to new keys") for m in messages) >= 1 + 6  # the first exchange, then re-keys
    assert not [m for m in messages if m.startswith("Rekeying (hit")]  # none started by paramiko


def test_a_send_past_paramikos_own_rekey_limit_starts_no_rekey(gpu01, caplog: pytest.LogCaptureFixture) -> None:
    """600 MiB to a server with OpenSSH's default limit: paramiko alone would re-key after 512 MiB."""
    caplog.set_level(logging.DEBUG, logger="paramiko.transport")
    block = bytes(1 << 20)
    assert int(gpu01.send(["wc", "-c"], (block for _ in range(600)), timeout=120).stdout) == 600 << 20
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if m.startswith(("Rekeying", "Switch to new keys"))]


def test_input_bytes_and_binary_output(gpu01) -> None:
    payload = bytes(range(256)) * 3
    assert gpu01.run(["sha256sum"], input=payload).stdout.split()[0] == hashlib.sha256(payload).hexdigest()


def test_large_stdout_and_stderr_together_do_not_deadlock(gpu01) -> None:
    result = gpu01.run(["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' a; head -c 20000000 /dev/zero >&2"],
                       timeout=60)
    assert len(result.stdout) == 20_000_000 and len(result.stderr) == 20_000_000


def test_send_stops_cleanly_when_the_command_quits_early(gpu01) -> None:
    def endless():
        while True:
            yield b"x" * 65536

    with pytest.raises(CommandError) as err:
        gpu01.send(["sh", "-c", "head -c 10 >/dev/null; echo refused >&2; exit 5"], endless(), timeout=30)
    assert err.value.result.exited == 5 and "refused" in err.value.result.stderr


def test_stream_yields_incrementally(gpu01) -> None:
    start = time.monotonic()
    seen: list[tuple[float, bytes]] = []
    for chunk in gpu01.stream(["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.4; done"]):
        seen.append((time.monotonic() - start, chunk))
    assert b"".join(c for _, c in seen) == b"line1\nline2\nline3\n"
    assert seen[0][0] < 0.35  # the first line arrives before the command ends (~1.2 s)


def test_stream_raises_at_the_end_on_failure_and_closing_stops_it(gpu01) -> None:
    with pytest.raises(CommandError):
        list(gpu01.stream(["sh", "-c", "echo partial; exit 7"]))
    gen = gpu01.stream(["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
    assert next(gen).startswith(b"tick")
    gen.close()  # closes the channel: the session stays usable
    assert gpu01.run(["echo", "still here"]).stdout == "still here\n"


def test_timeout_raises_command_error(gpu01) -> None:
    start = time.monotonic()
    with pytest.raises(CommandError) as err:
        gpu01.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - start < 5
    assert err.value.result.exited == 124 and "timed out" in str(err.value)


def test_session_sees_the_hosts_docker(gpu01, testbed: Testbed) -> None:
    assert gpu01.run(["sh", "-c", "echo $DOCKER_HOST"]).stdout.strip() == testbed.hosts["gpu01"].docker_host


def test_jump_host_connects_through_gpu01(testbed: Testbed) -> None:
    h = host(testbed, "gpu02", deploy_jump=f"root@{testbed.hosts['gpu01'].address}")
    with connect(h) as session:
        assert session.spec.jump is not None and session.spec.jump.address == testbed.hosts["gpu01"].address
        # the TCP connection to gpu02 comes from gpu01's address, so the jump was really used
        client = session.run(["sh", "-c", "echo $SSH_CLIENT"]).stdout.split()[0]
        assert client == testbed.hosts["gpu01"].address
        data = os.urandom(2 * 1024 * 1024)
        assert session.send(["sha256sum"], [data]).stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_jump_host_key_is_checked_too(testbed: Testbed, tmp_path: Path) -> None:
    from deployer.errors import HostKeyError

    kh = tmp_path / "known_hosts"
    # only the target's key is known: the jump host's key is unknown
    kh.write_text("".join(ln + "\n" for ln in Path(testbed.known_hosts).read_text().splitlines() if "gpu02" in ln))
    h = host(testbed, "gpu02", deploy_jump=f"root@{testbed.hosts['gpu01'].address}", deploy_known_hosts=str(kh))
    with pytest.raises(HostKeyError, match=r"10\.213\.0\.11.*not known"):
        connect(h)


def test_missing_key_file_and_refused_key_are_auth_errors(testbed: Testbed, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(AuthError, match="does not exist"):
        connect(host(testbed, "gpu01", ansible_ssh_private_key_file=str(tmp_path / "missing")))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    with pytest.raises(AuthError, match=r"authentication as root@10\.213\.0\.11 refused") as err:
        connect(host(testbed, "gpu01", ansible_ssh_private_key_file=str(tmp_path / "k")))
    assert "authorized_keys" in str(err.value)


def test_dead_link_is_noticed_during_run_and_send(testbed: Testbed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYER_DEAD_LINK_S", "5")
    h = host(testbed, "cpu01")
    session = connect(h)
    start = time.monotonic()
    with cut(testbed, "cpu01", after=1.0), pytest.raises(ConnectError, match="connection lost"):
        session.run(["sleep", "60"])
    assert time.monotonic() - start < 45

    session = connect(h)

    def endless() -> Iterator[bytes]:
        while True:
            yield b"y" * 65536

    start = time.monotonic()
    with cut(testbed, "cpu01", after=1.0), pytest.raises(TransferError) as err:
        session.send(["sh", "-c", "cat >/dev/null"], endless())
    assert err.value.transient is True
    assert time.monotonic() - start < 45


def test_connect_to_a_cut_host_times_out_then_retries_succeed_after_heal(testbed: Testbed) -> None:
    h = host(testbed, "cpu01")
    start = time.monotonic()
    with cut(testbed, "cpu01"), pytest.raises(ConnectError, match="no answer within 2s"):
        time.sleep(0.5)
        connect(h, timeout=2)
    assert time.monotonic() - start < 5
    result: dict[str, object] = {}

    def attempt() -> None:
        try:
            with connect_retrying(h, timeout=2, budget_s=40) as session:
                result["ok"] = session.run(["true"]).ok
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            result["error"] = exc

    with cut(testbed, "cpu01"):
        time.sleep(0.5)
        worker = threading.Thread(target=attempt)
        worker.start()
        time.sleep(3)  # a couple of failed attempts while the host is cut; healed on leaving the block
    worker.join(60)
    assert result == {"ok": True}


def test_ssh_agent_authentication(testbed: Testbed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("DEPLOY_SSH_CONFIG", "none")
        subprocess.run(["ssh-add", "-q", testbed.key], check=True, env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       stderr=subprocess.DEVNULL)
        base = load(testbed.inventory).select("gpu01")[0]
        h = Host(base.name, {k: v for k, v in base.vars.items() if k != "ansible_ssh_private_key_file"})
        with connect(h) as session:
            assert session.spec.key_files == ()
            assert session.run(["whoami"]).stdout == "root\n"
    finally:
        agent.terminate()
        agent.wait(5)


def _in_host_work(fn, name: str = "gpu01"):
    """Run fn() as deploy runs a host's work (deployer.fleet): (its value or its exception, seconds)."""
    from deployer import interrupt

    out: list[object] = []

    def work() -> None:
        interrupt.begin_work(name)
        began = time.monotonic()
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            out.append(exc)
        finally:
            out.append(time.monotonic() - began)
            interrupt.end_work()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, out


def test_ctrl_c_stops_waiting_for_a_long_command_but_lets_a_short_one_end(gpu01) -> None:
    """Ctrl-C (deployer.interrupt) in a host's work: a command that has run 2 s (a load, a pull) is
    no longer waited for; a short one ends as usual, and the next command does not start."""
    from deployer import interrupt
    from deployer.errors import Interrupted
    from deployer.transport.ssh import LONG_WAIT_S

    try:
        thread, out = _in_host_work(lambda: gpu01.run(["sleep", "20"]))
        time.sleep(0.3)
        interrupt.request()
        thread.join(timeout=30)
        assert isinstance(out[0], Interrupted) and out[0].host == "gpu01"
        assert LONG_WAIT_S <= out[1] < 10  # not the 20 s

        interrupt.reset()
        short: list[object] = []

        def one_then_another() -> object:
            short.append(gpu01.run(["sh", "-c", "sleep 1; cat"], input=b"x" * 100_000))
            return gpu01.run(["true"])

        thread, out = _in_host_work(one_then_another)
        time.sleep(0.3)
        interrupt.request()
        thread.join(timeout=30)
        assert len(short) == 1 and short[0].ok and len(short[0].stdout) == 100_000  # its stdin went whole
        assert isinstance(out[0], Interrupted)  # the next one did not start
    finally:
        interrupt.reset()
