"""Start, probe and stop the testbed's daemons: sshd and dockerd per host, the registry, the ws dockerd."""
from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import os
import shutil
import socket
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import docker28
from .config import (
    DRIVER_VERSION,
    HOSTS,
    REGISTRY,
    REGISTRY_ADDR,
    REGISTRY_AUTH,
    REGISTRY_AUTH_PASSWORD,
    REGISTRY_AUTH_PORT,
    REGISTRY_AUTH_USER,
    REGISTRY_NS,
    REGISTRY_PORT,
    WS_BRIDGE,
    Docker,
    HostSpec,
    Paths,
    Store,
    gpu_table,
    host_spec,
)
from .sh import TestbedError, in_ns, read_pid, run, spawn, stop_pid

SYS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NO_EGRESS_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens, so connections are refused
FAKES = Path(__file__).resolve().parent / "fakes"


# --- keys -----------------------------------------------------------------------------------------

def ensure_client_key(p: Paths) -> None:
    if not p.key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer-testbed", "-f", str(p.key)])
    p.key.chmod(0o600)
    p.authorized_keys.write_text(Path(f"{p.key}.pub").read_text())


def ensure_host_key(p: Paths, name: str) -> str:
    """Generate the host's key once; return its public half for known_hosts."""
    key = p.host(name) / "ssh_host_ed25519_key"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(key)])
    return Path(f"{key}.pub").read_text().split()[1]


def write_known_hosts(p: Paths) -> None:
    lines = [f"{h.name},{h.address} ssh-ed25519 {ensure_host_key(p, h.name)}\n" for h in HOSTS]
    p.known_hosts.write_text("".join(lines))


# --- per-host files -------------------------------------------------------------------------------

def prepare_host_dirs(p: Paths, spec: HostSpec) -> None:
    """Dirs, the fake NVIDIA tools (GPU hosts only) and sshd_config for one host."""
    h = p.host(spec.name)
    for sub in ("staging", "data", "bin", "docker", "run", "home"):
        (h / sub).mkdir(parents=True, exist_ok=True)
    p.docker_config(spec.name).mkdir(mode=0o700, exist_ok=True)  # holds the host's `docker login`
    bin_dir = h / "bin"
    if spec.gpu is not None:
        (h / "gpus.json").write_text(json.dumps(
            {"host": spec.name, "driver_version": DRIVER_VERSION, "gpus": gpu_table(spec)}, indent=1))
        for src, dst in (("gpustate.py", "gpustate.py"), ("hook.py", "nvidia-container-runtime-hook"),
                         ("nvidia_smi.py", "nvidia-smi")):
            shutil.copyfile(FAKES / src, bin_dir / dst)
            (bin_dir / dst).chmod(0o755)
    h.joinpath("sshd_config").write_text(sshd_config(p, spec.name))


def sshd_config(p: Paths, name: str) -> str:
    h = p.host(name)
    # A Docker 28 host's session also finds containerd 2's `ctr` (after the host's own bin dir).
    spec = host_spec(name)
    extra = f"{docker28.bin_dirs(p)[0]}:" if spec.docker == "28" else ""
    rekey = f"RekeyLimit {spec.rekey_limit}\n" if spec.rekey_limit else ""
    # HOME: each host has its own, as a server would, instead of this machine's /root (whose .bashrc, run by
    # bash for every command sshd starts, sets up this workstation's dev tools: ~0.1 s a command).
    # DOCKER_CONFIG: each host keeps its own `docker login`.
    env = (f"HOME={h / 'home'} DOCKER_HOST={p.docker_host(name)} PATH={h / 'bin'}:{extra}{SYS_PATH} "
           f"DEPLOYER_TESTBED_HOST={name} DOCKER_CONFIG={p.docker_config(name)}")
    return f"""# deployer testbed: sshd of {name} (runs in network namespace {name})
Port 22
ListenAddress 0.0.0.0
HostKey {h / 'ssh_host_ed25519_key'}
PidFile {h / 'sshd.pid'}
AuthorizedKeysFile {p.authorized_keys} {h / 'authorized_keys'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
PrintLastLog no
MaxStartups 200:30:400
MaxSessions 100
ClientAliveInterval 15
ClientAliveCountMax 4
Subsystem sftp /usr/lib/openssh/sftp-server
{rekey}SetEnv {env}
"""


# --- sshd ---------------------------------------------------------------------------------------

def ensure_daemon(p: Paths, component: str, argv: list[str], env: dict[str, str] | None = None,
                  config: str = "") -> None:
    """Start component unless it already runs with the same argv, env and config (else restart it)."""
    key = hashlib.sha256(json.dumps([argv, env, config]).encode()).hexdigest()
    pidfile = p.pidfile(component)
    keyfile = pidfile.with_suffix(".key")
    pid = read_pid(pidfile)
    if pid and marker_in_cmdline(p, pid):
        if keyfile.exists() and keyfile.read_text() == key:
            return
        stop_pid(pid, timeout=20)
    spawn(argv, p.logs / f"{component}.log", pidfile, env=env)
    keyfile.write_text(key)


def marker_in_cmdline(p: Paths, pid: int) -> bool:
    """True if pid's command line mentions our state dir (it is ours, not a recycled pid)."""
    try:
        return str(p.state).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def start_sshd(p: Paths, name: str) -> None:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    cfg = p.host(name) / "sshd_config"
    ensure_daemon(p, f"sshd-{name}", in_ns(name, ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)]),
                  config=cfg.read_text())


def listening(pid: int, port: int) -> bool:
    """True if the process's network namespace has a TCP listener on port (read from /proc, so a cut or
    throttled link does not make a healthy sshd look down)."""
    want = f":{port:04X}"
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        if any(f[1].endswith(want) and f[3] == "0A" for f in (line.split() for line in lines)):
            return True
    return False



# --- dockerd ------------------------------------------------------------------------------------

def daemon_kind(name: str, ws_store: Store = "overlay2") -> tuple[Docker, Store]:
    """(Docker version line, image store) of a host's daemon, or of the ws daemon (always Docker 28)."""
    if name == "ws":
        return "28", ws_store
    spec = host_spec(name)
    return spec.docker, spec.store


def daemon_config(p: Paths, name: str, ws_store: Store = "overlay2") -> dict[str, Any]:
    """The daemon's own config file (never /etc/docker/daemon.json); pure."""
    docker, store = daemon_kind(name, ws_store)
    if docker == "20.10":
        # Keep 20.10's identity key (default /etc/docker/key.json, no flag for it) in this daemon's dir.
        return {"deprecated-key-path": str(_base(p, name) / "key.json")}
    # 28 makes no identity key. The store is spelled out either way, so a future default cannot flip it.
    return {"features": {"containerd-snapshotter": store == "containerd"}}


def _base(p: Paths, name: str) -> Path:
    return p.ws if name == "ws" else p.host(name)


def containerd_socket(p: Paths, name: str) -> Path:
    """The socket of the containerd a daemon spawns (under its exec root; the same on 20.10 and 28)."""
    return _base(p, name) / "run" / "containerd" / "containerd.sock"


def dockerd_argv(p: Paths, name: str, ws_store: Store = "overlay2") -> list[str]:
    docker, store = daemon_kind(name, ws_store)
    base = _base(p, name)
    data_root = p.ws_data_root(store) if name == "ws" else base / "docker"
    exe = str(docker28.dockerd(p)) if docker == "28" else "/usr/sbin/dockerd"
    argv = [exe, "--config-file", str(base / "daemon.json"), "--data-root", str(data_root), "--exec-root", str(base / "run"),
            "--pidfile", str(base / "docker.pid"), "-H", p.docker_host(name),
            "--insecure-registry", REGISTRY, "--insecure-registry", REGISTRY_AUTH, "--shutdown-timeout", "3", "--log-level", "warn"]
    if store == "overlay2":
        # Not on the containerd store: there the snapshotter (overlayfs) stores images, not a graph driver.
        argv += ["--storage-driver", "overlay2"]
    if name == "ws":
        # The ws daemon shares the root namespace with the user's networking: no docker0, no iptables,
        # no sysctl changes; build containers get the testbed's own bridge.
        argv += ["--iptables=false", "--ip-masq=false", "--ip-forward=false", "--bridge", WS_BRIDGE]
        return argv
    return in_ns(name, argv)


def dockerd_path(p: Paths, name: str, docker: Docker) -> str:
    """dockerd's PATH: Docker 28's own dirs first (it spawns containerd and its shim from PATH), then the
    host's bin (the fake nvidia-container-runtime-hook), then the system's (bookworm's runc and docker-init:
    unstable's runc needs a newer glibc)."""
    dirs = [str(d) for d in docker28.bin_dirs(p)] if docker == "28" else []
    if name != "ws":
        dirs.append(str(p.host(name) / "bin"))
    return ":".join([*dirs, SYS_PATH])


def start_dockerd(p: Paths, name: str, ws_store: Store = "overlay2") -> None:
    base = _base(p, name)
    docker, store = daemon_kind(name, ws_store)
    for d in (p.ws_data_root(store) if name == "ws" else base / "docker", base / "run"):
        d.mkdir(parents=True, exist_ok=True)
    (base / "daemon.json").write_text(json.dumps(daemon_config(p, name, ws_store)) + "\n")
    path = dockerd_path(p, name, docker)
    # Only the testbed registry is reachable; a pull of anything else (e.g. Docker Hub) must fail here at
    # once instead of leaving this machine, so every other registry goes to a closed local proxy port.
    env = {"PATH": path, "HOME": "/root", "LANG": "C.UTF-8", "HTTP_PROXY": NO_EGRESS_PROXY,
           "HTTPS_PROXY": NO_EGRESS_PROXY, "NO_PROXY": f"{REGISTRY_ADDR},localhost,127.0.0.1"}
    ensure_daemon(p, f"dockerd-{name}", dockerd_argv(p, name, ws_store), env,
                  config=(base / "daemon.json").read_text())


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def docker_api(p: Paths, name: str, path: str, timeout: float = 2) -> tuple[int, bytes]:
    """GET path from a daemon's API over its unix socket."""
    conn = _UnixHTTP(str(p.docker_sock(name)), timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def store_of(info: dict[str, Any]) -> str:
    """'containerd' for a daemon on the containerd image store, else its graph driver (pure; from /info)."""
    if ["driver-type", "io.containerd.snapshotter.v1"] in (info.get("DriverStatus") or []):
        return "containerd"
    return str(info.get("Driver", ""))


def daemon_facts(p: Paths, name: str) -> tuple[str, str] | None:
    """(server version, image store) of a running daemon, or None if it does not answer."""
    try:
        status, body = docker_api(p, name, "/info", timeout=5)
    except OSError:
        return None
    if status != 200:
        return None
    info = json.loads(body)
    return str(info.get("ServerVersion", "")), store_of(info)


def docker_ready(p: Paths, name: str) -> bool:
    try:
        return docker_api(p, name, "/_ping")[0] == 200
    except OSError:
        return False


def docker_cli(p: Paths, name: str, *args: str, timeout: float = 120, input: bytes | None = None) -> str:
    env = {**os.environ, "DOCKER_HOST": p.docker_host(name), "DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"}
    return run(["docker", *args], timeout=timeout, input=input, env=env).stdout.decode()


# --- registries ---------------------------------------------------------------------------------

def registry_config(root: Path, port: int, htpasswd: Path | None = None) -> str:
    """docker-registry's config: plain HTTP on port, storage under root, basic auth if htpasswd (pure)."""
    kind = "plain HTTP" + (", htpasswd login" if htpasswd else "")
    text = f"""# deployer testbed registry (Debian docker-registry, {kind})
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root / 'data'}
  delete:
    enabled: true
http:
  addr: {REGISTRY_ADDR}:{port}
"""
    if htpasswd:
        text += f"""auth:
  htpasswd:
    realm: deployer-testbed
    path: {htpasswd}
"""
    return text


def start_registry(p: Paths) -> None:
    (p.registry / "data").mkdir(parents=True, exist_ok=True)
    cfg = p.registry / "config.yml"
    cfg.write_text(registry_config(p.registry, REGISTRY_PORT))
    ensure_daemon(p, "registry", in_ns(REGISTRY_NS, ["docker-registry", "serve", str(cfg)]), config=cfg.read_text())


def start_registry_auth(p: Paths) -> None:
    """The registry that wants a login: its own storage, htpasswd and a 0600 credentials file."""
    root = p.registry_auth
    (root / "data").mkdir(parents=True, exist_ok=True)
    write_private(root / "credentials.json", json.dumps(
        {"registry": REGISTRY_AUTH, "username": REGISTRY_AUTH_USER, "password": REGISTRY_AUTH_PASSWORD}, indent=1) + "\n")
    htpasswd = root / "htpasswd"
    if not htpasswd_matches(htpasswd, REGISTRY_AUTH_USER, REGISTRY_AUTH_PASSWORD):  # a new salt would restart it
        write_private(htpasswd, f"{REGISTRY_AUTH_USER}:{bcrypt_hash(REGISTRY_AUTH_PASSWORD)}\n")
    cfg = root / "config.yml"
    cfg.write_text(registry_config(root, REGISTRY_AUTH_PORT, htpasswd))
    ensure_daemon(p, "registry-auth", in_ns(REGISTRY_NS, ["docker-registry", "serve", str(cfg)]),
                  config=cfg.read_text() + htpasswd.read_text())


def write_private(path: Path, text: str) -> None:
    """Write text to a file only its owner may read (rewritten only when it differs)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)  # also when the file existed with looser bits
    with os.fdopen(fd, "r+") as f:
        if f.read() != text:
            f.seek(0)
            f.truncate()
            f.write(text)


def _crypt() -> object | None:
    """The stdlib crypt module (bcrypt through libxcrypt on Debian), or None where it is gone (3.13+)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    return crypt


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd; cost 4, the minimum, since the registry checks it on every request."""
    crypt = _crypt()
    if crypt is not None:
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # type: ignore[attr-defined]
        if hashed and hashed.startswith("$2"):
            return str(hashed)
    try:
        import bcrypt  # the venv has it (paramiko needs it)
    except ImportError:
        raise TestbedError("cannot make a bcrypt hash for the registry's htpasswd: this Python has neither "
                           "crypt with blowfish nor the bcrypt package") from None
    return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode())


def htpasswd_matches(path: Path, user: str, password: str) -> bool:
    """True if the htpasswd file holds exactly user with a bcrypt hash of password."""
    try:
        name, _, hashed = path.read_text().strip().partition(":")
    except OSError:
        return False
    if name != user or not hashed.startswith("$2"):
        return False
    crypt = _crypt()
    if crypt is not None:
        return bool(crypt.crypt(password, hashed) == hashed)  # type: ignore[attr-defined]
    try:
        import bcrypt
    except ImportError:
        return False
    return bool(bcrypt.checkpw(password.encode(), hashed.encode()))


def registry_ready(port: int = REGISTRY_PORT, login: tuple[str, str] | None = None) -> bool:
    """The registry on port answers /v2/ with 200 (with the login, if it wants one)."""
    conn = http.client.HTTPConnection(REGISTRY_ADDR, port, timeout=1)
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(login).encode()).decode()} if login else {}
    try:
        conn.request("GET", "/v2/", headers=headers)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def registry_auth_ready() -> bool:
    return registry_ready(REGISTRY_AUTH_PORT, (REGISTRY_AUTH_USER, REGISTRY_AUTH_PASSWORD))


# --- stopping -----------------------------------------------------------------------------------



def own_flags(p: Paths) -> set[tuple[str, str]]:
    """(flag, value) pairs that only our daemons' processes carry: dockerd's pidfile, the config of the
    containerd it spawns, and the containerd address every shim of that containerd is given."""
    flags: set[tuple[str, str]] = set()
    for name in ("ws", *(h.name for h in HOSTS)):
        run_dir = _base(p, name) / "run"
        flags |= {("--pidfile", str(_base(p, name) / "docker.pid")),
                  ("--config", str(run_dir / "containerd" / "containerd.toml")),
                  ("-address", str(containerd_socket(p, name)))}
    return flags


def select_ours(procs: dict[int, tuple[int, list[str]]], roots: Iterable[int], flags: set[tuple[str, str]]
                ) -> set[int]:
    """Pids of the testbed's processes (pure): the roots (recorded pids, members of our namespaces), every
    process carrying one of our daemons' exact (flag, value) pairs (a containerd or a shim orphaned by its
    dockerd), and all their descendants (container processes live under their shim). A process that merely
    mentions the state dir (an editor, `tail -f` of a log) is not ours. procs: pid -> (ppid, argv)."""
    ours = {pid for pid in roots if pid in procs}
    ours |= {pid for pid, (_, argv) in procs.items() if any(pair in flags for pair in itertools.pairwise(argv))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(ours)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in ours:
                ours.add(child)
                todo.append(child)
    return ours


def process_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (ppid, argv) of every live process (kernel threads have an empty argv)."""
    procs: dict[int, tuple[int, list[str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if state not in ("Z", "X"):  # a zombie is dead already (this machine's init may be slow to reap it)
            procs[int(entry)] = (int(ppid), argv)
    return procs


def leftover_pids(p: Paths, namespaces: tuple[str, ...], recorded: Iterable[int] = ()) -> list[int]:
    """Processes the testbed started that still run: recorded pids, those in our namespaces, our daemons'
    containerds and shims, and the descendants of all of them."""
    roots = set(recorded)
    for ns in namespaces:
        if Path(f"/run/netns/{ns}").exists():
            out = run(["ip", "netns", "pids", ns], check=False).stdout.decode()
            roots.update(int(x) for x in out.split())
    pids = select_ours(process_table(), roots, own_flags(p))
    pids.discard(os.getpid())
    return sorted(pids)


def remove_runtime_dirs() -> None:
    """Drop the empty runtime dirs that dockerd and containerd create outside the state dir."""
    for d in ("/run/docker/plugins", "/run/docker", "/run/containerd/s", "/run/containerd"):
        try:
            os.rmdir(d)
        except OSError:
            pass  # absent, or in use by something else: leave it
