"""`deploy inventory check` and `deploy inventory trust` (wiring only)."""
from __future__ import annotations

import sys

import click

from deployer import factcache
from deployer.cli import output
from deployer.cli.context import AppContext
from deployer.cli.inventory import host_option, inventory
from deployer.errors import DeployError, HostError, HostKeyError, SpecError
from deployer.facts import CheckReport, check_host
from deployer.fleet import for_each_host
from deployer.inventory.host import Host
from deployer.transport import hostkeys, trust
from deployer.transport.config import load_ssh_config, resolve


def _ctx() -> AppContext:
    return click.get_current_context().find_object(AppContext) or AppContext()


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


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


def _run_checks(hosts: list[Host], parallel: int, timeout: float) -> list[CheckReport]:
    def work(h: Host) -> CheckReport:
        report = check_host(h, timeout=timeout)
        if not output.is_tty():
            output.info(f"{h.name}: {'ok' if report.ok else 'FAILED'} ({report.seconds:.1f}s)")
        return report

    label = f"checking {len(hosts)} host{'s' if len(hosts) != 1 else ''}"
    if output.is_tty():
        with output.stderr.status(label + " ..."):
            outcomes = for_each_host(hosts, work, parallel)
    else:
        output.info(label)
        outcomes = for_each_host(hosts, work, parallel)
    reports = []
    for o in outcomes:
        if o.value is not None:
            reports.append(o.value)
        else:  # a bug inside check_host: still one row per host
            reports.append(CheckReport(o.host.name, False, str(o.error), "failed", "?", None))
    return reports


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
    hosts = _ctx().select(pattern_arg or pattern)
    reports = _run_checks(hosts, parallel, timeout)
    for r in reports:
        factcache.save(r.name, r.to_cache())
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
    if failed:
        if not as_json:
            output.info(f"{len(failed)} of {len(reports)} hosts failed: {', '.join(failed)}")
        click.get_current_context().exit(1)


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise SpecError("not confirming on a non-interactive stdin; verify the fingerprint, then re-run with --yes")
    return click.confirm(question, default=False, err=True)


def _trust_one(host: Host, *, yes: bool, replace: bool, hashed: bool | None, timeout: float) -> bool:
    """Trust every hop to the host (jumps first). False when the user declined."""
    target = resolve(host, load_ssh_config())
    for spec in trust.hops(target):
        o = trust.offer(host, spec=spec, timeout=timeout)
        what = host.name if spec is target else f"jump host {spec.name or spec.address}"
        label = f"{what} ({spec.address}:{spec.port})"
        state = o.status.state
        if state == "trusted":
            output.info(f"{label}: already trusted: {hostkeys.describe(o.key)}")
            continue
        if state == "revoked":
            raise HostKeyError(host.name, f"{label} offers a key REVOKED in {spec.known_hosts}: {hostkeys.describe(o.key)}")
        if state == "changed":
            old = "\n".join(f"    recorded: {hostkeys.describe(e.key)}  ({spec.known_hosts}:{e.lineno})"
                            for e in o.status.expected)
            msg = (f"WARNING: HOST KEY OF {label} HAS CHANGED. This can be a man-in-the-middle attack, "
                   f"or the host was reinstalled.\n{old}\n    offered:  {hostkeys.describe(o.key)}")
            if not replace:
                raise HostKeyError(host.name, msg + f"\n  {spec.known_hosts} was not modified.",
                                   hint="verify the offered fingerprint on the host's console "
                                        "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then add --replace")
            output.warn(msg)
            if not _confirm(f"Replace the recorded key of {label} in {spec.known_hosts}?", yes):
                return False
        else:
            output.info(f"{label} offers {hostkeys.describe(o.key)}")
            if not _confirm(f"Trust it and record it in {spec.known_hosts}?", yes):
                return False
        trust.record(o, hashed=hashed, replace=state == "changed")
        output.info(f"{label}: recorded {o.key.get_name()} key as {', '.join(o.names)} in {spec.known_hosts}")
    return True


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
    hosts = _ctx().select(host_pattern)
    declined, failed = [], []
    for host in hosts:
        try:
            if not _trust_one(host, yes=yes, replace=replace, hashed=hashed, timeout=timeout):
                declined.append(host.name)
        except HostError as exc:
            if len(hosts) == 1:
                raise
            output.info(f"error: {exc}")
            failed.append(host.name)
        except DeployError:
            raise
    if declined:
        output.info(f"not trusted: {', '.join(declined)}")
    if declined or failed:
        click.get_current_context().exit(1)
