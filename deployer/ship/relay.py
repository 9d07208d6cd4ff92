"""Ship through a site relay: each blob crosses the slow link once per site, then the site's LAN.

Hosts that share `deploy_relay: HOST` form a site. The workstation stages each blob a site's
hosts lack once, on the relay (the resumable, sha256-checked receive every host uses; a blob
still being compressed goes as it is written, as to a host, and is named once it matches). Each
host gets it from the relay while it is still arriving: the relay follows its copy as it grows
and pipes it, with its own ssh and a key made for this ship only, into a forced command on the
host that can do nothing but append to that blob's .partial in the staging dir and check its
sha256 (deployer.commands.relay). The host then loads and verifies as after a direct send.

A site larger than the fan-out (deploy_relay_fanout, deployer.ship.sites) is a tree: a host
that feeds others is a node too. Its copy of each blob grows from its parent's, through the same
forced receive installed in its relay dir, while it pipes that copy on to its children and into
its own staging.

Trust: no agent forwarding, no workstation key on any node. Each node gets a key of its own
for this ship, authorized on each of its children for the forced receive only (`restrict`,
`from=` the node's LAN address, an expiry time) and removed when the child is done (a node's
line: when the ship ends); the node holds it, with its children's keys from the workstation's
known_hosts (strict checking), in a per-ship dir removed at the end. Root on a node can at worst
write blobs into its children's staging dirs, which are then checked by digest; it can never
run a command on a host.

Faults: a node that cannot be set up, dies, or cannot reach a child makes that child (and, as
its copy stops growing, its subtree) fall back to direct sends from the workstation with a
warning (`deploy_relay_fallback: direct`, the default), resuming the blob where the tree left
it; with `fail`, those hosts fail instead. A node whose link drops is reconnected to as a host
is, but one that then refuses, has no route or does not answer is given up after RELAY_DOWN's
15 s, not the whole retry budget (the hosts' own links keep theirs). A host the workstation
itself cannot reach fails as it would without a relay: a direct send would need that same
connection.
"""
from __future__ import annotations

import getpass
import logging
import queue
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deployer import interrupt
from deployer.commands import relay as rc
from deployer.commands import ship as cmd
from deployer.errors import AuthError, ConnectError, DeployError, HostKeyError, Interrupted, TransferError
from deployer.inventory.host import Host
from deployer.local.cache import Blob
from deployer.local.export import Exporter, Growing
from deployer.ship import steps
from deployer.ship.conn import HostConn
from deployer.ship.sites import Hop, fanout_of, hops_of, relay_tree, sites_of
from deployer.ship.steps import STALL_MARGIN_S
from deployer.ship.tarball import Counter, Forward, held_bytes, stage_blob, staged_sizes, stream_blob
from deployer.transport import hostkeys
from deployer.transport.config import load_ssh_config, resolve
from deployer.transport.result import Result
from deployer.transport.retry import UNREACHABLE_BUDGET_S, GiveUp, budget_seconds, is_transient

log = logging.getLogger(__name__)

__all__ = ["Hop", "RelayError", "Relayed", "Site", "hops_of", "sites_of"]

KEY_LIFETIME = timedelta(days=1)  # the authorized_keys line's expiry-time, should the ship die before removing it
# A node that refuses, has no route or does not answer is given up this soon, not after the whole
# retry budget: its hosts' fallback (direct sends) costs uplink bytes, not the ship
RELAY_DOWN = GiveUp(UNREACHABLE_BUDGET_S)


class RelayError(TransferError):
    """The relay could not serve a host (setup, the relay's own link, or the LAN hop)."""

    def __init__(self, host: str, relay: str, why: str) -> None:
        reach = f"reaches {host} over SSH" if host != relay else "answers over SSH"
        super().__init__(host, f"relay {relay}: {why}" if host != relay else why,
                         hint=f"check that {relay} is up and {reach}; "
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


class Node:
    """One node of a site's tree: it keeps a copy of each blob its subtree lacks, as the blob
    arrives (the site's relay from the workstation, any other node from its parent, through the
    forced receive in its relay dir), and pipes that copy on to its children and its own staging."""

    def __init__(self, site: Site, host: Host, parent: Node | None, children: Sequence[Host],
                 conn: HostConn) -> None:
        self.site, self.host, self.parent, self.children, self.conn = site, host, parent, tuple(children), conn
        self.name = host.name
        self.blobs_dir = rc.relay_staging(host.staging_dir)
        self.ship_dir = rc.ship_dir(host.staging_dir, site.ship_id)
        self._lock = threading.Lock()
        self._setup: Future[None] | None = None
        self._sends: dict[tuple[str, str], tuple[threading.Event, Future[None]]] = {}  # by (diff id, codec)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"relay-{host.name}")
        self._public = ""
        self.staged: set[str] = set()  # blob paths this ship put in the node's copy (cleaned at the end)
        self._listed: dict[str, int | None] = {}  # the node's blobs at setup: resumes without a stat each
        self._broken: RelayError | None = None
        self._lan: dict[str, tuple[str, int, str]] = {}  # child -> (address, port, user) on the LAN
        self._sources: dict[str, str] = {}  # child address -> the node's source address towards it
        self.inbound = False  # its parent's key is authorized here (removed when the ship ends)

    def ready(self) -> None:
        """Set the node up once: its key and its children's host keys; its parent's key for its inbound receive."""
        with self._lock:
            if self._setup is None:
                self._setup = Future()
                try:
                    self._do_setup()
                    self._setup.set_result(None)
                except BaseException as exc:  # noqa: BLE001 - every host waiting on it gets the error
                    self._setup.set_exception(exc)
        self._setup.result()

    def _do_setup(self) -> None:
        what = f"cannot set up {self.name} as the site's relay" if self.parent is None else \
            f"cannot set up {self.name} as a relay of the site's tree"
        if self.parent is not None:
            self.parent.ready()
        private, self._public = _new_key()
        self._lan = {h.name: lan_address(h) for h in self.children}
        addresses = [self._lan[h.name][0] for h in self.children]
        argv = rc.setup_argv(self.ship_dir, _known_hosts_lines(self.children, self._lan), self.blobs_dir, addresses)
        try:
            self.conn.connect()
            res = self.conn.run(argv, what="setting up the relay", input=private, check=False, timeout=60)
            authorized = res
            if res.ok and self.parent is not None:
                # the parent's key may only feed this node's copy, through the forced receive there
                step = steps.authorize(self.parent.name, self.blobs_dir, self.host.authorized_keys,
                                       self.parent.key_line(self.host, self.blobs_dir))
                self.inbound = True
                authorized = self.conn.run(step.argv, what=step.label, check=False, timeout=60)
        except DeployError as exc:
            raise RelayError(self.name, self.name, f"{what}: {_why(exc)}") from exc
        for done in (res, authorized):
            if not done.ok:
                raise RelayError(self.name, self.name, f"{what}: {done.stderr_tail() or f'exit {done.exited}'}")
        self._listed = cmd.parse_stat("\n".join(ln for ln in res.stdout.splitlines() if not ln.startswith("src ")))
        self._sources = rc.parse_sources(res.stdout)

    def _left(self, blobs: Iterable[Blob]) -> set[str]:
        """Which of BLOBS the node held when it was set up (whole, part, or sent as it was compressed)."""
        held = set()
        for b in blobs:
            final = cmd.blob_path(self.blobs_dir, b.digest, b.codec)
            growing = cmd.growing_path(self.blobs_dir, b.diff_id, b.codec, b.level)
            if final in self._listed or cmd.partial_path(self.blobs_dir, b.digest, b.codec) in self._listed:
                held.add(final)
            if growing in self._listed:
                held.add(growing)
        return held

    def key_line(self, child: Host, staging: str) -> str:
        """The authorized_keys line that lets this node's key feed CHILD's receive under STAGING."""
        if not rc.plain_path(staging):
            raise RelayError(child.name, self.name, f"staging dir {staging!r} is not a plain absolute path")
        return rc.key_line(self._public, self.site.ship_id, staging, source=self._sources.get(self._lan[child.name][0]),
                           expires=datetime.now() + KEY_LIFETIME)

    def ensure(self, item: Blob | Growing, counter: Counter, note: Callable[[str], None], exporter: Exporter) -> None:
        """Start filling this node's copy of ITEM's blob (and its parents') unless this ship already did."""
        key = (item.diff_id, item.codec)
        with self._lock:
            if key in self._sends:
                return
            if self.parent is not None:  # the parent never takes a child's lock: no cycle
                self.parent.ensure(item, counter, note, exporter)
            started = threading.Event()
            self._sends[key] = (started, self._pool.submit(self._send, item, exporter, counter, note, started))

    def _send(self, item: Blob | Growing, exporter: Exporter, counter: Counter, note: Callable[[str], None],
              started: threading.Event) -> None:
        with interrupt.work(self.name):  # Ctrl-C stops the node's copy too (else the exit waits for it)
            self._fill(item, exporter, counter, note, started)

    def _fill(self, item: Blob | Growing, exporter: Exporter, counter: Counter, note: Callable[[str], None],
              started: threading.Event) -> None:
        try:
            self.ready()
            if self._broken is not None:  # a node that failed one blob gets no more: its subtree went direct
                raise self._broken
        finally:
            started.set()
        parent = self.parent
        if isinstance(item, Growing) and (parent is not None or item.blob is not None):
            item = exporter.finished(item)  # a node's copy grows from its parent's; a finished blob goes whole
        uplink = Counter(on_sent=lambda n: counter.add(n, report=False))  # the relay's bytes, on a host's account
        try:
            if isinstance(item, Growing):  # still being compressed: the relay's copy grows with it, the forwards follow
                log.debug("%s: relay: receiving layer %s as it is compressed", self.name, item.diff_id[7:19])
                self.staged.add(cmd.growing_path(self.blobs_dir, item.diff_id, item.codec, item.level))
                blob = stream_blob(self.conn, self.blobs_dir, item, exporter, uplink, note, self._listed,
                                   give_up=RELAY_DOWN)
                self.staged.add(cmd.blob_path(self.blobs_dir, blob.digest, blob.codec))
                return
            self.staged.add(cmd.blob_path(self.blobs_dir, item.digest, item.codec))
            log.debug("%s: relay: receiving blob %s (%d bytes) from %s", self.name, item.digest[7:19], item.size,
                      parent.name if parent else "the workstation")
            if parent is None:
                stage_blob(self.conn, self.blobs_dir, item, uplink, note, self._listed,
                           give_up=RELAY_DOWN)
            else:
                stage_blob(self.conn, self.blobs_dir, item, Counter(), note, self._listed,
                           via=lambda b, offset: parent.forward(self.host, b, offset, Counter()),
                           give_up=RELAY_DOWN)
        except Interrupted:
            raise  # Ctrl-C, not a broken node: the part stays for the next ship
        except DeployError as exc:
            what = f"layer {item.diff_id[7:19]}" if isinstance(item, Growing) else f"blob {item.digest[7:19]}"
            source = f"relay {self.name}" if parent is None else f"{self.name} from {parent.name}"
            self._broken = RelayError(self.name, self.name, f"sending {what} to {source} failed: {_why(exc)}")
            raise self._broken from exc

    def wait_started(self, blob: Blob) -> None:
        """Until the node's copy of BLOB has begun; its error if it already failed."""
        started, done = self._sends[blob.diff_id, blob.codec]
        while not started.wait(1.0):
            pass
        if done.done() and done.exception() is not None:
            raise done.exception()  # type: ignore[misc]

    def failed(self, blob: Blob) -> BaseException | None:
        _, done = self._sends[blob.diff_id, blob.codec]
        return done.exception() if done.done() else None

    def forward(self, host: Host, blob: Blob, offset: int, counter: Counter, here: str = "") -> Result:
        """Have this node pass BLOB from OFFSET on to HOST over the LAN (HERE: into its own staging,
        that receiver's path); the receive's answer."""
        self.wait_started(blob)
        names = [h.name for h in self.children]
        address, port, user = self._lan.get(host.name, ("", 22, ""))
        step = steps.forward(self.name, self.host.staging_dir, blob.digest, blob.codec, blob.size, offset,
                             self.ship_dir, rc.ssh_dest(user, address), port, self.site.stall_s,
                             names.index(host.name) if host.name in names else len(names), here,
                             cmd.growing_path(self.blobs_dir, blob.diff_id, blob.codec, blob.level))
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

    def close(self, keep_blobs: bool, image_blobs: Iterable[Blob] = ()) -> None:
        """Remove the ship's key dir (and its parent's key line) from the node, and its copies unless
        KEEP_BLOBS: this ship's, and those of IMAGE_BLOBS an earlier, failed ship left there."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._setup is not None:
            runs = [rc.cleanup_argv(self.ship_dir, () if keep_blobs else sorted(self.staged | self._left(image_blobs)))]
            if self.inbound:
                runs.append(steps.revoke(self.parent.name if self.parent else self.name, self.host.authorized_keys,
                                         self.site.ship_id).argv)
            dead = self._broken is not None or self._setup.exception() is not None
            try:
                for argv in runs:
                    if not dead:
                        self.conn.run(argv, what="cleaning the relay", check=False, timeout=120)
                    else:  # its link already failed: one try, not the whole retry budget again
                        self.conn.session().run(argv, check=False, timeout=120)
            except DeployError as exc:
                log.warning("%s: could not clean the relay's staging (a key line left expires in a day): %s",
                            self.name, exc)
        self.conn.close()


class Site:
    """One relay and the hosts it serves in this ship, as a tree of fan-out deploy_relay_fanout:
    each node set up once, each blob sent from the workstation once (to the relay)."""

    def __init__(self, relay: Host, hosts: Sequence[Host], *, timeout: float = 10.0,
                 conn: HostConn | None = None, connect: Callable[[Host], HostConn] | None = None) -> None:
        self.relay, self.hosts = relay, tuple(hosts)
        self.name = relay.name
        self.ship_id = secrets.token_hex(8)
        self.stall_s = int(budget_seconds()) + STALL_MARGIN_S  # the relay's own send may retry that long
        self.parents = relay_tree(relay.name, [h.name for h in self.hosts], fanout_of(relay, self.hosts))
        by_name = {h.name: h for h in (relay, *self.hosts)}
        kids: dict[str, list[Host]] = {}
        for child, parent in self.parents.items():
            kids.setdefault(parent, []).append(by_name[child])
        connect = connect or (lambda h: HostConn(h, timeout=timeout))
        self.nodes = {relay.name: Node(self, relay, None, kids.get(relay.name, ()), conn or connect(relay))}
        for child, parent in self.parents.items():  # breadth-first: a parent comes before its children
            if child in kids:
                self.nodes[child] = Node(self, by_name[child], self.nodes[parent], kids[child], connect(by_name[child]))

    @property
    def conn(self) -> HostConn:
        return self.nodes[self.name].conn

    def node_of(self, host: Host) -> Node:
        """The node whose copy feeds HOST: its own when it is a node, else its parent."""
        return self.nodes.get(host.name) or self.nodes[self.parents[host.name]]

    def served_by(self, host: Host) -> str:
        """The node that passes HOST its blobs over the LAN (the relay serves itself)."""
        return self.parents.get(host.name, self.name)

    def authorize(self, conn: HostConn, host: Host) -> bool:
        """Let the serving node's key run the forced receive on HOST (from that node only, for a day
        at most); a node feeds itself, without a key. True when a line was added."""
        node = self.node_of(host)
        node.ready()
        line = "" if node.name == host.name else node.key_line(host, host.staging_dir)
        if not rc.plain_path(host.staging_dir):
            raise RelayError(host.name, node.name, f"staging dir {host.staging_dir!r} is not a plain absolute path")
        step = steps.authorize(node.name, host.staging_dir, host.authorized_keys, line)
        res = conn.run(step.argv, what=step.label, check=False, timeout=60)
        if not res.ok:
            raise RelayError(host.name, node.name, f"cannot authorize its key: {res.stderr_tail() or res.exited}")
        return bool(line)

    def revoke(self, conn: HostConn, host: Host) -> None:
        """Remove this ship's key from HOST (best effort: the line expires anyway)."""
        try:
            step = steps.revoke(self.served_by(host), host.authorized_keys, self.ship_id)
            conn.run(step.argv, what=step.label, check=False, timeout=60)
        except DeployError as exc:
            log.warning("%s: could not remove relay %s's key (it expires in a day): %s", host.name,
                        self.served_by(host), exc)

    def close(self, all_ok: bool, image_blobs: Sequence[Blob] = ()) -> None:
        """Clean every node that was set up: key dirs and lines; the relay's blobs when every host
        succeeded (kept for a resume otherwise), other nodes' copies always (the LAN refills them).
        IMAGE_BLOBS: the image's blobs as the local cache knows them, whose copies an earlier ship
        that failed left on a node go too (the relay's, once this ship succeeded everywhere)."""
        nodes = list(self.nodes.values())
        with ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix=f"relay-close-{self.name}") as pool:
            for future in [pool.submit(n.close, n.parent is None and not all_ok, image_blobs) for n in reversed(nodes)]:
                future.result()


def _why(exc: DeployError) -> str:
    return str(getattr(exc, "reason", exc.message)).splitlines()[0]


class _Passes:
    """A relay's passes of one blob on to one host. A pass that dies reports nothing (its reply is
    lost), so what it passed counts as LAN bytes (Counter.add_lan) from where the host's copy stands
    when the next pass starts, or when the direct send after a fallback looks."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._unreported: int | None = None  # the offset the running (or died) pass started from

    def counted(self, forward: Forward) -> Forward:
        def via(blob: Blob, offset: int) -> Result:
            self.settle(offset)
            self._unreported = offset
            res = forward(blob, offset)
            self._unreported = None  # it answered: forward counted what it passed
            return res
        return via

    def settle(self, held: int) -> None:
        """The host holds HELD bytes of the blob now: what the last pass put there, if it died."""
        if self._unreported is not None and held > self._unreported:
            self._counter.add_lan(held - self._unreported)
        self._unreported = None


class Relayed:
    """One host's sends through its site's tree, falling back to direct sends per its rule."""

    def __init__(self, site: Site, conn: HostConn, host: Host, counter: Counter, note: Callable[[str], None],
                 exporter: Exporter) -> None:
        self.site, self.conn, self.host, self.counter, self.note = site, conn, host, counter, note
        self.exporter = exporter
        self.node = site.node_of(host)  # whose copy feeds the host (its own, when it is a node)
        self.served_by = site.served_by(host)  # who passes it the bytes over the LAN (its parent)
        self.here = rc.receiver_path(host.staging_dir) if self.node.name == host.name else ""
        self.authorized = False

    @property
    def direct(self) -> bool:
        """The relay could not serve the host: its blobs go straight from the workstation."""
        return self.counter.fell_back

    def open(self) -> None:
        try:
            self.authorized = self.site.authorize(self.conn, self.host)
            self.counter.relay = self.served_by
        except DeployError as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: DeployError) -> None:
        if isinstance(exc, Interrupted):  # Ctrl-C: no direct send instead
            raise exc
        if isinstance(exc, (ConnectError, AuthError, HostKeyError)) and exc.host == self.host.name:
            raise exc  # the workstation cannot reach the host itself: a direct send could not either
        if self.host.relay_fallback == "fail":
            raise exc if isinstance(exc, RelayError) else RelayError(self.host.name, self.served_by, _why(exc)) \
                from exc
        self.note(f"relay {self.served_by} cannot serve this host ({str(exc).splitlines()[0]}); "
                  "sending directly from the workstation")
        log.warning("%s: relay %s failed, sending directly: %s", self.host.name, self.served_by, exc)
        self.counter.fell_back = True

    def prefetch(self, items: Iterator[Blob | Growing]) -> Iterator[Blob | Growing]:
        """ITEMS, each handed to the relay as soon as it is ready (a blob still being compressed, as it
        is written), not when this host gets to it: the uplink stays busy while the relay passes
        earlier blobs on. Yields each blob once it is complete (its digest names it on the hosts)."""
        if self.direct:
            yield from items
            return
        ready: queue.Queue[tuple[Blob | None, BaseException | None]] = queue.Queue()

        def feed() -> None:
            try:
                for item in items:
                    self.node.ensure(item, self.counter, self.note, self.exporter)
                    ready.put((self.exporter.finished(item) if isinstance(item, Growing) else item, None))
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
            self.node.ensure(blob, self.counter, self.note, self.exporter)
            passes = _Passes(self.counter)
            try:
                return stage_blob(self.conn, staging, blob, self.counter, self.note, listed,
                                  via=passes.counted(lambda b, offset: self.node.forward(self.host, b, offset,
                                                                                         self.counter, self.here)),
                                  give_up=replace(RELAY_DOWN, of=lambda host: host != self.host.name))
            except DeployError as exc:
                self._fall_back(exc)
                # the relay may have passed part of the blob on before it failed: the direct send
                # resumes after it (the stat it makes anyway, made here), and those bytes were the LAN's
                listed = staged_sizes(self.conn, staging, blob)
                passes.settle(held_bytes(listed, staging, blob))
        return stage_blob(self.conn, staging, blob, self.counter, self.note, listed)

    def close(self) -> None:
        """Remove the ship's key from the host (once)."""
        if self.authorized:
            self.authorized = False
            self.site.revoke(self.conn, self.host)
