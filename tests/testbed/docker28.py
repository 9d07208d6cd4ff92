"""Today's Docker (28.x), containerd (2.x) and the buildx CLI plugin for the testbed, from Debian unstable,
never installed system-wide: `apt-get download` through a private apt config, `dpkg -x` into the testbed's
cache dir (kept by `down`), so only the first `up` on a machine fetches anything."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .config import Paths
from .sh import TestbedError, run

SUITE = "deb http://deb.debian.org/debian unstable main"
# Pinned versions; if the mirror has moved on, the current one of the same major is taken (and logged).
PINS = {"docker.io": "28.5.2+dfsg4-5", "containerd": "2.1.9+ds1-5"}
MAJORS = {"docker.io": "28.", "containerd": "2."}
STAMP = ".versions.json"


def bin_dirs(p: Paths) -> tuple[Path, Path]:
    """usr/bin (containerd, its shim, ctr) and usr/sbin (dockerd, docker-proxy) of the extracted tree."""
    return p.docker28 / "usr" / "bin", p.docker28 / "usr" / "sbin"


def dockerd(p: Paths) -> Path:
    return p.docker28 / "usr" / "sbin" / "dockerd"


def versions(p: Paths) -> dict[str, str] | None:
    """{package: version} of the extracted tree, or None when it is missing, incomplete or was fetched
    for other PINS (editing PINS makes the next `up` fetch again)."""
    try:
        stamp = json.loads((p.docker28 / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("pins") != PINS or not dockerd(p).exists():
        return None
    return dict(stamp["got"])


def apt_options(d: Path) -> list[str]:
    """apt options that keep every bit of apt state under d (pure): the system's sources, lists, cache
    and lock stay untouched; bookworm's keyring already holds the keys of the newer suites."""
    return ["-o", f"Dir::Etc={d}", "-o", f"Dir::Etc::SourceList={d / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={d / 'sources.list.d'}", "-o", f"Dir::Etc::PreferencesParts={d / 'preferences.d'}",
            "-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d / 'cache'}",
            "-o", "Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d", "-o", "Debug::NoLocking=1",
            "-o", "Dir::State::status=/var/lib/dpkg/status",
            # the download dir is root's; without this apt warns that its _apt sandbox user cannot write it
            "-o", "APT::Sandbox::User=root"]


def offered(madison: str) -> set[str]:
    """The versions `apt-cache madison` lists (pure): `pkg | version | source` per line."""
    return {cols[1].strip() for cols in (line.split("|") for line in madison.splitlines()) if len(cols) == 3}


def candidate(policy: str) -> str | None:
    """The 'Candidate:' version from `apt-cache policy` output of one package (pure)."""
    for line in policy.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate" and value.strip() and value.strip() != "(none)":
            return value.strip()
    return None


def ensure(p: Paths, log: Callable[[str], None]) -> dict[str, str]:
    """The extracted tree under <state>/cache/docker28, fetched the first time (~10 s). Returns versions."""
    have = versions(p)
    if have is not None:
        return have
    apt, opts = _private_apt(p, "debs")
    log("fetching Docker 28 + containerd 2 from Debian unstable (private apt config; first time only)")
    run(["apt-get", *opts, "-qq", "update"], timeout=300)
    want = dict(PINS)
    for pkg, pin in PINS.items():
        if pin not in offered(run(["apt-cache", *opts, "madison", pkg]).stdout.decode()):
            cand = candidate(run(["apt-cache", *opts, "policy", pkg]).stdout.decode())
            if cand is None or not cand.startswith(MAJORS[pkg]):
                raise TestbedError(f"Debian unstable has no {pkg} {MAJORS[pkg]}x (candidate {cand}); "
                                   f"update PINS in {__file__}")
            log(f"{pkg} {pin} is gone from the mirror; taking {cand}")
            want[pkg] = cand
    debs = apt / "debs"
    for old in debs.glob("*.deb"):
        old.unlink()
    run(["apt-get", *opts, "-qq", "download", *(f"{k}={v}" for k, v in want.items())], timeout=600,
        cwd=debs)
    # Extract next to the final place, then rename: an interrupted fetch never leaves half a tree in use.
    tmp = Path(tempfile.mkdtemp(prefix="docker28-", dir=p.cache))
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(tmp)], timeout=120)
    (tmp / STAMP).write_text(json.dumps({"pins": PINS, "got": want}) + "\n")
    shutil.rmtree(p.docker28, ignore_errors=True)
    tmp.rename(p.docker28)
    for deb in debs.glob("*.deb"):
        deb.unlink()  # 50 MB the extracted tree already holds
    log(f"Docker 28 ready in {p.docker28}: " + ", ".join(f"{k} {v}" for k, v in want.items()))
    return want


# BuildKit's client, the `docker buildx` CLI plugin: Debian unstable's is one binary that runs on bookworm.
# Kept apart from the Docker tree (its own dir and stamp), so adding it never refetches Docker.
BUILDX_PIN = ("docker-buildx", "0.29.1+ds1-4")
BUILDX_MAJOR = "0."
PLUGIN = Path("usr/libexec/docker/cli-plugins/docker-buildx")


def buildx_plugin(p: Paths) -> Path:
    """The extracted docker-buildx binary."""
    return p.buildx / PLUGIN


def buildx_version(p: Paths) -> str | None:
    """The docker-buildx package version in the cache, or None when missing or fetched for another pin."""
    try:
        stamp = json.loads((p.buildx / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("pin") != list(BUILDX_PIN) or not buildx_plugin(p).exists():
        return None
    return str(stamp["got"])


def expose_buildx(p: Paths) -> Path:
    """The workstation's Docker client config dir (DOCKER_CONFIG): `cli-plugins/docker-buildx` links to the
    cached plugin, so `docker buildx` works there without installing anything system-wide."""
    plugins = p.ws_docker_config / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-buildx"
    if not link.is_symlink() or os.readlink(link) != str(buildx_plugin(p)):
        tmp = plugins / ".docker-buildx.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(buildx_plugin(p))
        tmp.replace(link)
    return p.ws_docker_config


def ensure_buildx(p: Paths, log: Callable[[str], None]) -> str:
    """docker-buildx under <state>/cache/buildx, fetched the first time (~3 s), exposed through the
    workstation's DOCKER_CONFIG. Returns its version."""
    have = buildx_version(p)
    if have is None:
        have = _fetch_buildx(p, log)
    expose_buildx(p)
    return have


def _private_apt(p: Paths, debs: str) -> tuple[Path, list[str]]:
    """The private apt config for Debian unstable under the cache (DEBS: where the .debs go); its options."""
    apt = p.cache / "docker28-apt"
    for sub in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial", debs):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(SUITE + "\n")
    return apt, apt_options(apt)


def _fetch_buildx(p: Paths, log: Callable[[str], None]) -> str:
    apt, opts = _private_apt(p, "buildx-debs")
    log("fetching docker-buildx from Debian unstable (private apt config; first time only)")
    pkg, want = BUILDX_PIN
    if pin_missing(opts, pkg, want):
        run(["apt-get", *opts, "-qq", "update"], timeout=300)
    if pin_missing(opts, pkg, want):
        cand = candidate(run(["apt-cache", *opts, "policy", pkg]).stdout.decode())
        if cand is None or not cand.startswith(BUILDX_MAJOR):
            raise TestbedError(f"Debian unstable has no {pkg} {BUILDX_MAJOR}x (candidate {cand}); "
                               f"update BUILDX_PIN in {__file__}")
        log(f"{pkg} {want} is gone from the mirror; taking {cand}")
        want = cand
    debs = apt / "buildx-debs"
    for old in debs.glob("*.deb"):
        old.unlink()
    run(["apt-get", *opts, "-qq", "download", f"{pkg}={want}"], timeout=600, cwd=debs)
    tmp = Path(tempfile.mkdtemp(prefix="buildx-", dir=p.cache))
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(tmp)], timeout=120)
        deb.unlink()
    (tmp / STAMP).write_text(json.dumps({"pin": list(BUILDX_PIN), "got": want}) + "\n")
    old_tree = p.cache / f".buildx-old-{os.getpid()}"
    if p.buildx.exists():
        p.buildx.rename(old_tree)  # a running build keeps its open binary; the link is replaced below
    tmp.rename(p.buildx)
    shutil.rmtree(old_tree, ignore_errors=True)
    log(f"docker-buildx {want} ready in {p.buildx}")
    return want


def pin_missing(opts: list[str], pkg: str, version: str) -> bool:
    """True when the private apt lists do not offer pkg=version (empty lists: before the first update)."""
    done = run(["apt-cache", *opts, "madison", pkg], check=False)
    return version not in offered(done.stdout.decode())
