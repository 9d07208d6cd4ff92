"""Gather a host's facts over an open session, and the per-host report of `deploy inventory check`.

The I/O half of deployer.commands.facts (which builds the probe and parses its output).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from deployer.commands.facts import DockerFacts, Gpu, HostFacts, parse_probe, probe_argv
from deployer.errors import CommandError, DeployError, HostKeyError
from deployer.inventory.host import Host
from deployer.transport.result import Result
from deployer.transport.session import Session

PROBE_TIMEOUT_S = 60.0

__all__ = ["CheckReport", "DockerFacts", "Gpu", "HostFacts", "check_host", "check_hosts", "gather", "read_probe"]


def gather(session: Session, host: Host, *, timeout: float = PROBE_TIMEOUT_S, gpus: bool = True,
           origin: str = "") -> HostFacts:
    """Run the one probe command on the host and parse it (without asking nvidia-smi unless GPUS;
    checking that it reaches the ORIGIN registry if given). CommandError if the probe itself failed."""
    return read_probe(host.name, session.run(probe_argv(host, gpus=gpus, origin=origin), check=False,
                                             timeout=timeout))


def read_probe(host: str, result: Result) -> HostFacts:
    """The facts in the probe's RESULT (it may have run in a batch); CommandError if the probe failed."""
    if result.exited != 0 and "@@deployer " not in result.stdout:
        raise CommandError(host, result, what="probing the host failed",
                           hint="does the host have a POSIX sh? run `deploy inventory check -v` for details")
    return parse_probe(result.stdout)


@dataclass(frozen=True)
class CheckReport:
    """One host's check: reachability, host key status, facts (when reached), and problems found."""

    name: str
    ok: bool
    error: str | None
    ssh: str  # "ok" | "unreachable" | "auth failed" | "host key" | "failed"
    host_key: str  # "trusted" | "unknown" | "changed" | "revoked" | "?"
    facts: HostFacts | None
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The `--json` object: issue 3's keys, plus the image store (issue 11)."""
        f = self.facts
        docker = None
        if f is not None and f.docker is not None:
            d = f.docker
            docker = {"server_version": d.server_version, "api_version": d.api_version,
                      "storage_driver": d.storage_driver, "image_store": d.image_store,
                      "gpu_runtime": d.gpu_runtime}
        gpus = [{"index": g.index, "name": g.name, "uuid": g.uuid, "memory_total_mib": g.memory_total_mib}
                for g in (f.gpus if f else ())]
        return {"name": self.name, "ok": self.ok, "error": self.error, "docker": docker, "gpus": gpus,
                "disk_free_bytes": f.disk_free_bytes if f else None,
                "registry_reachable": f.registry_reachable if f else None}

    def to_cache(self) -> dict[str, Any]:
        """What the facts cache keeps (shown by `deploy inventory list`)."""
        base: dict[str, Any] = {"ok": self.ok, "error": self.error, "ssh": self.ssh, "host_key": self.host_key,
                                "notes": list(self.notes)}
        if self.facts is not None:
            base.update(self.facts.to_dict())
        return base


def _ssh_state(exc: DeployError) -> tuple[str, str]:
    from deployer.errors import AuthError, ConnectError

    if isinstance(exc, HostKeyError):
        return "host key", exc.state
    if isinstance(exc, AuthError):
        return "auth failed", "trusted"
    if isinstance(exc, ConnectError):
        return "unreachable", "?"
    return "failed", "?"


def notes_for(host: Host, facts: HostFacts) -> tuple[str, ...]:
    """Problems a user should know about before shipping to this host (pure)."""
    notes: list[str] = []
    if facts.gpus and facts.docker is not None and not facts.docker.gpu_runtime:
        notes.append("GPUs present but no NVIDIA container runtime: `docker run --gpus` will fail")
    if host.registry and facts.registry_reachable is False and host.via == "registry":
        notes.append(f"deploy_via is registry but {host.registry} is unreachable from the host")
    if host.registry and facts.registry_reachable is None:
        notes.append("could not test registry reachability (no curl, wget, bash or python3)")
    return tuple(notes)


def check_host(host: Host, *, timeout: float = 10.0, probe_timeout: float | None = None) -> CheckReport:
    """Connect (strict host key, no retries: report fast), probe, and judge one host."""
    from deployer.transport.ssh import connect

    start = time.monotonic()
    try:
        with connect(host, timeout=timeout) as session:
            facts = gather(session, host, timeout=probe_timeout or max(30.0, 3 * timeout))
    except DeployError as exc:
        ssh, key = _ssh_state(exc)
        if ssh == "failed":  # connected fine; the probe broke
            ssh, key = "ok", "trusted"
        reason = getattr(exc, "reason", None) or str(exc)
        if exc.hint:
            reason = f"{reason} (hint: {exc.hint})"
        return CheckReport(host.name, False, reason, ssh, key, None, seconds=time.monotonic() - start)
    error = None
    if facts.docker is None:
        error = f"docker: {facts.docker_error or 'not available'}"
    return CheckReport(host.name, error is None, error, "ok", "trusted", facts, notes_for(host, facts),
                       time.monotonic() - start)


def check_hosts(hosts: Sequence[Host], *, parallel: int = 16, timeout: float = 10.0,
                on_done: Callable[[CheckReport], None] | None = None) -> list[CheckReport]:
    """`deploy inventory check`: every host checked in parallel (one report each, in host order), and
    each report kept in the facts cache that `deploy inventory list` shows."""
    from deployer import factcache
    from deployer.fleet import for_each_host

    def work(host: Host) -> CheckReport:
        report = check_host(host, timeout=timeout)
        if on_done is not None:
            on_done(report)
        return report

    outcomes = for_each_host(hosts, work, parallel)
    reports = [o.value if o.value is not None  # else a bug inside check_host: still one row per host
               else CheckReport(o.host.name, False, str(o.error), "failed", "?", None)
               for o in outcomes]
    for o, r in zip(outcomes, reports):
        factcache.save(o.host, r.to_cache())
    return reports
