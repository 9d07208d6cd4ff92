"""Which platform a playbook's image is built for: image.build.platform, else the selected hosts' architecture.

    choose(platforms, host_arches, workstation_arch) -> PlatformChoice   (pure; SpecError when hosts differ)
    host_arches(hosts) -> {host: arch or None}            (the facts cache, else `uname -m` over SSH, in parallel)

Hosts of two architectures need two images (or one multi-platform image, asked for with a list in
image.build.platform); a build for one of them would start on the others as `exec format error`, so
deployer refuses before building.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from deployer.errors import SpecError
from deployer.inventory.host import Host
from deployer.platforms import platform_of

ARCH_ARGV = ("uname", "-m")  # the facts probe's `arch` section: what the kernel runs
MULTI_HINT = "select hosts of one architecture with --host, or build one image for all of them: image.build.platform: [{}]"
EMULATION = ("building for {target} on a {local} workstation: RUN steps run under emulation (QEMU), often 5-20x "
             "slower, and need binfmt handlers on the workstation (docker run --privileged --rm "
             "tonistiigi/binfmt --install {arch}); a builder of that architecture avoids it")


@dataclass(frozen=True)
class PlatformChoice:
    """What to pass to the build as --platform (empty: the workstation's own), why, and what to warn about."""

    platforms: tuple[str, ...]
    reason: str
    warnings: tuple[str, ...] = ()


def choose(wanted: Sequence[str], host_arches: Mapping[str, str | None],
           workstation_arch: str | None) -> PlatformChoice:
    """The platforms to build for (pure). SpecError when hosts differ and no platform was set."""
    warnings: list[str] = []
    by_platform: dict[str, list[str]] = {}
    unknown: list[str] = []
    for host, arch in host_arches.items():
        platform = platform_of(arch)
        if platform is None:
            unknown.append(host if not arch else f"{host} ({arch})")
        else:
            by_platform.setdefault(platform, []).append(host)
    if wanted:
        platforms = tuple(wanted)
        reason = f"for {', '.join(platforms)} (image.build.platform)"
        for platform, hosts in by_platform.items():
            if platform not in platforms:
                warnings.append(f"{', '.join(hosts)}: {platform}, which image.build.platform does not include: "
                                "the image will not start there")
    elif len(by_platform) > 1:
        groups = "; ".join(f"{p}: {', '.join(h)}" for p, h in sorted(by_platform.items()))
        raise SpecError(f"the selected hosts have different architectures ({groups}); one image cannot run on all "
                        "of them, and image.build.platform does not ask for a multi-platform build",
                        hint=MULTI_HINT.format(", ".join(sorted(by_platform))))
    elif by_platform:
        (platform, hosts), = by_platform.items()
        platforms = (platform,)
        reason = f"for {platform}, the architecture of {_names(hosts)}"
    else:
        platforms = ()
        reason = "for this workstation's platform" + (" (no host's architecture is known)" if unknown else "")
    if unknown:
        warnings.append(f"architecture unknown for {', '.join(unknown)}: "
                        + (f"building {', '.join(platforms)} for them too" if platforms else "they may not run the image"))
    local = platform_of(workstation_arch)
    for platform in platforms:
        if local is not None and platform != local:
            warnings.append(EMULATION.format(target=platform, local=local, arch=platform.split("/", 1)[1]))
    return PlatformChoice(platforms, reason, tuple(warnings))


def _names(hosts: Sequence[str]) -> str:
    return ", ".join(hosts) if len(hosts) <= 4 else f"{', '.join(hosts[:3])} and {len(hosts) - 3} more"


def host_arches(hosts: Sequence[Host], *, parallel: int = 16, timeout: float = 10.0) -> dict[str, str | None]:
    """Each host's architecture: from the facts cache of `deploy inventory check`, or from the probe
    of the last ship there (a host's CPU does not change), else its `uname -m` asked over SSH in
    parallel (no retries: an unreachable host is reported by the ship)."""
    from deployer import factcache, layercache
    from deployer.commands.facts import parse_probe
    from deployer.fleet import for_each_host
    from deployer.ship.recall import probe_key
    from deployer.transport import connect

    def shipped(host: Host) -> str | None:
        probe = layercache.recalled_probe(host, probe_key(host), max_age_s=float("inf"))
        return (parse_probe(probe).arch or None) if probe is not None else None

    def ask(host: Host) -> str:
        with connect(host, timeout=timeout) as session:
            return session.run(ARCH_ARGV, timeout=max(30.0, timeout)).stdout.strip()

    cached = factcache.load()
    out: dict[str, str | None] = {h.name: str((cached.get(h.machine) or {}).get("arch") or "") or shipped(h)
                                  for h in hosts}
    unknown = [h for h in hosts if out[h.name] is None]
    for outcome in for_each_host(unknown, ask, parallel=parallel) if unknown else ():
        out[outcome.host.name] = outcome.value or None
    return out


Arches = Callable[[Sequence[Host]], Mapping[str, "str | None"]]


def decide(wanted: Sequence[str], hosts: Sequence[Host], workstation_arch: str | None,
           arches: Arches | None = None) -> PlatformChoice:
    """choose() with the hosts' architectures asked for only when image.build.platform does not say it."""
    if wanted or not hosts:
        return choose(wanted, {}, workstation_arch)
    return choose(wanted, (arches or host_arches)(hosts), workstation_arch)
