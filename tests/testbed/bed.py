"""Bring the whole testbed up (idempotently), take it down without leftovers, and report its status."""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import daemons, docker28, images, inventory, net
from .config import (
    HOSTS,
    REGISTRY,
    REGISTRY_AUTH,
    WS_STORE_ENV,
    Paths,
    Store,
    ws_store_from_env,
)
from .sh import TestbedError, pid_alive, read_pid, run, wait_for

Log = Callable[[str], None]
READY_TIMEOUT = 60.0


def _quiet(msg: str) -> None:
    pass


@contextmanager
def locked(p: Paths) -> Iterator[None]:
    """Serialize up/down across processes (several pytest sessions may call up at once)."""
    lock = p.state / ".lock"  # kept by down (like the image cache), so the lock outlives a teardown
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def components() -> list[str]:
    """Every daemon of the testbed, by the name of its pidfile."""
    return ["registry", "registry-auth", "dockerd-ws", *(f"{k}-{h.name}" for h in HOSTS for k in ("sshd", "dockerd"))]


def alive(p: Paths, component: str) -> int | None:
    """The component's pid if it runs and really is ours (guards against a recycled pid)."""
    pid = read_pid(p.pidfile(component))
    return pid if pid is not None and daemons.marker_in_cmdline(p, pid) else None


def ready(p: Paths, component: str) -> bool:
    if component == "registry":
        return daemons.registry_ready()
    if component == "registry-auth":
        return daemons.registry_auth_ready()
    kind, name = component.split("-", 1)
    if kind == "dockerd":
        return daemons.docker_ready(p, name)
    pid = alive(p, component)
    return pid is not None and daemons.listening(pid, 22)


def _log_tail(p: Paths, component: str, n: int = 8) -> str:
    try:
        lines = (p.logs / f"{component}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n    ".join(lines[-n:])


def up(p: Paths | None = None, log: Log = _quiet, ws_store: Store | None = None) -> Paths:
    """Create or repair every part of the testbed, the ws daemon on ws_store (default: DEPLOYER_TESTBED_WS_STORE,
    else overlay2); returns its paths. Raises TestbedError on failure."""
    p = p or Paths()
    store = ws_store or ws_store_from_env()
    t0 = time.monotonic()
    p.state.mkdir(parents=True, exist_ok=True)
    with locked(p):
        for d in (p.logs, p.state / "pids", p.cache, p.ws):
            d.mkdir(parents=True, exist_ok=True)
        docker28.ensure(p, log)
        docker28.ensure_buildx(p, log)
        daemons.ensure_client_key(p)
        for spec in HOSTS:
            daemons.prepare_host_dirs(p, spec)
        daemons.write_known_hosts(p)
        log("network: namespaces, site bridge, uplink")
        net.ensure_network()
        for c in components():
            if alive(p, c) is None:
                p.pidfile(c).unlink(missing_ok=True)
        log("starting daemons: registries, ws dockerd, sshd + dockerd on " + ", ".join(h.name for h in HOSTS))
        daemons.start_registry(p)
        daemons.start_registry_auth(p)
        daemons.start_dockerd(p, "ws", store)  # a different store restarts only this daemon
        for spec in HOSTS:
            daemons.start_sshd(p, spec.name)
            daemons.start_dockerd(p, spec.name)
        _wait_ready(p, ["dockerd-ws"])
        log(f"images ({store} store): {images.ensure_images(p, store)}")
        _wait_ready(p, components())
        inventory.write(p)
    log(f"testbed up in {time.monotonic() - t0:.1f}s; inventory {p.inventory}")
    return p


def _wait_ready(p: Paths, comps: list[str]) -> None:
    pending = set(comps)

    def check() -> bool:
        for c in list(pending):
            if ready(p, c):
                pending.discard(c)
            elif read_pid(p.pidfile(c)) is None:
                raise TestbedError(f"{c} exited during start; its log ({p.logs / (c + '.log')}) ends:\n    "
                                   + _log_tail(p, c))
        return not pending

    deadline = time.monotonic() + READY_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise TestbedError(f"not ready after {READY_TIMEOUT:.0f}s: {', '.join(sorted(pending))}; see logs in "
                               f"{p.logs}")
        time.sleep(0.1)


def down(p: Paths | None = None, log: Log = _quiet) -> None:
    """Stop everything, then remove namespaces, links, mounts and state (the image cache is kept)."""
    p = p or Paths()
    t0 = time.monotonic()
    p.state.mkdir(parents=True, exist_ok=True)
    with locked(p):
        # Docker daemons first (they stop their containers), in parallel; then sshd and the registry.
        recorded: list[int] = []
        for group in ([c for c in components() if c.startswith("dockerd")],
                      [c for c in components() if not c.startswith("dockerd")]):
            pids = [pid for pid in (alive(p, c) for c in group) if pid]
            recorded += pids
            _signal_all(pids, signal.SIGTERM)
            if not _wait_dead(pids, 20):
                _signal_all(pids, signal.SIGKILL)
                _wait_dead(pids, 5)
        leftovers = daemons.leftover_pids(p, net.NAMESPACES, recorded)
        if leftovers:
            log(f"killing {len(leftovers)} leftover processes: {', '.join(_comm(x) for x in leftovers)}")
            _signal_all(leftovers, signal.SIGKILL)
            _wait_dead(leftovers, 5)
        unmount_all(p)
        net.teardown_network()
        daemons.remove_runtime_dirs()
        for name in ("hosts", "ws", "registry", "registry-auth", "pids", "logs"):
            shutil.rmtree(p.state / name, ignore_errors=True)
        for f in (p.key, Path(f"{p.key}.pub"), p.known_hosts, p.authorized_keys, p.inventory):
            f.unlink(missing_ok=True)
    log(f"testbed down in {time.monotonic() - t0:.1f}s (image cache kept in {p.cache})")


def _comm(pid: int) -> str:
    try:
        return f"{Path(f'/proc/{pid}/comm').read_text().strip()}[{pid}]"
    except OSError:
        return str(pid)


def _wait_dead(pids: list[int], timeout: float) -> bool:
    return wait_for(lambda: not any(pid_alive(x) for x in pids), timeout)


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def our_mounts(p: Paths) -> list[str]:
    """Mount points under the state dir (dockerd overlay, netns and shm mounts)."""
    prefix = str(p.state) + "/"
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefix):
            out.append(target)
    return out


def unmount_all(p: Paths) -> None:
    for _ in range(3):
        mounts = our_mounts(p)
        if not mounts:
            return
        for m in sorted(mounts, key=len, reverse=True):
            if run(["umount", m], check=False).returncode != 0:
                run(["umount", "-l", m], check=False)


def status(p: Paths | None = None) -> list[tuple[str, bool, str]]:
    """(component, up?, detail) for every part of the testbed."""
    p = p or Paths()
    rows: list[tuple[str, bool, str]] = []
    for ns in net.NAMESPACES:
        rows.append((f"netns {ns}", net.ns_exists(ns), ""))
    rows.append((f"uplink {net.UPLINK_DEV}", net.link_exists(net.UPLINK_DEV),
                 f"throttled {net.throttled('uplink')}" if net.link_exists(net.UPLINK_DEV)
                 and net.throttled("uplink") else ""))
    for c in components():
        pid = alive(p, c)
        ok = pid is not None and ready(p, c)
        detail = f"pid {pid}" if pid else "not running"
        if ok and c.startswith("dockerd-"):
            ok, more = _docker_detail(p, c.split("-", 1)[1])
            detail += more
        rows.append((c, ok, detail + _faults(c)))
    try:
        have = images.images_present(p)
    except OSError:
        have = False
    fetched = docker28.versions(p)
    rows.append(("docker 28 (cache)", fetched is not None,
                 ", ".join(f"{k} {v}" for k, v in fetched.items()) if fetched else f"not fetched to {p.docker28}"))
    buildx = docker28.buildx_version(p)
    rows.append(("docker-buildx (cache)", buildx is not None,
                 f"{buildx}, DOCKER_CONFIG={p.ws_docker_config}" if buildx else f"not fetched to {p.buildx}"))
    rows.append(("images (ws)", have, f"{images.BASE_IMAGE}, {images.SAMPLE_IMAGE}"))
    rows.append(("inventory", p.inventory.exists(), str(p.inventory)))
    return rows


def _docker_detail(p: Paths, name: str) -> tuple[bool, str]:
    """(as the spec says?, ", Docker VERSION, STORE store") of a running daemon; the ws may be on either store."""
    facts = daemons.daemon_facts(p, name)
    if facts is None:
        return False, ", /info does not answer"
    version, store = facts
    if name == "ws":
        return True, f", Docker {version}, {store} store"
    docker, want = daemons.daemon_kind(name)
    ok = version.startswith(f"{docker}.") and store == want
    return ok, f", Docker {version}, {store} store" + ("" if ok else f" (WANT Docker {docker}, {want})")


def ws_store(p: Paths) -> str | None:
    """The image store of the running ws daemon, or None if it does not answer."""
    facts = daemons.daemon_facts(p, "ws")
    return facts[1] if facts else None


def _faults(component: str) -> str:
    if not component.startswith("sshd-"):
        return ""
    name = component.split("-", 1)[1]
    if not net.ns_exists(name):
        return ""
    notes = []
    if net.is_cut(name):
        notes.append("CUT")
    if rate := net.throttled(name):
        notes.append(f"throttled {rate}")
    if (mb := net.flaky_mb(name)) is not None:
        notes.append(f"flaky after {mb:g} MB")
    return f" ({', '.join(notes)})" if notes else ""


def env_lines(p: Paths | None = None) -> list[str]:
    p = p or Paths()
    # DEPLOY_PLAYBOOK makes the one command, `deploy ship --host gpu01`, ship the testbed's sample.
    playbook = os.path.join(os.path.dirname(os.path.dirname(p.inventory)), "playbooks", "sample.yml")
    store = ws_store(p) or ws_store_from_env()  # the running one; else what the next `up` would start
    return [f"export DOCKER_HOST={p.docker_host('ws')}", f"export DEPLOY_INVENTORY={p.inventory}",
            f"export DEPLOY_PLAYBOOK={playbook}", f"export {WS_STORE_ENV}={store}",
            f"export DEPLOYER_TESTBED_DIR={p.state}",
            f"export DOCKER_CONFIG={p.ws_docker_config}  # the workstation's docker CLI finds `docker buildx` here",
            f"# registry: {REGISTRY}",
            f"# registry with a login: {REGISTRY_AUTH} (credentials in {p.registry_auth / 'credentials.json'})"]
