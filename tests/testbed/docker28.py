"""Today's Docker (28.x) and containerd (2.x) for the testbed, from Debian unstable, never installed
system-wide: `apt-get download` through a private apt config, `dpkg -x` into the testbed's cache dir
(kept by `down`), so only the first `up` on a machine fetches anything."""
from __future__ import annotations

import json
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
    apt = p.cache / "docker28-apt"
    for sub in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial", "debs"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(SUITE + "\n")
    opts = apt_options(apt)
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
