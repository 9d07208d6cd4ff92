"""Ship through a site relay: each blob crosses the slow link once per site, then the site's LAN.

Hosts that share `deploy_relay: HOST` form a site. The workstation stages each blob a site's
hosts lack once, on the relay (the resumable, sha256-checked receive every host uses). Each
host gets it from the relay while it is still arriving: the relay follows its copy as it grows
and pipes it, with its own ssh and a key made for this ship only, into a forced command on the
host that can do nothing but append to that blob's .partial in the staging dir and check its
sha256 (deployer.commands.relay). The host then loads and verifies as after a direct send.

Trust: no agent forwarding, no workstation key on the relay. The ship's key is authorized on
each host for the forced receive only (`restrict`, `from=` the relay's LAN address, an
expiry time) and removed when the host is done; the relay holds it, with the hosts' keys
from the workstation's known_hosts (strict checking), in a per-ship dir removed at the end.
Root on the relay can at worst write blobs into a host's staging dir, which are then checked
by digest; it can never run a command on a host.

Faults: a relay that cannot be set up, dies, or cannot reach a host makes that host fall back
to direct sends from the workstation with a warning (`deploy_relay_fallback: direct`, the
default), resuming the blob where the relay left it; with `fail`, the host fails instead.
"""
from __future__ import annotations

import getpass
import logging
import queue
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deployer.commands import relay as rc
from deployer.commands import ship as cmd
from deployer.errors import DeployError, TransferError
from deployer.inventory.host import RELAY_FALLBACKS, Host
from deployer.local.cache import Blob
from deployer.ship import steps
from deployer.ship.conn import HostConn
from deployer.ship.steps import STALL_MARGIN_S
from deployer.ship.tarball import Counter, stage_blob
from deployer.transport import hostkeys
from deployer.transport.config import load_ssh_config, resolve
from deployer.transport.result import Result
from deployer.transport.retry import budget_seconds, is_transient

log = logging.getLogger(__name__)

KEY_LIFETIME = timedelta(days=1)  # the authorized_keys line's expiry-time, should the ship die before removing it


class RelayError(TransferError):
    """The relay could not serve a host (setup, the relay's own link, or the LAN hop)."""

    def __init__(self, host: str, relay: str, why: str) -> None:
        super().__init__(host, f"relay {relay}: {why}" if host != relay else why,
                         hint=f"check that {relay} is up and reaches {host} over SSH; "
                              "deploy_relay_fallback: direct sends from the workstation instead")
        self.relay = relay


def lan_address(host: Host) -> tuple[str, int, str]:
    """(address, port, user) by which the site's relay reaches HOST: deploy_internal_ip, else its SSH address."""
    spec = resolve(host, load_ssh_config())
    return host.internal_ip or spec.address, spec.port, spec.user or getpass.getuser()


def _new_key() -> tuple[bytes, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def _known_hosts_lines(hosts: Sequence[Host], lan: Mapping[str, tuple[str, int, str]]) -> list[str]:
    """The hosts' keys as the workstation trusts them, named as the relay will reach them (LAN)."""
    lines: list[str] = []
    config = load_ssh_config()
    for host in hosts:
        spec = resolve(host, config)
        address, port, _ = lan[host.name]
        for entry in hostkeys.keys_for(hostkeys.read(spec.known_hosts), spec.known_host_names()):
            if entry.marker is None:
                lines.append(rc.known_hosts_line(address, port, entry.key.get_name(), entry.key.get_base64()))
    return lines


class Site:
    """One relay and the hosts it serves in this ship: set up once, each blob sent to it once."""

    def __init__(self, relay: Host, hosts: Sequence[Host], *, timeout: float = 10.0,
                 conn: HostConn | None = None) -> None:
        self.relay, self.hosts = relay, tuple(hosts)
        self.name = relay.name
        self.ship_id = secrets.token_hex(8)
        self.conn = conn or HostConn(relay, timeout=timeout)
        self.blobs_dir = rc.relay_staging(relay.staging_dir)
        self.ship_dir = rc.ship_dir(relay.staging_dir, self.ship_id)
        self.stall_s = int(budget_seconds()) + STALL_MARGIN_S  # the relay's own send may retry that long
        self._lock = threading.Lock()
        self._setup: Future[dict[str, str]] | None = None
        self._sends: dict[str, tuple[threading.Event, Future[bool]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"relay-{relay.name}")
        self._public = ""
        self.staged: set[str] = set()  # blob paths this ship put on the relay (cleaned after success)
        self._listed: dict[str, int | None] = {}  # the relay's blobs at setup: resumes without a stat each
        self._broken: RelayError | None = None
        self._lan: dict[str, tuple[str, int, str]] = {}  # host -> (address, port, user) on the LAN, at setup

    # -- the relay ----------------------------------------------------------------------------

    def ready(self) -> dict[str, str]:
        """Set the relay up once (key, known_hosts); the relay's LAN source address per host address."""
        with self._lock:
            if self._setup is None:
                self._setup = Future()
                try:
                    self._setup.set_result(self._do_setup())
                except BaseException as exc:  # noqa: BLE001 - every host waiting on it gets the error
                    self._setup.set_exception(exc)
        return self._setup.result()

    def _do_setup(self) -> dict[str, str]:
        private, self._public = _new_key()
        self._lan = {h.name: lan_address(h) for h in self.hosts}
        addresses = [self._lan[h.name][0] for h in self.hosts]
        argv = rc.setup_argv(self.ship_dir, _known_hosts_lines(self.hosts, self._lan), self.blobs_dir, addresses)
        try:
            self.conn.connect()
            res = self.conn.run(argv, what="setting up the relay", input=private, check=False, timeout=60)
        except DeployError as exc:
            raise RelayError(self.name, self.name, f"cannot set up {self.name} as the site's relay: {_why(exc)}") from exc
        if not res.ok:
            raise RelayError(self.name, self.name, f"cannot set up {self.name} as the site's relay: "
                             f"{res.stderr_tail() or f'exit {res.exited}'}")
        self._listed = cmd.parse_stat("\n".join(ln for ln in res.stdout.splitlines() if not ln.startswith("src ")))
        return rc.parse_sources(res.stdout)

    def ensure(self, blob: Blob, counter: Counter, note: Callable[[str], None]) -> None:
        """Start sending BLOB to the relay unless this ship already did (one send per site)."""
        with self._lock:
            if blob.digest in self._sends:
                return
            started = threading.Event()
            self._sends[blob.digest] = (started, self._pool.submit(self._send, blob, counter, note, started))

    def _send(self, blob: Blob, counter: Counter, note: Callable[[str], None], started: threading.Event) -> bool:
        try:
            self.ready()
            if self._broken is not None:  # a relay that failed one blob gets no more: its hosts went direct
                raise self._broken
        finally:
            started.set()
        self.staged.add(cmd.blob_path(self.blobs_dir, blob.digest, blob.codec))
        log.debug("%s: relay: sending blob %s (%d bytes)", self.name, blob.digest[7:19], blob.size)
        try:
            return stage_blob(self.conn, self.blobs_dir, blob, Counter(on_sent=lambda n: counter.add(n, report=False)),
                              note, self._listed)
        except DeployError as exc:
            self._broken = RelayError(self.name, self.name,
                                      f"sending blob {blob.digest[7:19]} to relay {self.name} failed: {_why(exc)}")
            raise self._broken from exc

    def wait_started(self, blob: Blob) -> None:
        """Until the relay's send of BLOB has begun; its error if it already failed."""
        started, done = self._sends[blob.digest]
        while not started.wait(1.0):
            pass
        if done.done() and done.exception() is not None:
            raise done.exception()  # type: ignore[misc]

    def failed(self, blob: Blob) -> BaseException | None:
        _, done = self._sends[blob.digest]
        return done.exception() if done.done() else None

    # -- the hosts ----------------------------------------------------------------------------

    def authorize(self, conn: HostConn, host: Host) -> None:
        """Let this ship's key run the forced receive on HOST (from the relay only, for a day at most)."""
        sources = self.ready()
        address, _, _ = self._lan[host.name]
        if not rc.plain_path(host.staging_dir):
            raise RelayError(host.name, self.name, f"staging dir {host.staging_dir!r} is not a plain absolute path")
        line = rc.key_line(self._public, self.ship_id, host.staging_dir, source=sources.get(address),
                           expires=datetime.now() + KEY_LIFETIME)
        step = steps.authorize(self.name, host.staging_dir, host.authorized_keys, line)
        res = conn.run(step.argv, what=step.label, check=False, timeout=60)
        if not res.ok:
            raise RelayError(host.name, self.name, f"cannot authorize its key: {res.stderr_tail() or res.exited}")

    def revoke(self, conn: HostConn, host: Host) -> None:
        """Remove this ship's key from HOST (best effort: the line expires anyway)."""
        try:
            step = steps.revoke(self.name, host.authorized_keys, self.ship_id)
            conn.run(step.argv, what=step.label, check=False, timeout=60)
        except DeployError as exc:
            log.warning("%s: could not remove relay %s's key (it expires in a day): %s", host.name, self.name, exc)

    def forward(self, host: Host, blob: Blob, offset: int, counter: Counter) -> Result:
        """Have the relay pass BLOB from OFFSET on to HOST over the LAN; the host's receive answer."""
        self.wait_started(blob)
        address, port, user = self._lan[host.name]
        # the relay itself, when a target, takes its blobs without ssh
        here = rc.receiver_path(host.staging_dir) if host.name == self.name else ""
        step = steps.forward(self.name, self.relay.staging_dir, blob.digest, blob.codec, blob.size, offset,
                             self.ship_dir, rc.ssh_dest(user, address), port, self.stall_s,
                             [h.name for h in self.hosts].index(host.name), here)
        session = self.conn.session()
        log.debug("%s: relay %s passes blob %s on from byte %d", host.name, self.name, blob.digest[7:19], offset)
        try:
            res = session.run(step.argv, check=False, timeout=None)
        except Exception as exc:
            if is_transient(exc):
                self.conn.drop(session)
                raise TransferError(host.name, f"relay {self.name}: the link to it dropped", transient=True) from exc
            raise
        got = cmd.parse_receive(res.stdout)
        log.debug("%s: relay %s passed blob %s on: %s", host.name, self.name, blob.digest[7:19], got.status or res.exited)
        if got.status in ("ok", "short") and got.detail:
            counter.add_lan((blob.size if got.status == "ok" else int(got.detail)) - offset)
        if got.status:
            return res
        failed = self.failed(blob)
        if failed is not None:
            raise failed
        why = res.stderr_tail() or f"exit {res.exited}"
        refused = any(s in res.stderr for s in ("Permission denied", "Host key verification failed", "refused:"))
        raise RelayError(host.name, self.name, f"passing blob {blob.digest[7:19]} on failed: {why}") if refused \
            else TransferError(host.name, f"relay {self.name}: passing blob {blob.digest[7:19]} on failed: {why}",
                               transient=True)

    def close(self, all_ok: bool) -> None:
        """Remove the ship's key dir from the relay, and the blobs too when every host succeeded."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._setup is not None:
            try:
                self.conn.run(rc.cleanup_argv(self.ship_dir, sorted(self.staged) if all_ok else ()),
                              what="cleaning the relay", check=False, timeout=120)
            except DeployError as exc:
                log.warning("%s: could not clean the relay's staging: %s", self.name, exc)
        self.conn.close()


def _why(exc: DeployError) -> str:
    return str(getattr(exc, "reason", exc.message)).splitlines()[0]


class Relayed:
    """One host's sends through its site's relay, falling back to direct sends per its rule."""

    def __init__(self, site: Site, conn: HostConn, host: Host, counter: Counter,
                 note: Callable[[str], None]) -> None:
        self.site, self.conn, self.host, self.counter, self.note = site, conn, host, counter, note
        self.direct = False
        self.authorized = False

    def open(self) -> None:
        try:
            self.site.authorize(self.conn, self.host)
            self.authorized = True
            self.counter.relay = self.site.name
        except DeployError as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: DeployError) -> None:
        if self.host.relay_fallback == "fail":
            raise exc if isinstance(exc, RelayError) else RelayError(self.host.name, self.site.name, _why(exc)) \
                from exc
        self.note(f"relay {self.site.name} cannot serve this host ({str(exc).splitlines()[0]}); "
                  "sending directly from the workstation")
        log.warning("%s: relay %s failed, sending directly: %s", self.host.name, self.site.name, exc)
        self.direct = True

    def prefetch(self, blobs: Iterator[Blob]) -> Iterator[Blob]:
        """BLOBS, each handed to the relay as soon as it is ready, not when this host gets to it:
        the uplink stays busy while the relay passes earlier blobs on."""
        if self.direct:
            yield from blobs
            return
        ready: queue.Queue[tuple[Blob | None, BaseException | None]] = queue.Queue()

        def feed() -> None:
            try:
                for blob in blobs:
                    self.site.ensure(blob, self.counter, self.note)
                    ready.put((blob, None))
                ready.put((None, None))
            except BaseException as exc:  # noqa: BLE001 - handed to the host's thread below
                ready.put((None, exc))

        threading.Thread(target=feed, name=f"relay-feed-{self.host.name}", daemon=True).start()
        while True:
            blob, error = ready.get()
            if error is not None:
                raise error
            if blob is None:
                return
            yield blob

    def stage(self, staging: str, blob: Blob, listed: Mapping[str, int | None] | None) -> bool:
        """stage_blob, the bytes coming from the relay; True when the host had the blob already."""
        if not self.direct:
            self.site.ensure(blob, self.counter, self.note)
            try:
                return stage_blob(self.conn, staging, blob, self.counter, self.note, listed,
                                  via=lambda b, offset: self.site.forward(self.host, b, offset, self.counter))
            except DeployError as exc:
                self._fall_back(exc)
                listed = None  # the relay may have left part of the blob: send_tail resumes after it
        return stage_blob(self.conn, staging, blob, self.counter, self.note, listed)

    def close(self) -> None:
        """Remove the ship's key from the host (once)."""
        if self.authorized:
            self.authorized = False
            self.site.revoke(self.conn, self.host)


def sites_of(hosts: Sequence[Host], relays: Mapping[str, Host]) -> dict[str, str]:
    """host name -> the relay that serves it in this ship: hosts naming one relay (deploy_relay)
    form a site when two or more of them are shipped at once (a lone host goes direct: no faster
    through a relay). InventoryError for a relay the inventory lacks, or a bad fallback rule."""
    from deployer.errors import InventoryError

    groups: dict[str, list[str]] = {}
    for host in hosts:
        relay = host.relay
        if relay is None:
            continue
        if relay not in relays:
            raise InventoryError(f"host {host.name}: deploy_relay names {relay!r}, which is not an inventory host",
                                 key_path="deploy_relay")
        if host.relay_fallback not in RELAY_FALLBACKS:
            raise InventoryError(f"host {host.name}: deploy_relay_fallback is {host.relay_fallback!r}; "
                                 f"use one of: {', '.join(RELAY_FALLBACKS)}", key_path="deploy_relay_fallback")
        groups.setdefault(relay, []).append(host.name)
    return {name: relay for relay, names in groups.items() if len(names) >= 2 for name in names}
