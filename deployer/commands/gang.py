"""Pure argv builders and parsers for multi-node jobs: the network probes preflight runs on each
node, and launching or ending the gang watcher (deployer/runs/gangwatch.py) on a node.

Nothing here does I/O. The probes need `ip` (iproute2) and python3 on the node.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from deployer.commands import sections

_SECTION = sections.MARKER

# One probe of a node before anything starts: python3 (the watcher and the port checks need it),
# /dev/infiniband, and, given $1, the route to that address (a name is resolved first).
_NODE_PROBE = f"""\
echo '{_SECTION}python'
command -v python3 2>/dev/null || true
echo '{_SECTION}infiniband'
[ -d /dev/infiniband ] && ls /dev/infiniband 2>/dev/null
echo '{_SECTION}route'
if [ -n "$1" ]; then
  addr=$(getent ahostsv4 "$1" 2>/dev/null | awk 'NR==1{{print $1}}')
  ip -o route get "${{addr:-$1}}" 2>&1 || true
fi
exit 0
"""

# Ports free (bind test) or reachable (a short TCP connect; "refused" still proves the path).
_PORTS_PY = """\
import socket, sys
mode, host, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
for p in sys.argv[4:]:
    if mode == "free":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", int(p)))
            print(p, "free")
        except OSError as e:
            print(p, "busy", e.strerror or e)
        finally:
            s.close()
    else:
        try:
            socket.create_connection((host, int(p)), timeout).close()
            print(p, "open")
        except ConnectionRefusedError:
            print(p, "refused")
        except OSError as e:
            print(p, "unreachable", str(e) or type(e).__name__)
"""

_NET_PROBE = f"""\
echo '{_SECTION}route'
ip -o route get "$1" 2>&1 || true
echo '{_SECTION}addr'
ip -o addr show to "$1" 2>/dev/null || true
echo '{_SECTION}ports'
[ -n "$3" ] && python3 -c "$5" free "$1" "$4" $3
echo '{_SECTION}reach'
[ -n "$2" ] && python3 -c "$5" reach "$1" "$4" $2
exit 0
"""


def node_probe_argv(route_to: str | None) -> tuple[str, ...]:
    """python3, /dev/infiniband and (with ROUTE_TO) the route to that address, in one round trip."""
    return ("sh", "-c", _NODE_PROBE, "sh", route_to or "")


def net_probe_argv(master: str, *, free: Sequence[int] = (), reach: Sequence[int] = (),
                   timeout: float = 3.0) -> tuple[str, ...]:
    """The route and interface to MASTER; which of FREE are free here; whether MASTER's REACH ports
    answer from here (each connect bounded by TIMEOUT)."""
    return ("sh", "-c", _NET_PROBE, "sh", master, " ".join(map(str, reach)), " ".join(map(str, free)),
            str(timeout), _PORTS_PY)


@dataclass(frozen=True)
class Route:
    """`ip -o route get` read: the interface and source address toward a destination."""

    dev: str | None
    src: str | None
    error: str | None = None


def parse_route(text: str) -> Route:
    """Route of `ip -o route get` output; an error line (no route, unknown host) as error."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    words = line.split()
    if not words or ("dev" not in words and "src" not in words):
        return Route(None, None, line.strip() or "no answer from `ip route get`")
    get = {words[i]: words[i + 1] for i in range(len(words) - 1) if words[i] in ("dev", "src")}
    return Route(get.get("dev"), get.get("src"))


@dataclass(frozen=True)
class NodeProbe:
    """What node_probe_argv found."""

    python: bool
    infiniband: bool
    route: Route | None  # None: no route asked


def parse_node_probe(stdout: str) -> NodeProbe:
    parts = sections.split(stdout)
    route = parts.get("route", [])
    return NodeProbe(python=any(ln.strip() for ln in parts.get("python", [])),
                     infiniband=any(ln.strip() for ln in parts.get("infiniband", [])),
                     route=parse_route("\n".join(route)) if route else None)


@dataclass(frozen=True)
class NetProbe:
    """What net_probe_argv found: route and interface toward the master, port states."""

    route: Route
    addr_dev: str | None  # the interface that holds the master's address (on rank 0)
    ports: dict[int, str]  # port -> "free" or "busy: why"
    reach: dict[int, str]  # port -> "open", "refused" or "unreachable: why"


def _port_lines(lines: Sequence[str]) -> dict[int, str]:
    out: dict[int, str] = {}
    for line in lines:
        port, _, rest = line.strip().partition(" ")
        if port.isdigit():
            state, _, why = rest.partition(" ")
            out[int(port)] = f"{state}: {why}" if why else state
    return out


def parse_net_probe(stdout: str) -> NetProbe:
    parts = sections.split(stdout)
    addr = next((ln.split() for ln in parts.get("addr", []) if ln.strip()), [])
    return NetProbe(parse_route("\n".join(parts.get("route", []))), addr[1].rstrip(":") if len(addr) > 1 else None,
                    _port_lines(parts.get("ports", [])), _port_lines(parts.get("reach", [])))


def image_identity(inspect_json: str) -> str:
    """What makes two hosts' copies of an image the same image, on either image store: its layers'
    diff IDs and creation time (the classic store's id is the config digest, the containerd store's
    the manifest's, so the ids differ for the very same image). A short hash of those."""
    data = json.loads(inspect_json)
    obj = data[0] if isinstance(data, list) else data
    layers = (obj.get("RootFS") or {}).get("Layers") or []
    key = json.dumps([obj.get("Created"), obj.get("Architecture"), layers])
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def gang_dir(staging_dir: str, name: str) -> str:
    """Where a job's watcher keeps its script, config, pid and log on a node."""
    return f"{staging_dir.rstrip('/')}/gang/{name}"


# Idempotent: a watcher already running for this config is left alone. setsid + nohup + every fd
# redirected, so it outlives the SSH session; $! is python's pid (setsid and nohup exec).
_LAUNCH = """\
d=$1
if [ -s "$d/pid" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null \
   && grep -q gangwatch "/proc/$(cat "$d/pid")/cmdline" 2>/dev/null; then echo running; exit 0; fi
setsid nohup python3 "$d/gangwatch.py" "$d/config.json" >>"$d/watch.log" 2>&1 </dev/null &
echo $! > "$d/pid"
echo started
"""

# Ends the watcher of a job name (before --replace starts a new one, or when a start is undone).
_END = """\
d=$1
if [ -s "$d/pid" ]; then
  pid=$(cat "$d/pid")
  grep -q gangwatch "/proc/$pid/cmdline" 2>/dev/null && kill "$pid" 2>/dev/null
  rm -f "$d/pid"
fi
exit 0
"""


def launch_watcher_argv(directory: str) -> tuple[str, ...]:
    """Start the watcher in DIRECTORY (gangwatch.py and config.json written there) unless it runs."""
    return ("sh", "-c", _LAUNCH, "sh", directory)


def end_watcher_argv(directory: str) -> tuple[str, ...]:
    """Stop the watcher in DIRECTORY, if one runs."""
    return ("sh", "-c", _END, "sh", directory)
