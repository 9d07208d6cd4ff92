"""Pure argv builders for running and observing containers, and parsers of their output.

Nothing here does I/O: deployer.runs executes these argv tuples through a Session.
`docker` is the host's docker command as argv (Host.docker, e.g. ('sudo', 'docker')).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from deployer.commands import sections

MANAGED = "deployer.managed"
MANAGED_FILTER = f"label={MANAGED}=true"
GPU_QUERY = "index,name,uuid,memory.total,memory.used,utilization.gpu"
_ZERO_TIME = "0001-01-01T00:00:00Z"
_SECTION = sections.MARKER

Docker = Sequence[str]


class ContainerSpec(Protocol):
    """What run_argv reads of a run spec (deployer.runs.spec.RunSpec), so commands/ needs no runs/."""

    @property
    def image(self) -> str: ...
    @property
    def gpus(self) -> str | None: ...
    @property
    def shm_size(self) -> str | None: ...
    @property
    def ipc(self) -> str | None: ...
    @property
    def network(self) -> str | None: ...
    @property
    def memory(self) -> str | None: ...
    @property
    def restart(self) -> str | None: ...
    @property
    def workdir(self) -> str | None: ...
    @property
    def command(self) -> tuple[str, ...]: ...


class Mount(Protocol):
    """One -v value (deployer.runs.spec.Volume); its str() is what docker gets."""

    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def mode(self) -> str: ...


def run_argv(docker: Docker, spec: ContainerSpec, *, name: str, labels: Sequence[tuple[str, str]],
             volumes: Sequence[Mount], env_file: str | None = None, create: bool = False,
             extra: Sequence[str] = ()) -> tuple[str, ...]:
    """`docker run -d` for spec (`docker create` with CREATE: started later, all ranks of a job at
    once); env values travel only in env_file (never on the command line). EXTRA: more docker
    options, e.g. the --device a multi-node job passes through."""
    argv = [*docker, "create"] if create else [*docker, "run", "--detach"]
    argv += ["--name", name]
    for key, val in labels:
        argv += ["--label", f"{key}={val}"]
    if spec.gpus is not None:
        argv += ["--gpus", spec.gpus]  # verbatim: docker re-parses it into the same request
    for vol in volumes:
        argv += ["--volume", str(vol)]
    if env_file:
        argv += ["--env-file", env_file]
    for flag, value in (("--network", spec.network), ("--shm-size", spec.shm_size), ("--ipc", spec.ipc),
                        ("--memory", spec.memory), ("--restart", spec.restart), ("--workdir", spec.workdir)):
        if value is not None:
            argv += [flag, value]
    argv += [*extra, spec.image, *spec.command]
    return tuple(argv)


def image_inspect_argv(docker: Docker, image: str) -> tuple[str, ...]:
    return (*docker, "image", "inspect", "--", image)


def container_inspect_argv(docker: Docker, name: str) -> tuple[str, ...]:
    return (*docker, "container", "inspect", "--", name)


def stop_argv(docker: Docker, name: str, timeout: int | None = None) -> tuple[str, ...]:
    # -t works on every docker CLI (old ones lack --timeout).
    return (*docker, "stop", *(("-t", str(timeout)) if timeout is not None else ()), "--", name)


def rm_argv(docker: Docker, name: str, *, force: bool = False) -> tuple[str, ...]:
    return (*docker, "rm", *(("--force",) if force else ()), "--", name)


def start_argv(docker: Docker, name: str) -> tuple[str, ...]:
    """`docker start` of a created container; prints its name."""
    return (*docker, "start", "--", name)


def wait_argv(docker: Docker, name: str) -> tuple[str, ...]:
    return (*docker, "wait", "--", name)


def logs_argv(docker: Docker, name: str, *, follow: bool = False, tail: str | None = None,
              since: str | None = None, timestamps: bool = False) -> tuple[str, ...]:
    """`docker logs` with the container's stderr merged into stdout, so one stream keeps the order."""
    argv = [*docker, "logs"]
    if follow:
        argv.append("--follow")
    if timestamps:
        argv.append("--timestamps")
    if tail is not None:
        argv += ["--tail", tail]
    if since is not None:
        argv += ["--since", since]
    return ("sh", "-c", 'exec "$@" 2>&1', "sh", *argv, "--", name)


def write_file_argv(path: str) -> tuple[str, ...]:
    """Write stdin to path, readable by the owner only (for the env file)."""
    return ("sh", "-c", 'umask 077 && mkdir -p -- "${1%/*}" && cat > "$1"', "sh", path)


def remove_file_argv(path: str) -> tuple[str, ...]:
    return ("rm", "-f", "--", path)


def missing_paths_argv(paths: Sequence[str]) -> tuple[str, ...]:
    """Print each of paths that does not exist, one per line."""
    return ("sh", "-c", 'for p do [ -e "$p" ] || printf "%s\\n" "$p"; done', "sh", *paths)


def mkdirs_argv(paths: Sequence[str]) -> tuple[str, ...]:
    return ("mkdir", "-p", "--", *paths)


_STATUS_SCRIPT = f"""\
ids=$("$@" ps -aq --no-trunc --filter {MANAGED_FILTER}) || exit $?
echo '{_SECTION}containers'
if [ -n "$ids" ]; then "$@" inspect $ids 2>/dev/null || true; else echo '[]'; fi
echo '{_SECTION}gpus'
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu={GPU_QUERY} --format=csv,noheader,nounits 2>/dev/null || true
fi
"""
# The engine section is `docker info` as one JSON line (version, image store, root dir), then the
# free space at Docker's root dir (`df -Pk`); a failing info leaves it empty, never fails the script.
_ENGINE_SCRIPT = f"""\
echo '{_SECTION}engine'
info=$("$@" info --format '{{{{json .}}}}' 2>/dev/null) && printf '%s\\n' "$info"
echo '{_SECTION}disk'
root=$(printf '%s' "$info" | sed -n 's/.*"DockerRootDir":"\\([^"]*\\)".*/\\1/p')
[ -n "$root" ] && df -Pk "$root" 2>/dev/null
exit 0
"""


def status_argv(docker: Docker, *, engine: bool = False) -> tuple[str, ...]:
    """One round trip: deployer containers (docker inspect JSON) and nvidia-smi's GPU lines; with
    ENGINE also `docker info` JSON and the free space at Docker's root dir (slow on a busy daemon:
    only `status --json` shows them, not every refresh of the table or every placement)."""
    return ("sh", "-c", _STATUS_SCRIPT + (_ENGINE_SCRIPT if engine else "exit 0\n"), "sh", *docker)


def status_sections(stdout: str) -> dict[str, str]:
    """status_argv's output by section: containers, gpus, engine, disk (missing ones are absent)."""
    return {k: "\n".join(v) for k, v in sections.split(stdout).items()}


@dataclass(frozen=True)
class ContainerStatus:
    """One container as `docker inspect` describes it."""

    id: str
    name: str
    image: str
    image_id: str
    state: str  # created, running, paused, restarting, removing, exited, dead
    exit_code: int | None
    oom_killed: bool
    started_at: str | None
    finished_at: str | None
    restarts: int = 0
    gpus: tuple[str, ...] | None = None  # ("1", "3"), ("all",), or None without a GPU request
    labels: tuple[tuple[str, str], ...] = ()
    error: str = ""

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)

    @property
    def managed(self) -> bool:
        return self.label(MANAGED) == "true"


def parse_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 (nanosecond) timestamps; None for the zero time or junk."""
    if not value or value.startswith("0001-01-01"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value.strip())
    if not m:
        return None
    frac = (m.group(2) or ".0")[:7]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.fromisoformat(m.group(1) + frac.ljust(7, "0") + tz).astimezone(timezone.utc)
    except ValueError:
        return None


def _iso(value: str | None) -> str | None:
    t = parse_time(value)
    return t.isoformat(timespec="seconds").replace("+00:00", "Z") if t else None


def gpus_of(requests: Any) -> tuple[str, ...] | None:
    """GPUs a container was given, from HostConfig.DeviceRequests (as the daemon resolves them)."""
    if not requests:
        return None
    out: list[str] = []
    for req in requests:
        ids = req.get("DeviceIDs") or []
        count = int(req.get("Count") or 0)
        if ids:
            out += [str(i) for i in ids]
        elif count < 0:
            out.append("all")
        elif count > 0:
            out += [str(i) for i in range(count)]
    return tuple(out)


def parse_inspect(text: str) -> list[ContainerStatus]:
    """ContainerStatus for each object of `docker inspect`'s JSON array (empty for empty text)."""
    text = text.strip()
    if not text:
        return []
    data = json.loads(text)
    out = []
    for obj in data if isinstance(data, list) else [data]:
        state = obj.get("State") or {}
        config = obj.get("Config") or {}
        status = str(state.get("Status") or "unknown")
        finished = status in ("exited", "dead")
        out.append(ContainerStatus(
            id=str(obj.get("Id", "")),
            name=str(obj.get("Name", "")).lstrip("/"),
            image=str(config.get("Image", "")),
            image_id=str(obj.get("Image", "")),
            state=status,
            exit_code=int(state.get("ExitCode", 0)) if finished else None,
            oom_killed=bool(state.get("OOMKilled")),
            started_at=_iso(state.get("StartedAt")),
            finished_at=_iso(state.get("FinishedAt")) if finished else None,
            restarts=int(obj.get("RestartCount") or 0),
            gpus=gpus_of((obj.get("HostConfig") or {}).get("DeviceRequests")),
            labels=tuple(sorted((config.get("Labels") or {}).items())),
            error=str(state.get("Error") or ""),
        ))
    return out


def parse_image_inspect(text: str) -> tuple[str, dict[str, str]]:
    """(image id, labels) from `docker image inspect`."""
    data = json.loads(text)
    obj = data[0] if isinstance(data, list) else data
    labels = (obj.get("Config") or {}).get("Labels") or {}
    return str(obj.get("Id", "")), {str(k): str(v) for k, v in labels.items()}


def names_argv(docker: Docker, *, jobs: bool = False) -> tuple[str, ...]:
    """Names of every deployer-managed container, one per line; with JOBS, each followed by a tab
    and the hosts of the multi-node job it is a rank of (empty for a single-host container)."""
    fmt = '{{.Names}}\t{{.Label "deployer.job_hosts"}}' if jobs else "{{.Names}}"
    return (*docker, "ps", "-a", "--filter", MANAGED_FILTER, "--format", fmt)


def parse_names(stdout: str) -> dict[str, tuple[str, ...]]:
    """names_argv(jobs=True)'s output: name -> its job's hosts (empty: not a multi-node job)."""
    out: dict[str, tuple[str, ...]] = {}
    for line in stdout.splitlines():
        name, _, hosts = line.partition("\t")
        if name.strip():
            out[name.strip()] = tuple(h for h in hosts.strip().split(",") if h)
    return out
