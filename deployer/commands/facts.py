"""Host facts, pure: the one probe command and the parsers of its output.

probe_argv(host) runs a constant POSIX sh script; every variable part (staging dir, registry,
the docker command) is a positional argument, never interpolated into the script. The script
prints sections `@@deployer NAME` ... `@@rc N`; parse_probe() turns them into HostFacts.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from deployer.commands.sections import json_object
from deployer.inventory.host import Host
from deployer.stores import image_store

MARK = "@@deployer "
GPU_QUERY = "index,name,uuid,memory.total,memory.used,utilization.gpu,driver_version"
GPU_TOOLS = ("nvidia-container-runtime-hook", "nvidia-container-runtime", "nvidia-ctk")
DECOMPRESSORS = ("zstd", "unpigz", "pigz", "gzip", "xz", "bzip2")

# The registry check must connect within 0.5 s (curl; whole seconds for tools that take no
# fractions) and answer within 3 s. An air-gapped site often drops packets rather than refusing
# them, and then only the connect timeout ends the wait. 0.5 s is far above a terrestrial round
# trip plus a DNS lookup; a lost SYN is resent only after 1 s, so a longer wait would rarely save
# a registry either. The check runs on the left of a pipe: it waits while the right side probes
# everything else, and its line is read from the pipe last.
# The origin (a registry a ship's base image came from, issue 19) is checked the same way, after
# the registry; each check's answer is one line.
# $1 staging dir, $2 registry (may be empty), $3 "gpus" to ask nvidia-smi (slow on a server whose
# driver is not kept loaded: a ship does not need it), $4 origin registry (may be empty), $5
# "version" to run `docker version` (the API version and the client's: `deploy inventory check`
# shows them; a ship needs only what `docker info` says, and each docker call starts the CLI),
# $6... the docker command (e.g. sudo docker).
# `docker info` (slow on a busy daemon) runs once: the docker root for df comes from its JSON.
PROBE_SCRIPT = r"""
staging=$1; gpus=$3; origin=$4; reg=$2; version=$5; shift 5
sec() { printf '\n@@deployer %s\n' "$1"; }
end() { printf '\n@@rc %s\n' "$1"; }
registry() {
  reg=$1
  if [ -z "$reg" ]; then echo "none"; return; fi
  case $reg in *:*) url="http://$reg/v2/"; h=${reg%:*}; port=${reg##*:};; *) url="https://$reg/v2/"; h=$reg; port=443;; esac
  if command -v curl >/dev/null 2>&1; then
    code=$(curl -sS -k --connect-timeout 0.5 -m 3 -o /dev/null -w '%{http_code}' "$url" 2>&1); rc=$?
    # curl < 7.32 takes whole seconds only, and exits 2 on a fraction
    [ $rc = 2 ] && { code=$(curl -sS -k --connect-timeout 1 -m 3 -o /dev/null -w '%{http_code}' "$url" 2>&1); rc=$?; }
    echo "curl $rc $code"
  elif command -v wget >/dev/null 2>&1; then
    out=$(wget -q -T 1 -t 1 -O /dev/null "$url" 2>&1); rc=$?
    echo "wget $rc $out"
  elif command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then
    timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$h" "$port" 2>/dev/null; echo "bash $?"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)' "$h" "$port" \
      2>/dev/null; echo "python3 $?"
  else echo "unknown"; fi
}
{ registry "$reg" 2>&1 | tr '\n' ' '; echo; registry "$origin" 2>&1 | tr '\n' ' '; echo; } | {
exec 3<&0 </dev/null
sec arch; uname -m 2>&1; end $?
[ "$version" != version ] || { sec docker_version; "$@" version --format '{{json .}}' 2>&1; end $?; }
sec docker_info; info=$("$@" info --format '{{json .}}' 2>&1); rc=$?; printf '%s\n' "$info"; end $rc
if [ "$gpus" = gpus ]; then
sec gpu_tools
for t in nvidia-container-runtime-hook nvidia-container-runtime nvidia-ctk; do
  p=$(command -v "$t" 2>/dev/null) || { for d in /usr/bin /usr/local/bin /usr/sbin /sbin; do
    [ -x "$d/$t" ] && p=$d/$t && break; done; }
  [ -n "$p" ] && echo "$t $p"; p=
done; end 0
sec nvidia_smi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,driver_version \
    --format=csv,noheader,nounits 2>&1; end $?
else echo "nvidia-smi: not found"; end 127; fi
fi
sec df_staging
d=$staging; while [ ! -e "$d" ] && [ "$d" != / ] && [ "$d" != . ]; do d=$(dirname "$d"); done
df -Pk "$d" 2>&1; end $?
sec df_docker
[ $rc = 0 ] && root=$(printf '%s' "$info" | sed -n 's/.*"DockerRootDir":"\([^"]*\)".*/\1/p')
if [ -n "$root" ]; then df -Pk "$root" 2>&1; end $?; else echo "docker root unknown"; end 1; fi
sec decompressors
for t in zstd unpigz pigz gzip xz bzip2; do command -v "$t" >/dev/null 2>&1 && echo "$t"; done; end 0
sec registry; IFS= read -r line <&3; printf '%s\n' "$line"; end 0
sec origin; IFS= read -r line <&3; printf '%s\n' "$line"; end 0
}
"""


def probe_argv(host: Host, *, gpus: bool = True, origin: str = "", versions: bool = True) -> tuple[str, ...]:
    """The single remote command that gathers every fact about a host (its GPUs only if asked:
    without them the facts say nothing about GPUs; whether it reaches ORIGIN, a registry's
    `host[:port]`, only if given; the Docker API and client versions only with VERSIONS)."""
    return ("sh", "-c", PROBE_SCRIPT, "sh", host.staging_dir, host.registry or "", "gpus" if gpus else "",
            origin, "version" if versions else "", *host.docker)


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it."""

    index: int
    name: str
    uuid: str
    memory_total_mib: int
    memory_used_mib: int | None = None
    utilization_pct: int | None = None
    driver_version: str | None = None


@dataclass(frozen=True)
class DockerFacts:
    """The remote Docker engine."""

    server_version: str
    api_version: str
    storage_driver: str
    image_store: str  # "overlay2" (classic graph driver name) or "containerd" (snapshotter)
    docker_root: str
    gpu_runtime: bool
    engine_id: str = ""  # `docker info`'s ID: a new one when Docker is installed anew


@dataclass(frozen=True)
class HostFacts:
    """Everything deployer needs to know about a host before shipping or running."""

    docker: DockerFacts | None
    gpus: tuple[Gpu, ...] = ()
    disk_free_bytes: int | None = None  # at the staging dir (nearest existing parent)
    docker_disk_free_bytes: int | None = None  # at Docker's root dir
    registry_reachable: bool | None = None  # None: no registry configured, or no way to test
    decompressors: frozenset[str] = frozenset()
    arch: str = ""
    docker_error: str | None = None
    gpu_error: str | None = None
    gpu_tools: tuple[str, ...] = ()
    registry_detail: str = ""
    client_version: str | None = None
    origin_reachable: bool | None = None  # the origin registry the probe was asked about (None: not asked)
    origin_detail: str = ""

    @property
    def image_store(self) -> str:
        """The host Docker's image store ("overlay2" or "containerd"); "" without a Docker."""
        return self.docker.image_store if self.docker is not None else ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (frozensets become sorted lists)."""
        d = asdict(self)
        d["decompressors"] = sorted(self.decompressors)
        d["gpus"] = [asdict(g) for g in self.gpus]
        d["gpu_tools"] = list(self.gpu_tools)
        return d


def split_sections(stdout: str) -> dict[str, tuple[str, int | None]]:
    """`@@deployer NAME` ... `@@rc N` blocks -> {name: (text, rc)}."""
    out: dict[str, tuple[str, int | None]] = {}
    name: str | None = None
    lines: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(MARK):
            name, lines = line[len(MARK):].strip(), []
        elif line.startswith("@@rc ") and name is not None:
            rc = line[5:].strip()
            out[name] = ("\n".join(lines).strip("\n"), int(rc) if rc.lstrip("-").isdigit() else None)
            name = None
        elif name is not None:
            lines.append(line)
    if name is not None:  # cut short: keep what arrived
        out[name] = ("\n".join(lines).strip("\n"), None)
    return out


def _non_json(text: str) -> str:
    return "\n".join(ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("{")).strip()


def parse_docker(version_text: str, version_rc: int | None, info_text: str, info_rc: int | None,
                 gpu_tools: tuple[str, ...]) -> tuple[DockerFacts | None, str | None, str | None]:
    """(DockerFacts or None, error text, client version) from `docker version`/`docker info` JSON.

    Without `docker version` (VERSION_RC None: a probe without versions) the server's version
    comes from `docker info` and the API version is unknown ("")."""
    version = json_object(version_text) or {}
    info = json_object(info_text) or {}
    client = (version.get("Client") or {}).get("Version") or (info.get("ClientInfo") or {}).get("Version")
    server = version.get("Server") or {}
    asked = version_rc is not None
    if (asked and (version_rc != 0 or not server)) or info_rc != 0 or not info:
        err = _non_json(version_text) or _non_json(info_text) or "docker did not answer"
        if 127 in (version_rc, info_rc) or "not found" in err:
            err = f"docker is not installed or not on PATH ({err})"
        return None, err, client
    runtimes = info.get("Runtimes") or {}
    gpu_runtime = bool(gpu_tools) or any("nvidia" in str(k).lower() for k in runtimes)
    facts = DockerFacts(
        server_version=str(server.get("Version") or info.get("ServerVersion") or ""),
        api_version=str(server.get("ApiVersion") or ""),
        storage_driver=str(info.get("Driver") or ""),
        image_store=image_store(info),
        docker_root=str(info.get("DockerRootDir") or ""),
        gpu_runtime=gpu_runtime,
        engine_id=str(info.get("ID") or ""),
    )
    return facts, None, client


_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def _int(text: str) -> int | None:
    m = _NUM.search(text)
    return int(float(m.group())) if m else None


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """Parse `nvidia-smi --query-gpu=...` CSV (GPU_QUERY order), with or without header and units."""
    gpus: list[Gpu] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue  # header, blank, or an error line
        extra = fields[4:] + [""] * 3
        gpus.append(Gpu(
            index=int(fields[0]),
            name=fields[1],
            uuid=fields[2],
            memory_total_mib=_int(fields[3]) or 0,
            memory_used_mib=_int(extra[0]),
            utilization_pct=_int(extra[1]),
            driver_version=extra[2] or None,
        ))
    return tuple(gpus)


def parse_df(text: str) -> int | None:
    """Free bytes from `df -Pk PATH` (the last data line's Available column, in KiB)."""
    for line in reversed(text.splitlines()):
        fields = line.split()
        if len(fields) >= 6 and fields[3].isdigit():
            return int(fields[3]) * 1024
    return None


def parse_registry(text: str) -> tuple[bool | None, str]:
    """(reachable, detail) from the registry section. Any HTTP answer counts as reachable."""
    words = text.split()
    if not words or words[0] in ("none", "unknown"):
        return None, (words[0] if words else "unknown")
    tool, rc = words[0], _int(words[1]) if len(words) > 1 else None
    rest = " ".join(words[2:])
    if tool == "curl":
        code = words[-1] if len(words) > 2 else "000"
        ok = code.isdigit() and code != "000"
        why = " ".join(words[2:-1]).removeprefix("curl: ") or "no answer"
        return ok, f"curl: HTTP {code}" if ok else f"curl: {why}"
    if tool == "wget":
        # wget exits 8 when the server answered with an error status (e.g. 401): still reachable.
        return rc in (0, 8), f"wget: exit {rc}{' ' + rest if rest else ''}"
    return rc == 0, f"{tool}: {'connected' if rc == 0 else 'cannot connect'}"


def parse_probe(stdout: str) -> HostFacts:
    """The probe's output -> HostFacts (sections that are missing leave their facts unknown)."""
    sec = split_sections(stdout)

    def text(name: str) -> str:
        return sec.get(name, ("", None))[0]

    tools = tuple(ln.split()[0] for ln in text("gpu_tools").splitlines() if ln.strip())
    docker, docker_error, client = parse_docker(*sec.get("docker_version", ("", None)),
                                                *sec.get("docker_info", ("", None)), tools)
    smi_text, smi_rc = sec.get("nvidia_smi", ("", None))
    gpus = parse_nvidia_smi(smi_text) if smi_rc == 0 else ()
    gpu_error = None if smi_rc == 0 else (smi_text.strip() or "nvidia-smi did not run")
    reachable, detail = parse_registry(text("registry"))
    origin_reachable, origin_detail = parse_registry(text("origin"))
    return HostFacts(
        docker=docker,
        gpus=gpus,
        disk_free_bytes=parse_df(text("df_staging")),
        docker_disk_free_bytes=parse_df(text("df_docker")),
        registry_reachable=reachable,
        decompressors=frozenset(ln.strip() for ln in text("decompressors").splitlines()
                                if ln.strip() in DECOMPRESSORS),
        arch=text("arch").strip(),
        docker_error=docker_error,
        gpu_error=gpu_error,
        gpu_tools=tools,
        registry_detail=detail,
        origin_reachable=origin_reachable,
        origin_detail=origin_detail,
        client_version=client,
    )


__all__ = ["DockerFacts", "Gpu", "HostFacts", "parse_nvidia_smi", "parse_probe", "probe_argv"]
