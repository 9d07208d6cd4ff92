"""Open an authenticated paramiko Transport for a ConnectSpec: TCP (or a jump channel), host key, auth.

Every paramiko/socket exception is translated here into ConnectError / HostKeyError / AuthError.
"""
from __future__ import annotations

import errno
import getpass
import logging
import os
import select
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import paramiko

from deployer import interrupt
from deployer.background import in_background
from deployer.errors import AuthError, ConnectError, HostKeyError
from deployer.transport import hostkeys
from deployer.transport.config import DEFAULT_IDENTITIES, ConnectSpec

log = logging.getLogger(__name__)
# paramiko logs a dropped link at ERROR from its own thread; we translate those failures into
# ConnectError/TransferError, so keep its raw lines off the user's terminal (still seen with -v).
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KEEPALIVE_S = 5
CONNECT_SLICE_S = 0.25  # a TCP connect, and the SSH handshake after it, check for Ctrl-C this often
WINDOW_SIZE = 8 * 1024 * 1024
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# Key re-exchange is left to the server. paramiko starts one itself after 512 MiB in either
# direction, and while it waits for the server's answer its reader thread can block replying to a
# channel close that crossed the request (paramiko#822) until its 30 s clear-to-send timeout drops
# the connection: first ships of ~1 GB stalled 30 s, then resumed. A re-exchange the server starts
# has no such race (after its KEXINIT it sends nothing else until the new keys). OpenSSH's sshd
# re-keys by itself (RekeyLimit; by default after 2^32 blocks of a 128-bit cipher, RFC 4344 3.2,
# i.e. 64 GiB, and 1 GiB for chacha20), so ours starts only at twice that, for servers that never do.
REKEY_BYTES = 2 ** 37


def dead_link_seconds() -> float:
    """How long unacknowledged traffic may sit before a link is declared dead (DEPLOYER_DEAD_LINK_S)."""
    try:
        return max(5.0, float(os.environ.get("DEPLOYER_DEAD_LINK_S", "30")))
    except ValueError:
        return 30.0


@dataclass
class Link:
    """An open transport plus the jump transports it rides on (outermost first)."""

    transport: paramiko.Transport
    jumps: list[paramiko.Transport] = field(default_factory=list)
    server_key: paramiko.PKey | None = None

    def close(self) -> None:
        close_transports([*self.jumps, self.transport])


def close_transports(chain: Sequence[paramiko.Transport]) -> None:
    """Close a chain of transports given outermost first (jump hosts, then the host): innermost first."""
    for t in reversed(chain):
        try:
            t.close()
        except Exception as exc:  # noqa: BLE001 - closing a dead transport may raise anything
            log.debug("closing transport: %s", exc)


def tune_socket(sock: socket.socket) -> None:
    """TCP keepalive + TCP_USER_TIMEOUT: a vanished peer kills the socket instead of hanging forever."""
    dead = dead_link_seconds()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt, val in (("TCP_KEEPIDLE", KEEPALIVE_S), ("TCP_KEEPINTVL", KEEPALIVE_S),
                     ("TCP_KEEPCNT", max(1, int(dead // KEEPALIVE_S))), ("TCP_USER_TIMEOUT", int(dead * 1000))):
        if hasattr(socket, opt):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)
            except OSError:
                pass


class QuickAckSocket:
    """A TCP socket that acknowledges every segment it receives at once (Linux TCP_QUICKACK, which
    the kernel drops again by itself, so it is set after each read).

    sshd sets TCP_NODELAY only for sessions with a terminal: it holds a small packet while an
    earlier one is unacknowledged, and our kernel delays its ACK (40 ms) when it has nothing to
    send. Right after login that stalled the first command on every connection by 40 ms: sshd's
    host-key announcement arrived after our channel open had gone, so its answer waited for the
    delayed ACK. Everything else is the socket's own (paramiko sees a socket)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass
        return data

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def open_link(spec: ConnectSpec, *, host: str, timeout: float, trust_name: str,
              auth: bool = True) -> Link:
    """Connect, verify the host key strictly, authenticate. `host` names the inventory host in errors."""
    sock, jumps = reach(spec, host=host, timeout=timeout, trust_name=trust_name)
    try:
        transport = _handshake(sock, spec, host=host, timeout=timeout, trust_name=trust_name)
        link = Link(transport, jumps, transport.get_remote_server_key())
        if auth:
            _authenticate(transport, spec, host=host, timeout=timeout)
            keep_alive(transport)
        return link
    except BaseException:
        close_transports(jumps)
        raise


def reach(spec: ConnectSpec, *, host: str, timeout: float,
          trust_name: str) -> tuple[socket.socket | paramiko.Channel | QuickAckSocket, list[paramiko.Transport]]:
    """A connection to SPEC's sshd, and the transports of the jump hosts it goes through (outermost
    first; each connected, verified and logged in to). Nothing is left open when it fails."""
    if spec.jump is None:
        tcp = tcp_connect(spec, host=host, timeout=timeout)
        return (QuickAckSocket(tcp) if hasattr(socket, "TCP_QUICKACK") else tcp), []
    jump = open_link(spec.jump, host=host, timeout=timeout, trust_name=trust_name)
    try:
        return jump_channel(jump.transport, spec, host=host, via=spec.jump, timeout=timeout), [*jump.jumps, jump.transport]
    except BaseException:
        jump.close()
        raise


def keep_alive(transport: paramiko.Transport, interval: float = KEEPALIVE_S) -> None:
    """paramiko's keepalive, without its hang: a keepalive due while a key re-exchange is under way
    is skipped, not sent.

    paramiko sends its keepalive from its reader thread, and a message sent during a re-exchange
    waits for the exchange to end, which only that thread can bring about: when the link died
    right after the server's KEXINIT (sshd re-keys on its own, RekeyLimit), the reader sat out
    paramiko's 30 s clear-to-send timeout instead of seeing the socket fail (TCP_USER_TIMEOUT),
    and a dead link cost 36 s to notice instead of 6. Only that thread starts a re-exchange (we
    never call renegotiate_keys), so the check cannot race the send."""
    ref = weakref.ref(transport)

    def ping() -> None:
        t = ref()
        if t is not None and t.clear_to_send.is_set():
            t.global_request("keepalive@lag.net", wait=False)

    transport.packetizer.set_keepalive(interval, ping)


_DOWN_HINT = "is the host up and on the network? check address/port in the inventory"


def tcp_connect(spec: ConnectSpec, *, host: str, timeout: float) -> socket.socket:
    """The TCP connection to SPEC's sshd; its failures translated (ConnectError.unreachable: the
    host refused it, has no route, no name or gave no answer at all within TIMEOUT, which the
    retries of a first connection give up on sooner; a reset is not)."""
    target = f"{spec.address}:{spec.port}"
    try:
        sock = connect(spec.address, spec.port, timeout)
    except TimeoutError as exc:
        # every SYN went unanswered: a host that is off or filtered, not a lossy link (which loses
        # one, not all); a connection that drops once made still gets the retries' whole budget
        raise ConnectError(host, f"cannot reach {target}: no answer within {timeout:g}s", hint=_DOWN_HINT,
                           unreachable=True) from exc
    except socket.gaierror as exc:
        raise ConnectError(host, f"cannot resolve {spec.address}: {exc.strerror or exc}",
                           hint="check ansible_host in the inventory or HostName in ~/.ssh/config",
                           unreachable=True) from exc
    except OSError as exc:
        no_route = exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        raise ConnectError(host, f"cannot connect to {target}: {exc.strerror or exc}",
                           hint=_DOWN_HINT if no_route else "is sshd running and the port right?",
                           unreachable=no_route or exc.errno == errno.ECONNREFUSED) from exc
    tune_socket(sock)
    return sock


def connect(address: str, port: int, timeout: float) -> socket.socket:
    """socket.create_connection(), waiting in CONNECT_SLICE_S slices so that Ctrl-C stops a
    connect to a host that is down (deployer.interrupt) at once, not when TIMEOUT runs out."""
    deadline = time.monotonic() + timeout
    error: OSError = OSError(f"no address for {address}")
    for family, kind, proto, _, addr in socket.getaddrinfo(address, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(addr)
            while code in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
                interrupt.check()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                if select.select([], [sock], [], min(CONNECT_SLICE_S, left))[1]:
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            sock.settimeout(timeout)
            return sock
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:  # refused, unreachable: the next address, as create_connection does
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error


def jump_channel(jump: paramiko.Transport, spec: ConnectSpec, *, host: str, via: ConnectSpec,
                  timeout: float) -> paramiko.Channel:
    """A direct-tcpip channel through JUMP to the target's sshd. The jump host answers only once
    its own TCP connect to the target ends (minutes, when the target is down), so the open waits on
    a thread of its own, in CONNECT_SLICE_S slices, and Ctrl-C stops the wait at once; the caller
    then closes JUMP, which ends that thread's open too."""
    opening = in_background(f"jump-{host}", jump.open_channel, "direct-tcpip", (spec.address, spec.port),
                            ("127.0.0.1", 0), timeout=timeout)
    try:
        while True:
            try:
                return opening.result(timeout=CONNECT_SLICE_S)
            except FutureTimeout:
                interrupt.check()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ConnectError(
            host, f"jump host {via.label} could not open a connection to {spec.address}:{spec.port}: {exc}",
            hint="is the target reachable from the jump host, and does its sshd allow TCP forwarding?",
            unreachable=True,  # the target (or the jump host before it) is not there: a first connection's cap
        ) from exc


def new_transport(sock: socket.socket | paramiko.Channel | QuickAckSocket) -> paramiko.Transport:
    """A client Transport on `sock` with a wide channel window, re-keying left to the server."""
    transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE)
    transport.packetizer.REKEY_BYTES = REKEY_BYTES  # per link: paramiko's class default stays as it is
    return transport


def negotiate(sock: socket.socket | paramiko.Channel | QuickAckSocket, spec: ConnectSpec, *, host: str,
              timeout: float, key_types: Sequence[str] = ()) -> paramiko.Transport:
    """An SSH transport on SOCK whose handshake is over, the server's key not yet checked. KEY_TYPES
    are asked for first. Failures are ConnectError; the transport is closed on any, Ctrl-C too."""
    try:
        transport = new_transport(sock)
    except (paramiko.SSHException, OSError) as exc:
        sock.close()
        raise ConnectError(host, f"cannot start SSH with {spec.label}: {exc}") from exc
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    transport.auth_timeout = timeout
    opts = transport.get_security_options()
    wanted = [t for t in _expand_rsa(list(key_types)) if t in opts.key_types]
    if wanted:
        opts.key_types = wanted + [t for t in opts.key_types if t not in wanted]
    # AES-GCM needs no separate MAC pass: measurably faster for bulk sends in paramiko.
    fast = [c for c in FAST_CIPHERS if c in opts.ciphers]
    opts.ciphers = fast + [c for c in opts.ciphers if c not in fast]
    try:
        _start_client(transport, timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        raise ConnectError(host, f"SSH handshake with {spec.label} failed: {exc or type(exc).__name__}",
                           hint="is an SSH server listening there? retry; check the network") from exc
    except BaseException:  # Ctrl-C (deployer.interrupt)
        transport.close()
        raise
    return transport


def _handshake(sock: socket.socket | paramiko.Channel | QuickAckSocket, spec: ConnectSpec, *, host: str,
               timeout: float, trust_name: str) -> paramiko.Transport:
    names = spec.known_host_names()
    # Ask for a key type known_hosts has, so a host with several keys is checked against the right one.
    known_types = hostkeys.preferred_types(hostkeys.read(spec.known_hosts), names)
    transport = negotiate(sock, spec, host=host, timeout=timeout, key_types=known_types)
    key = transport.get_remote_server_key()
    try:
        hostkeys.verify(host, names, key, spec.known_hosts, trust_name=trust_name)
    except HostKeyError:
        transport.close()
        raise
    return transport


def _start_client(transport: paramiko.Transport, timeout: float) -> None:
    """transport.start_client(timeout=TIMEOUT), but stopped by Ctrl-C (_answered): a host that
    accepted the connection and does not answer (a hung sshd, a firewall that swallows the traffic)."""
    done = threading.Event()
    transport.start_client(event=done)  # paramiko's own thread negotiates; DONE is set when it is over
    if not _answered(done, transport, timeout):
        raise paramiko.SSHException(f"no answer within {timeout:g}s")
    if not transport.is_active():
        raise transport.get_exception() or paramiko.SSHException("Negotiation failed.")


def _auth_publickey(transport: paramiko.Transport, user: str, key: paramiko.PKey, timeout: float) -> list[str]:
    """transport.auth_publickey(USER, KEY), but stopped by Ctrl-C (_answered): a login the host does
    not answer (its sshd reading a home directory on a hung NFS server); TimeoutError after TIMEOUT.
    The auth types still wanted, as paramiko gives them (or its exception)."""
    done = threading.Event()
    transport.auth_publickey(user, key, done)  # paramiko's thread sends it; DONE is set on the answer
    if not _answered(done, transport, timeout):
        raise TimeoutError(f"no answer within {timeout:g}s")
    return transport.auth_handler.wait_for_response(done)  # answered: raises or returns at once


def _answered(done: threading.Event, transport: paramiko.Transport, timeout: float) -> bool:
    """Wait for DONE, which paramiko's thread sets when the host answered, in CONNECT_SLICE_S
    slices, so that Ctrl-C (deployer.interrupt) stops the wait at once, not when TIMEOUT runs out.
    False when TIMEOUT ran out; True as well when the transport died (paramiko then says why)."""
    deadline = time.monotonic() + timeout
    while not done.wait(min(CONNECT_SLICE_S, max(0.0, deadline - time.monotonic()))):
        interrupt.check()
        if not transport.is_active():
            return True
        if time.monotonic() >= deadline:
            return False
    return True


def _expand_rsa(types: list[str]) -> list[str]:
    out: list[str] = []
    for t in types:
        out.extend(["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if t == "ssh-rsa" else [t])
    return out


def _load_key(path: str, *, host: str, explicit: bool) -> paramiko.PKey | None:
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        log.debug("%s: key %s is passphrase-protected; relying on the ssh-agent", host, path)
        return None
    except FileNotFoundError:
        if explicit:
            raise AuthError(host, f"private key file {path} does not exist",
                            hint="fix ansible_ssh_private_key_file (or IdentityFile in ~/.ssh/config)") from None
        return None
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise AuthError(host, f"cannot load private key {path}: {exc}") from exc


def _candidate_keys(spec: ConnectSpec, host: str) -> list[tuple[str, paramiko.PKey]]:
    keys: list[tuple[str, paramiko.PKey]] = []
    for path in spec.key_files:
        key = _load_key(path, host=host, explicit=path == spec.key_files[0])
        if key is not None:
            keys.append((path, key))
    try:
        agent_keys = paramiko.Agent().get_keys() if os.environ.get("SSH_AUTH_SOCK") else ()
    except (paramiko.SSHException, OSError):
        agent_keys = ()
    keys.extend((f"agent:{k.get_name()}", k) for k in agent_keys)
    if not spec.key_files and not spec.identities_only:
        for path in DEFAULT_IDENTITIES:
            key = _load_key(os.path.expanduser(path), host=host, explicit=False)
            if key is not None:
                keys.append((path, key))
    return keys


def _authenticate(transport: paramiko.Transport, spec: ConnectSpec, *, host: str, timeout: float) -> None:
    user = spec.user or getpass.getuser()
    keys = _candidate_keys(spec, host)
    if not keys:
        transport.close()
        raise AuthError(host, f"no SSH key to log in to {user}@{spec.address} with (no key file, no ssh-agent keys)",
                        hint="set ansible_ssh_private_key_file, or load a key into ssh-agent (ssh-add)")
    tried: list[str] = []
    for label, key in keys:
        tried.append(label)
        try:
            remaining = _auth_publickey(transport, user, key, timeout)
        except paramiko.BadAuthenticationType as exc:
            transport.close()
            raise AuthError(host, f"{user}@{spec.address} does not accept public keys (allows: {', '.join(exc.allowed_types)})",
                            hint="deployer uses key or agent authentication only; enable PubkeyAuthentication") from exc
        except paramiko.AuthenticationException:
            continue
        except TimeoutError as exc:
            transport.close()
            raise ConnectError(host, f"{spec.label} did not answer the login within {timeout:g}s",
                               hint="its sshd may be stuck (a home directory on a hung network filesystem?); "
                                    "retry, or log in by hand to see") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise ConnectError(host, f"connection lost while authenticating to {spec.label}: {exc}") from exc
        except BaseException:  # Ctrl-C (deployer.interrupt)
            transport.close()
            raise
        if not remaining:
            return
        transport.close()
        raise AuthError(host, f"{user}@{spec.address} wants more authentication ({', '.join(remaining)}) than a key",
                        hint="multi-factor logins are not supported; use a key-only account")
    transport.close()
    raise AuthError(host, f"authentication as {user}@{spec.address} refused (tried {', '.join(tried)})",
                    hint="check ansible_user and that the public key is in the host's authorized_keys")
