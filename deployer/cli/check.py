"""`deploy inventory check` and `deploy inventory trust` (wiring only)."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from deployer.cli import output
from deployer.cli.app import finish
from deployer.cli.context import AppContext
from deployer.cli.inventory import host_option, inventory
from deployer.errors import HostError, SpecError
from deployer.facts import CheckReport, check_hosts
from deployer.sizes import human_bytes

if TYPE_CHECKING:
    from deployer.transport.trust import Decision


def _ctx() -> AppContext:
    return click.get_current_context().find_object(AppContext) or AppContext()


def _size(n: int | None) -> str:
    return "?" if n is None else human_bytes(n, binary=True)


def _row(r: CheckReport) -> list[str]:
    f = r.facts
    if f is None:
        return [r.name, r.ssh, r.host_key, "", "", "", "", "", ""]
    d = f.docker
    gpus = ", ".join(f"{g.index}:{g.name} ({g.memory_total_mib} MiB)" for g in f.gpus) or "-"
    registry = {True: "reachable", False: "unreachable", None: "-"}[f.registry_reachable]
    return [
        r.name, r.ssh, r.host_key,
        f"{d.server_version} (API {d.api_version})" if d else "MISSING",
        f"{d.storage_driver}/{d.image_store}" if d else "",
        ("yes" if d.gpu_runtime else "no") if d else "",
        gpus,
        f"{_size(f.disk_free_bytes)} / {_size(f.docker_disk_free_bytes)}",
        registry,
    ]


def _checks(pattern: str, parallel: int, timeout: float) -> list[CheckReport]:
    hosts = _ctx().select(pattern)
    if output.is_tty():
        with output.stderr.status(f"checking {len(hosts)} host{'s' if len(hosts) != 1 else ''} ..."):
            return check_hosts(hosts, parallel=parallel, timeout=timeout)
    output.info(f"checking {len(hosts)} host{'s' if len(hosts) != 1 else ''}")
    return check_hosts(hosts, parallel=parallel, timeout=timeout,
                       on_done=lambda r: output.info(f"{r.name}: {'ok' if r.ok else 'FAILED'} ({r.seconds:.1f}s)"))


@inventory.command("check")
@click.argument("pattern_arg", metavar="[PATTERN]", required=False)
@host_option
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON array of {name, ok, error, docker: {server_version, api_version, storage_driver, "
                   "image_store, gpu_runtime}, gpus, disk_free_bytes, registry_reachable}.")
@click.option("--parallel", "-p", default=16, show_default=True, type=click.IntRange(1, 256),
              help="How many hosts to probe at once.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.5, 600),
              help="Seconds to wait for each host to answer before calling it unreachable.")
def check_cmd(pattern_arg: str | None, pattern: str, as_json: bool, parallel: int, timeout: float) -> None:
    """Probe hosts: SSH, host key, Docker, storage, GPU runtime, GPUs, disk, registry.

    Each selected host is reached over SSH (strict host keys) and probed with one
    command. Results are cached and shown by `deploy inventory list`. Exits 1 if
    any host failed (unreachable, refused, host key problem, Docker missing).

    \b
    Examples:
      deploy inventory check                   # every host
      deploy inventory check gpus --json       # machine-readable
      deploy inventory check -H 'gpu*' --timeout 3 --parallel 32
    """
    reports = _checks(pattern_arg or pattern, parallel, timeout)
    if as_json:
        output.emit_json([r.to_json() for r in reports])
    else:
        output.table(["HOST", "SSH", "HOST KEY", "DOCKER", "STORE", "GPU RT", "GPUS", "FREE (STAGING / DOCKER)",
                      "REGISTRY"], [_row(r) for r in reports])
        for r in reports:
            if r.error:
                output.info(f"{r.name}: {r.error}")
            for note in r.notes:
                output.warn(f"{r.name}: {note}")
    failed = [r.name for r in reports if not r.ok]
    if failed and not as_json:
        output.info(f"{len(failed)} of {len(reports)} hosts failed: {', '.join(failed)}")
    finish(failed)


def _confirm(decision: Decision, yes: bool) -> bool:
    """Show what trusting the key means; ask (unless --yes) on a terminal only."""
    (output.warn if decision.warning else output.info)(decision.message)
    if yes:
        return True
    if not sys.stdin.isatty():
        raise SpecError("not confirming on a non-interactive stdin; verify the fingerprint, then re-run with --yes")
    return click.confirm(decision.question or "Record it?", default=False, err=True)


@inventory.command("trust")
@click.argument("host_pattern", metavar="HOST")
@click.option("--yes", "-y", is_flag=True, help="Record without asking (after verifying the fingerprint yourself).")
@click.option("--replace", is_flag=True, help="Replace a DIFFERENT key already recorded (asks unless --yes).")
@click.option("--hash/--no-hash", "hashed", default=None,
              help="Store host names hashed like `ssh-keyscan -H` (default: like the existing file).")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.5, 600),
              help="Seconds to wait for the host.")
def trust_cmd(host_pattern: str, yes: bool, replace: bool, hashed: bool | None, timeout: float) -> None:
    """Fetch a host's SSH key, show its fingerprint, record it in known_hosts.

    HOST is an inventory host (or a pattern). The key goes into the host's
    known_hosts file (deploy_known_hosts, default ~/.ssh/known_hosts), keeping
    what is there. Jump hosts on the way are trusted first. A DIFFERENT key
    already recorded is refused unless --replace.

    \b
    Examples:
      deploy inventory trust gpu01
      deploy inventory trust gpu01 --yes            # scripted, fingerprint checked elsewhere
      deploy inventory trust gpu01 --replace        # after a verified reinstall
    """
    from deployer.transport.trust import trust_host

    hosts = _ctx().select(host_pattern)
    declined, failed = [], []
    for host in hosts:
        try:
            if not trust_host(host, replace=replace, hashed=hashed, timeout=timeout, say=output.info,
                              confirm=lambda d: _confirm(d, yes)):
                declined.append(host.name)
        except HostError as exc:
            if len(hosts) == 1:
                raise
            output.info(f"error: {exc}")
            failed.append(host.name)
    if declined:
        output.info(f"not trusted: {', '.join(declined)}")
    finish(declined + failed)
