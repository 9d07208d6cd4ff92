"""The SSH link's TCP socket (deployer.transport.dial): its connect stops on Ctrl-C; it
acknowledges what it receives at once (QuickAckSocket: else sshd's answer to a session opened
right after login waits 40 ms for our delayed ACK), and is otherwise the socket paramiko expects."""
from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import paramiko.packet
import pytest
from ctrl_c import ctrl_c_during

from deployer.errors import ConnectError, Interrupted
from deployer.transport import dial
from deployer.transport.config import ConnectSpec
from deployer.transport.dial import REKEY_BYTES, QuickAckSocket, connect, keep_alive, new_transport, open_link
from deployer.transport.trust import fetch_key


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    server.close()
    try:
        yield client, peer
    finally:
        client.close()
        peer.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_every_read_leaves_the_socket_acknowledging_at_once(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, peer = tcp_pair
    sock = QuickAckSocket(client)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
    peer.sendall(b"SSH-2.0-test\r\n")
    assert sock.recv(64) == b"SSH-2.0-test\r\n"
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
    # the rest is the socket's own
    sock.settimeout(1.5)
    assert sock.gettimeout() == 1.5 and sock.fileno() == client.fileno()
    sock.sendall(b"hello")
    assert peer.recv(5) == b"hello"
    sock.close()
    assert client.fileno() == -1


def test_a_socket_without_quickack_still_reads() -> None:
    a, b = socket.socketpair()  # a Unix socket: setting TCP_QUICKACK fails, the read does not
    try:
        b.sendall(b"data")
        assert QuickAckSocket(a).recv(4) == b"data"
    finally:
        a.close()
        b.close()


def test_links_leave_rekeying_to_the_server(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    """paramiko's own re-key (after 512 MiB) can deadlock its reader on a crossing channel close
    (paramiko#822): a link starts one only past twice OpenSSH's default limit (64 GiB for AES)."""
    client, _peer = tcp_pair
    transport = new_transport(client)
    try:
        assert transport.packetizer.REKEY_BYTES == REKEY_BYTES >= 2 * 2 ** 32 * 16
        assert paramiko.packet.Packetizer.REKEY_BYTES == 2 ** 29  # the class default, for other users, untouched
    finally:
        transport.close()


@pytest.fixture
def unanswered() -> Iterator[tuple[str, int]]:
    """A loopback address whose connects hang, as to a host that is down: a listener whose one-slot
    accept queue is full drops every further SYN."""
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    first = socket.create_connection(server.getsockname())
    try:
        yield server.getsockname()
    finally:
        first.close()
        server.close()


def test_connect_is_create_connection() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        sock = connect(*server.getsockname(), timeout=3)
        peer, _ = server.accept()
        assert sock.gettimeout() == 3 and sock.getpeername() == peer.getsockname()
        sock.close()
        peer.close()
        port = server.getsockname()[1]
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError):
        connect("127.0.0.1", port, timeout=3)


def test_a_connect_that_hangs_times_out_or_stops_on_ctrl_c(unanswered: tuple[str, int]) -> None:
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        connect(*unanswered, timeout=0.6)
    assert 0.6 <= time.monotonic() - began < 3
    # in a host's work (deployer.fleet), Ctrl-C stops the wait within a slice, not at the timeout
    raised, took = ctrl_c_during(lambda: connect(*unanswered, timeout=30), after=0.5)
    assert isinstance(raised, Interrupted) and took < 1.5


@pytest.fixture
def silent() -> Iterator[tuple[str, int]]:
    """A loopback address that accepts connections and never says a word: a hung sshd."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()
    finally:
        server.close()
        for sock in accepted:
            sock.close()


def _log_in(spec: ConnectSpec, timeout: float) -> object:
    return open_link(spec, host="hung01", timeout=timeout, trust_name="hung01")


def _fetch_key(spec: ConnectSpec, timeout: float) -> object:  # deploy inventory trust
    return fetch_key(spec, host="hung01", timeout=timeout)


@pytest.mark.parametrize("dial", [_log_in, _fetch_key])
def test_a_handshake_that_hangs_times_out_or_stops_on_ctrl_c(
        silent: tuple[str, int], tmp_path: Path, dial: Callable[[ConnectSpec, float], object]) -> None:
    spec = ConnectSpec(silent[0], silent[1], user="u", known_hosts=str(tmp_path / "known_hosts"))
    began = time.monotonic()
    with pytest.raises(ConnectError, match=r"SSH handshake with .* failed: no answer within 0\.6s"):
        dial(spec, 0.6)
    assert 0.6 <= time.monotonic() - began < 5
    # in a host's work, Ctrl-C stops the handshake within a slice, not when its timeout runs out
    raised, took = ctrl_c_during(lambda: dial(spec, 30), after=0.5)
    assert isinstance(raised, Interrupted) and took < 1.5


class _Sshd:
    """A loopback SSH server that answers as INTERFACE, with a client key and a known_hosts file
    (in DIRECTORY) that a ConnectSpec from `spec` uses."""

    def __init__(self, interface: paramiko.ServerInterface, directory: Path) -> None:
        self._interface, self._dir = interface, directory
        self.host_key = paramiko.ECDSAKey.generate()
        paramiko.ECDSAKey.generate().write_private_key_file(str(directory / "id_ecdsa"))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self._listener.getsockname()
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn = self._listener.accept()[0]
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            self.transports.append(t)
            t.start_server(server=self._interface)

    def spec(self, port: int | None = None, jump: ConnectSpec | None = None) -> ConnectSpec:
        """A spec for this server (at PORT when a relay stands in front of it), its key trusted."""
        port = port or self.address[1]
        with open(self._dir / "known_hosts", "a") as f:
            f.write(f"[127.0.0.1]:{port} {self.host_key.get_name()} {self.host_key.get_base64()}\n")
        return ConnectSpec("127.0.0.1", port, user="u", key_files=(str(self._dir / "id_ecdsa"),),
                           known_hosts=str(self._dir / "known_hosts"), identities_only=True, jump=jump)

    def close(self) -> None:
        release = getattr(self._interface, "release", None)  # a hung answer: let its thread go
        if release is not None:
            release.set()
        self._listener.close()
        for t in self.transports:
            t.close()


class _Accepting(paramiko.ServerInterface):
    """An sshd that lets anyone in with a key."""

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL


class _Hung(_Accepting):
    """An sshd that never answers one kind of request (`hang`, until the test ends)."""

    def __init__(self) -> None:
        self.asked, self.release = threading.Event(), threading.Event()

    def hang(self, answer: int) -> int:
        self.asked.set()
        self.release.wait(30)
        return answer


class _HungLogin(_Hung):
    """Its login never answers: it reads authorized_keys from a home on a hung NFS server."""

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return self.hang(paramiko.AUTH_FAILED)


class _HungForward(_Hung):
    """A jump host whose connect to the target never ends (the target is down, its SYNs dropped)."""

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int],
                                           destination: tuple[str, int]) -> int:
        return self.hang(paramiko.OPEN_FAILED_CONNECT_FAILED)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Callable[[paramiko.ServerInterface], _Sshd]]:
    """Start loopback SSH servers answering as the interface given; all stopped after the test."""
    started: list[_Sshd] = []

    def start(interface: paramiko.ServerInterface) -> _Sshd:
        started.append(_Sshd(interface, tmp_path))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.mark.parametrize(("hung", "jumped", "timed_out"), [
    (_HungLogin, False, r"did not answer the login within 0\.6s"),
    (_HungForward, True, r"jump host u@127\.0\.0\.1:\d+ could not open a connection to 127\.0\.0\.1:9"),
])
def test_an_answer_that_never_comes_times_out_or_stops_on_ctrl_c(
        sshd: Callable[[paramiko.ServerInterface], _Sshd], hung: type[_Hung], jumped: bool, timed_out: str) -> None:
    server = hung()
    spec = sshd(server).spec()
    if jumped:  # the target behind it is never reached
        spec = ConnectSpec("127.0.0.1", 9, user="u", jump=spec, known_hosts=spec.known_hosts)
    with pytest.raises(ConnectError, match=timed_out):
        open_link(spec, host="gpu07", timeout=0.6, trust_name="gpu07")
    assert server.asked.is_set()
    server.asked.clear()
    # in a host's work, Ctrl-C stops the wait for the answer within a slice
    raised, took = ctrl_c_during(lambda: open_link(spec, host="gpu07", timeout=30, trust_name="gpu07"), after=1.5)
    assert server.asked.is_set(), "Ctrl-C came before the request was made"
    assert isinstance(raised, Interrupted) and took < 1.5


class _Cable:
    """A TCP relay between the client and a loopback SSH server: `cut_upstream` drops what the client
    sends from then on (the link died one way); `unplug` closes the client's end (what the kernel
    does to a socket whose data went unacknowledged past TCP_USER_TIMEOUT)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self._listener.getsockname()
        self._upstream, self.cut_upstream = upstream, threading.Event()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        client = self._listener.accept()[0]
        server = socket.create_connection(self._upstream)
        self._socks = [client, server]
        threading.Thread(target=self._pump, args=(client, server, self.cut_upstream), daemon=True).start()
        self._pump(server, client, threading.Event())

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, dropping: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if not dropping.is_set():
                    dst.sendall(data)
        except OSError:
            pass

    def unplug(self) -> None:
        self._socks[0].shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        for s in self._socks:
            s.close()


def test_a_link_that_dies_in_the_servers_rekey_is_seen_dead_at_once(
        sshd: Callable[[paramiko.ServerInterface], _Sshd]) -> None:
    """sshd re-keys on its own (RekeyLimit). When the link dies right after its KEXINIT, a keepalive
    falling due while the exchange waits must not stall paramiko's reader: it sat out its 30 s
    clear-to-send timeout before it saw the dead socket."""
    server = sshd(_Accepting())
    cable = _Cable(server.address)
    link = open_link(server.spec(port=cable.address[1]), host="gpu01", timeout=5, trust_name="gpu01")
    try:
        keep_alive(link.transport, interval=0.2)
        cable.cut_upstream.set()

        def rekey() -> None:
            with contextlib.suppress(paramiko.SSHException, EOFError):  # it cannot end: the link is cut
                server.transports[0].renegotiate_keys()

        threading.Thread(target=rekey, daemon=True).start()
        deadline = time.monotonic() + 5
        while link.transport.clear_to_send.is_set():  # the server's KEXINIT reached us; our answer is lost
            assert time.monotonic() < deadline, "the server's re-exchange never started"
            time.sleep(0.01)
        time.sleep(1.0)  # keepalives fall due (every 0.2 s) while the exchange waits
        cable.unplug()
        deadline = time.monotonic() + 3
        while link.transport.is_active():
            assert time.monotonic() < deadline, "paramiko's reader did not see the dead socket"
            time.sleep(0.05)
    finally:
        link.close()
        cable.close()



def test_a_refused_connect_asks_about_sshd_no_route_about_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: refused
    with pytest.raises(ConnectError) as err:
        dial.tcp_connect(ConnectSpec("127.0.0.1", port), host="gpu01", timeout=2)
    assert "Connection refused" in str(err.value) and "sshd running" in (err.value.hint or "")
    assert isinstance(err.value.__cause__, ConnectionRefusedError) and err.value.unreachable

    def no_route(address: str, port: int, timeout: float) -> socket.socket:
        raise OSError(errno.EHOSTUNREACH, "No route to host")

    monkeypatch.setattr(dial, "connect", no_route)
    with pytest.raises(ConnectError) as err:
        dial.tcp_connect(ConnectSpec("10.0.0.9", 22), host="gpu01", timeout=2)
    assert "No route to host" in str(err.value) and "host up and on the network" in (err.value.hint or "")
    assert err.value.unreachable


@pytest.mark.parametrize("raised, unreachable", [
    (OSError(errno.ENETUNREACH, "Network is unreachable"), True),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), True),
    (TimeoutError("timed out"), True),  # no SYN of several answered: off or filtered
    (ConnectionResetError(errno.ECONNRESET, "reset"), False),
])
def test_a_failed_connect_says_whether_the_host_is_unreachable(monkeypatch: pytest.MonkeyPatch,
                                                                raised: OSError, unreachable: bool) -> None:
    def fail(address: str, port: int, timeout: float) -> socket.socket:
        raise raised

    monkeypatch.setattr(dial, "connect", fail)
    with pytest.raises(ConnectError) as err:
        dial.tcp_connect(ConnectSpec("gpu01.example", 22), host="gpu01", timeout=2)
    assert err.value.unreachable is unreachable and err.value.__cause__ is raised


@pytest.mark.parametrize("raised", [
    paramiko.ChannelException(2, "Connect failed"),  # the jump host's own connect to the target failed
    paramiko.SSHException("Timeout opening channel."),  # no answer from the target within the timeout
])
def test_a_jump_host_that_cannot_reach_the_target_says_it_is_unreachable(raised: Exception) -> None:
    class Jump:
        def open_channel(self, *args: object, **kwargs: object) -> paramiko.Channel:
            raise raised

    with pytest.raises(ConnectError) as err:
        dial.jump_channel(Jump(), ConnectSpec("10.0.0.9", 22), host="gpu01",  # type: ignore[arg-type]
                          via=ConnectSpec("bastion", 22), timeout=2)
    assert "jump host bastion could not open a connection to 10.0.0.9:22" in str(err.value)
    assert err.value.unreachable and err.value.__cause__ is raised
