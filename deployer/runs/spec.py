"""What to run: RunSpec, and the pure parsers for its flag values (-v, -e, --env-file, names).

Everything here is pure and raises SpecError (exit 2) with one clear message.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

from deployer.errors import SpecError
from deployer.runs.gpus import GpuRequest, parse_gpus

# docker's own rule for container and volume names (daemon/names/names.go).
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_MODES = {"ro", "rw", "z", "Z", "nocopy", "shared", "rshared", "slave", "rslave", "private", "rprivate"}
_RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:[0-9]+)?)$")
# units.RAMInBytes, which docker uses for --memory and --shm-size.
_SIZE_RE = re.compile(r"^[0-9]+(\.[0-9]+)* ?[kmgtp]?i?b?$", re.IGNORECASE)
_IPC_RE = re.compile(r"^(none|private|shareable|host|container:.+)$")
PLACES = ("all", "any")  # all: every selected host (the default); any: one, by free GPUs
NODE_FAILURE = ("stop-all", "ignore")  # a multi-node job when one rank exits non-zero
_NETWORK_RE = re.compile(r"^(host|bridge|none|container:.+|[a-zA-Z0-9][a-zA-Z0-9_.-]*)$")


@dataclass(frozen=True)
class RunSpec:
    """One container to start on each selected host: the one model of the `deploy run` flags and of
    a playbook's `run:` keys (its fields after `image`, in that order). A new run option is a field here.

    In a playbook's `run:` section the image is empty (it comes from `image:`) and the strings may
    still hold {{ templates }} until rendered for a host.
    """

    image: str = ""
    command: tuple[str, ...] = ()  # empty: the image's default CMD
    gpus: str | None = None
    volumes: tuple[str, ...] = ()  # "SRC:DST[:ro|rw]"
    env: tuple[tuple[str, str], ...] = ()
    env_file: str | None = None  # a file on the workstation; its contents never touch a command line
    shm_size: str | None = None
    ipc: str | None = None
    memory: str | None = None
    restart: str | None = None
    workdir: str | None = None
    name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    mkdirs: bool = False
    replace: bool = False
    place: str | None = None  # "any": on one host of the selection with enough free GPUs (runs.place)
    network: str | None = None  # docker --network; a multi-node job defaults to host
    nodes: int | None = None  # one job across the first N selected hosts (runs.multinode); None: one per host
    master_port: int | None = None  # rank 0's rendezvous port (MASTER_PORT), default 29500
    on_node_failure: str | None = None  # stop-all (default) or ignore


OPTION_KEYS = tuple(f.name for f in fields(RunSpec) if f.name != "image")  # a playbook's `run:` keys


def from_flags(image: str, *, env: Iterable[str] = (), labels: Iterable[str] = (),
               environ: Mapping[str, str] | None = None, **options: Any) -> RunSpec:
    """The RunSpec of `deploy run`'s flags: -e K[=V] and --label K=V parsed, the rest as given; validated."""
    pairs = []
    for item in labels:
        key, sep, val = item.partition("=")
        if not key or not sep:
            raise SpecError(f"--label {item!r}: expected KEY=VALUE")
        pairs.append((key, val))
    spec = RunSpec(image=image, env=tuple(parse_env(e, environ) for e in env), labels=tuple(pairs), **options)
    validate(spec)  # bad flags fail before the inventory or any host is touched
    return spec


@dataclass(frozen=True)
class Volume:
    """One -v value: a bind mount (absolute host path) or a named docker volume."""

    source: str
    target: str
    mode: str = ""  # e.g. "ro", "rw", "ro,z"

    @property
    def bind(self) -> bool:
        return self.source.startswith("/")

    @property
    def read_only(self) -> bool:
        return "ro" in self.mode.split(",")

    def __str__(self) -> str:
        return f"{self.source}:{self.target}" + (f":{self.mode}" if self.mode else "")


def parse_volume(value: str) -> Volume:
    """Parse SRC:DST[:MODE]; SRC is an absolute host path or a volume name, never a relative path."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise SpecError(f"-v {value!r}: expected SRC:DST[:ro|rw] (e.g. /data/imagenet:/data:ro)")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else ""
    if not src.startswith("/") and not NAME_RE.match(src):
        raise SpecError(
            f"-v {value!r}: host path {src!r} is relative",
            hint="give an absolute path on the host (e.g. /srv/data), or a volume name like `cache`",
        )
    if not dst.startswith("/") or dst == "/":
        raise SpecError(f"-v {value!r}: container path {dst!r} must be absolute and not /")
    items = mode.split(",") if mode else []
    bad = [m for m in items if m not in _MODES]
    if bad or len(items) != len(set(items)) or {"ro", "rw"} <= set(items):
        raise SpecError(f"-v {value!r}: invalid mode {mode!r}", hint="use ro or rw (optionally with z, Z, nocopy, propagation)")
    return Volume(src, dst, mode)


def parse_env(value: str, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Parse -e K=V; a bare K takes its value from environ (the workstation's), as docker does."""
    key, sep, val = value.partition("=")
    _check_key(key, f"-e {key}")
    if not sep:
        if environ is None or key not in environ:
            raise SpecError(f"-e {key}: {key} is not set in your environment", hint=f"give a value: -e {key}=VALUE")
        val = environ[key]
    if "\n" in val or "\0" in val:
        raise SpecError(f"-e {key}: the value holds a newline or NUL, which docker's env file cannot carry")
    return key, val


def parse_env_file(text: str, source: str, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Parse an env file the way `docker run --env-file` does (K=V lines, # comments, bare K from env)."""
    out: list[tuple[str, str]] = []
    for lineno, raw in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, val = line.partition("=")
        if not key:
            raise SpecError(f"{source}:{lineno}: no variable name before '='")
        if re.search(r"\s", key):
            raise SpecError(f"{source}:{lineno}: variable {key!r} contains whitespace")
        if not sep:
            if environ is not None and key in environ:
                out.append((key, environ[key]))
            continue
        out.append((key, val))
    return out


def _check_key(key: str, what: str) -> None:
    if not key or re.search(r"\s", key) or "\0" in key:
        raise SpecError(f"{what}: invalid variable name {key!r}")


def merge_env(file_env: Iterable[tuple[str, str]], flag_env: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """--env-file first, then -e; a later value for the same key wins (docker's order)."""
    merged: dict[str, str] = {}
    for key, val in [*file_env, *flag_env]:
        merged.pop(key, None)
        merged[key] = val
    return list(merged.items())


def env_file_text(env: Iterable[tuple[str, str]]) -> str:
    """The remote env file's contents (docker env-file format)."""
    return "".join(f"{k}={v}\n" for k, v in env)


def check_name(name: str) -> str:
    """A valid docker container name, or SpecError."""
    if not NAME_RE.match(name):
        raise SpecError(f"--name {name!r}: not a valid container name",
                        hint="use letters, digits, '_', '.', '-' (at least 2 chars, starting with a letter or digit)")
    return name


def default_name(image: str, now: datetime | None = None) -> str:
    """A name from the image's repository and the UTC time: trainer:v3 -> trainer-20261129-153012."""
    now = now or datetime.now(timezone.utc)
    ref = image.split("@", 1)[0]
    repo = ref.rsplit("/", 1)[-1].split(":", 1)[0]
    base = re.sub(r"[^a-zA-Z0-9_.-]+", "-", repo).strip("-._") or "run"
    return f"{base[:40]}-{now.strftime('%Y%m%d-%H%M%S')}"


def validate(spec: RunSpec) -> tuple[GpuRequest | None, tuple[Volume, ...]]:
    """Check every field of spec; returns the parsed GPU request and volumes. SpecError on bad input."""
    if not spec.image or spec.image.startswith("-") or any(c.isspace() for c in spec.image):
        raise SpecError(f"--image {spec.image!r}: not an image reference")
    if spec.name is not None:
        check_name(spec.name)
    gpus = parse_gpus(spec.gpus) if spec.gpus is not None else None
    volumes = tuple(parse_volume(v) for v in spec.volumes)
    targets = [v.target for v in volumes]
    dup = {t for t in targets if targets.count(t) > 1}
    if dup:
        raise SpecError(f"-v: container path {min(dup)} is mounted twice")
    for key, val in spec.env:
        _check_key(key, f"-e {key}")
        if "\n" in val or "\0" in val:
            raise SpecError(f"-e {key}: the value holds a newline or NUL, which docker's env file cannot carry")
    for flag, value in (("--shm-size", spec.shm_size), ("--memory", spec.memory)):
        if value is not None and not _SIZE_RE.match(value):
            raise SpecError(f"{flag} {value!r}: not a size", hint="e.g. 512m, 8g, 16GiB")
    if spec.restart is not None and not _RESTART_RE.match(spec.restart):
        raise SpecError(f"--restart {spec.restart!r}: unknown policy", hint="no, always, unless-stopped, on-failure[:N]")
    if spec.ipc is not None and not _IPC_RE.match(spec.ipc):
        raise SpecError(f"--ipc {spec.ipc!r}: unknown mode", hint="host, private, shareable, none, container:NAME")
    if spec.workdir is not None and not spec.workdir.startswith("/"):
        raise SpecError(f"--workdir {spec.workdir!r}: must be an absolute path in the container")
    for key, _ in spec.labels:
        if not key or "=" in key:
            raise SpecError(f"label {key!r}: invalid key")
    if spec.place is not None and spec.place not in PLACES:
        raise SpecError(f"place {spec.place!r}: unknown placement", hint="any (one host with free GPUs) or all")
    if spec.place == "any" and (gpus is None or gpus.device_ids is not None or gpus.count < 1):
        raise SpecError(f"--any places the container by how many GPUs it needs, but --gpus is {spec.gpus or 'not given'}",
                        hint="give a number of GPUs, e.g. --any --gpus 2 (run.gpus: 2 in a playbook)")
    if spec.network is not None and not _NETWORK_RE.match(spec.network):
        raise SpecError(f"--network {spec.network!r}: not a network name", hint="host, bridge, none or a network's name")
    _check_nodes(spec)
    return gpus, volumes


def _check_nodes(spec: RunSpec) -> None:
    if spec.nodes is not None and (isinstance(spec.nodes, bool) or not isinstance(spec.nodes, int) or spec.nodes < 1):
        raise SpecError(f"--nodes {spec.nodes!r}: must be a whole number of hosts, 1 or more")
    if spec.master_port is not None and (isinstance(spec.master_port, bool) or not isinstance(spec.master_port, int)
                                         or not 1 <= spec.master_port <= 65534):
        raise SpecError(f"--master-port {spec.master_port!r}: must be a TCP port from 1 to 65534",
                        hint="the port after it is the gang watcher's, so 65535 cannot be the master port")
    if spec.on_node_failure is not None and spec.on_node_failure not in NODE_FAILURE:
        raise SpecError(f"--on-node-failure {spec.on_node_failure!r}: unknown policy", hint="stop-all or ignore")
    if spec.nodes is None and (spec.master_port is not None or spec.on_node_failure is not None):
        raise SpecError("--master-port and --on-node-failure apply to a multi-node job only",
                        hint="add --nodes N (run.nodes in a playbook)")
    if spec.nodes is not None and spec.place == "any":
        raise SpecError("--nodes and --any do not go together: a multi-node job uses the first N hosts of --host",
                        hint="drop --any, and narrow --host to the hosts the job should use")
