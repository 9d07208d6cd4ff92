"""Start a RunSpec on hosts: preflight every host first, then start everywhere or nowhere."""
from __future__ import annotations

import dataclasses
import secrets
import shlex
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from deployer import history
from deployer.commands import run as cmd
from deployer.errors import (
    CommandError,
    DeployError,
    HostError,
    PreflightError,
    SpecError,
    error_fields,
)
from deployer.fleet import Outcome, for_each_host
from deployer.inventory.host import Host
from deployer.runs import spec as specs
from deployer.runs.gpus import GpuRequest
from deployer.runs.preflight import Ready, preflight
from deployer.runs.steps import Step, launch_steps
from deployer.transport.result import Result
from deployer.transport.retry import connect_retrying
from deployer.transport.session import Session

Reporter = Callable[[str, str], None]  # (host name, message)


@dataclass(frozen=True)
class Started:
    """A container started on one host."""

    host: str
    name: str
    container_id: str
    image_id: str
    command: str  # the docker argv, shell-quoted; holds no env values
    gpus: str | None = None
    exit_code: int | None = None  # set with attach: the container's exit code (a job's: the failing rank's)
    rank: int | None = None  # a rank of a multi-node job (runs.multinode)
    nodes: int | None = None


def to_json(outcomes: list[Outcome[Started]]) -> list[dict[str, Any]]:
    """`deploy run --json`: per host, ok and error, then what was started there."""
    return [{"host": o.host.name, "ok": o.ok, **error_fields(o.error),
             **({k: v for k, v in o.value.__dict__.items() if k != "host"} if o.value else {})}
            for o in outcomes]


def labels_for(spec: specs.RunSpec, *, name: str, ready: Ready, now: datetime) -> list[tuple[str, str]]:
    """Labels that let status and history find the container (pure)."""
    extra = dict(spec.labels)
    git_rev = (extra.get("deployer.git_rev") or ready.image_labels.get("deployer.git_rev")
               or ready.image_labels.get("org.opencontainers.image.revision"))
    ours = {
        "deployer.managed": "true",
        "deployer.name": name,
        "deployer.image": spec.image,
        "deployer.image_id": ready.image_id,
        "deployer.user": history.who(),
        "deployer.started_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if spec.gpus is not None:
        ours["deployer.gpus"] = spec.gpus
    if git_rev:
        ours["deployer.git_rev"] = git_rev
    # Caller labels (deployer.playbook from a playbook, user labels) come after ours but never
    # override the facts deployer relies on.
    for key, val in spec.labels:
        if key not in ours or key in ("deployer.git_rev", "deployer.playbook"):
            ours[key] = val
    return list(ours.items())


def resolve_env(spec: specs.RunSpec, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """-e values merged over --env-file contents (read on the workstation)."""
    file_env: list[tuple[str, str]] = []
    if spec.env_file:
        try:
            text = Path(spec.env_file).expanduser().read_text()
        except OSError as exc:
            raise SpecError(f"--env-file {spec.env_file}: cannot read it: {exc.strerror or exc}") from exc
        file_env = specs.parse_env_file(text, spec.env_file, environ)
    return specs.merge_env(file_env, spec.env)


Specs = specs.RunSpec | Mapping[str, specs.RunSpec]


@dataclass(frozen=True)
class Prepared:
    """One host's RunSpec, checked: the container name, parsed GPUs and volumes, resolved env."""

    spec: specs.RunSpec
    name: str
    gpus: GpuRequest | None
    volumes: tuple[specs.Volume, ...]
    env: list[tuple[str, str]]


def prepare(hosts: list[Host], spec: Specs) -> dict[str, Prepared]:
    """Validate the spec of every host (one for all, or host name -> spec) before touching any host."""
    per_host = spec if isinstance(spec, Mapping) else {h.name: spec for h in hosts}
    missing = [h.name for h in hosts if h.name not in per_host]
    if missing:
        raise SpecError(f"no run spec for {', '.join(missing)}")
    out: dict[str, Prepared] = {}
    shared: dict[specs.RunSpec, Prepared] = {}  # one env-file read and one default name per distinct spec
    for host in hosts:
        one = per_host[host.name]
        if one not in shared:
            gpus, volumes = specs.validate(one)
            shared[one] = Prepared(one, one.name or specs.default_name(one.image), gpus, volumes, resolve_env(one))
        out[host.name] = shared[one]
    return out


class Reused(NamedTuple):
    """A host's live session and its probe (GPUs included), handed on by the ship before a run."""

    session: Session
    probe: Result | None


def start(hosts: list[Host], spec: Specs, *, parallel: int = 8, attach: bool = False,
          reporter: Reporter | None = None, output: BinaryIO | None = None,
          timeout: float = 10.0, reuse: Mapping[str, Reused] | None = None) -> list[Outcome[Started]]:
    """Preflight all hosts in parallel; if all pass, start each host's spec. Nothing starts if any fails.

    `spec` is one RunSpec for every host, or a mapping host name -> RunSpec (a playbook renders
    volumes and GPUs per host). A spec placed `any` starts on one host only (runs.place).
    REUSE: sessions (and probes) the ship just used, per host; this closes them like its own.
    """
    unused = dict(reuse or {})
    try:
        return _start(hosts, spec, parallel=parallel, attach=attach, reporter=reporter, output=output,
                      timeout=timeout, reuse=unused)
    finally:
        for reused in unused.values():  # a host not started here (a placement picks one)
            reused.session.close()


def _start(hosts: list[Host], spec: Specs, *, parallel: int, attach: bool, reporter: Reporter | None,
           output: BinaryIO | None, timeout: float, reuse: dict[str, Reused]) -> list[Outcome[Started]]:
    prepared = prepare(hosts, spec)
    if any(p.spec.nodes is not None for p in prepared.values()):
        from deployer.runs.multinode import start_job

        started = start_job(hosts, prepared, parallel=parallel, reporter=reporter, timeout=timeout)
        if attach and all(o.ok for o in started):
            from deployer.runs.joblogs import follow_job

            started = follow_job(started, output, timeout=timeout)
        return started
    if any(p.spec.place == "any" for p in prepared.values()):
        from deployer.runs.place import place_and_start

        return place_and_start(hosts, prepared, parallel=parallel, attach=attach, reporter=reporter, output=output,
                               timeout=timeout)
    if attach and len(hosts) != 1:  # a multi-node job (above) follows all its ranks
        raise SpecError(f"--attach works with one host; the pattern selected {len(hosts)}",
                        hint="pick one host with --host, or use --detach and `deploy logs`")
    say = reporter or (lambda _h, _m: None)
    sessions: dict[str, Session] = {}
    lock = threading.Lock()

    def check(host: Host) -> Ready:
        p = prepared[host.name]
        with lock:
            reused = reuse.pop(host.name, None)
        if reused is not None and not getattr(reused.session, "alive", True):
            reused.session.close()
            reused = None
        session = reused.session if reused is not None else connect_retrying(host, timeout=timeout)
        with lock:
            sessions[host.name] = session
        say(host.name, "preflight")
        return preflight(session, host, p.spec, name=p.name, gpus=p.gpus, volumes=p.volumes,
                         probe=reused.probe if reused is not None else None)

    try:
        checked = for_each_host(hosts, check, parallel)
        failed = [o.host.name for o in checked if not o.ok]
        if failed:
            note = f"preflight passed, but nothing was started because {', '.join(failed)} failed preflight"
            return [Outcome(o.host, error=o.error or PreflightError(o.host.name, note)) for o in checked]
        now = datetime.now(timezone.utc)

        def launch(host: Host) -> Started:
            ready = next(o.value for o in checked if o.host.name == host.name)
            assert ready is not None
            p = prepared[host.name]
            return _launch(sessions[host.name], ready, p, labels=labels_for(p.spec, name=p.name, ready=ready, now=now),
                           say=say)

        started = for_each_host(hosts, launch, parallel)
        if attach and started[0].ok and started[0].value is not None:
            name = prepared[hosts[0].name].name
            code = follow_to_exit(sessions[hosts[0].name], hosts[0], name, output, timeout=timeout)
            value = started[0].value
            started = [Outcome(started[0].host, value=Started(**{**value.__dict__, "exit_code": code}))]
        return started
    finally:
        for session in sessions.values():
            session.close()


def planned_steps(host: Host, spec: specs.RunSpec, image_id: str | None, *,
                  now: datetime | None = None) -> list[Step]:
    """What starting spec on host runs, as a dry run shows it: preflight's image check, then the
    launch steps with the ones preflight decides on marked by their condition (pure)."""
    p = prepare([host], spec)[host.name]
    ready = Ready(host, image_id or "<image id after the build>")
    labels = labels_for(spec, name=p.name, ready=ready, now=now or datetime.now(timezone.utc))
    check = Step("preflight", cmd.image_inspect_argv(host.docker, spec.image), "preflight (read only)")
    if spec.nodes is not None:  # a rank of a job: created here, started with the other ranks (runs.multinode)
        from deployer.runs import gang

        job = gang.job_spec(spec)
        launch = launch_steps(host, job, name=p.name, volumes=p.volumes, env=p.env, labels=labels, token="<random>",
                              create=True, extra=["--env", "MASTER_ADDR=<rank 0's address>", "--env", "NODE_RANK=<rank>"])
        note = (f"a rank of a {spec.nodes}-node job on the first {spec.nodes} hosts: every node is checked first "
                f"(ports {gang.master_port(spec)}-{gang.gang_port(spec)} free on rank 0, reachable from the others), "
                "then all ranks are created, the gang watchers started, and all ranks started together")
        return [check, *(dataclasses.replace(s, note=note) if s is launch.run else s for s in launch)]
    launch = launch_steps(host, spec, name=p.name, volumes=p.volumes, env=p.env, labels=labels, token="<random>")
    if spec.place != "any" or p.gpus is None:
        return [check, *launch]
    # Placed: only the host placement picks (from every host's GPU use) runs it, with --gpus naming
    # the free devices it picked.
    where = (f"only on the one host placement picks (the fewest free GPUs that fit {p.gpus.count}), "
             f'with --gpus naming its free devices, e.g. \'"device=0,1"\'')
    return [check, *(dataclasses.replace(s, note=where) if s is launch.run else s for s in launch)]


def _launch(session: Session, ready: Ready, p: Prepared, *, labels: list[tuple[str, str]], say: Reporter) -> Started:
    host, spec, name = ready.host, p.spec, p.name
    steps = launch_steps(host, spec, name=name, volumes=p.volumes, env=p.env, labels=labels,
                         token=secrets.token_hex(4), replacing=ready.existing is not None,
                         missing_dirs=ready.missing_dirs)
    argv = steps.run.argv
    tags = dict(labels)

    def rec(result: str, **extra: object) -> dict:
        return history.record("run", image=spec.image, image_id=ready.image_id, command=shlex.join(argv),
                              result=result, name=name, gpus=spec.gpus, env_keys=[k for k, _ in p.env] or None,
                              playbook=tags.get("deployer.playbook"), git_rev=tags.get("deployer.git_rev"),
                              **extra)

    if ready.existing is not None:
        say(host.name, f"replacing {name} ({ready.existing.state})")
    try:
        for step in steps.before:
            _run_step(session, host, step)
        say(host.name, f"starting {name}")
        try:
            res = session.run(argv)
        except CommandError as exc:
            # A failed start (bad command, mount error) leaves a "created" container holding the
            # name; it is ours (the name was free or replaced), so clear it for the next attempt.
            session.run(steps.on_failure.argv, check=False)
            _record(session, host, rec(f"failed: exit {exc.result.exited}"))
            raise CommandError(host.name, exc.result, what=f"docker could not start {name}") from exc
    finally:
        for step in steps.cleanup:
            session.run(step.argv, check=False)
    container_id = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    _record(session, host, rec("ok", container=container_id[:12]))
    return Started(host.name, name, container_id, ready.image_id, shlex.join(argv), spec.gpus)


def _run_step(session: Session, host: Host, step: Step) -> None:
    try:
        session.run(step.argv, input=step.stdin)
    except CommandError as exc:
        raise CommandError(host.name, exc.result, what=f"cannot {step.label}") from exc


def _record(session: Session, host: Host, rec: dict) -> None:
    try:
        history.append(session, host.staging_dir, rec)
    except DeployError:
        pass  # a history write must never turn a started job into a failure


def follow_to_exit(session: Session, host: Host, name: str, output: BinaryIO | None, *, timeout: float = 10.0) -> int:
    """Stream the container's output until it exits (surviving dropped links); its exit code."""
    from deployer.runs.logs import show

    def write(data: bytes) -> None:
        if output is not None:
            output.write(data)
            output.flush()

    show(host, name, write, follow=True, timeout=timeout)
    try:
        res = session.run(cmd.wait_argv(host.docker, name))
    except HostError as exc:
        if not exc.transient:
            raise
        with connect_retrying(host, timeout=timeout, first=False) as again:  # the first link died meanwhile
            res = again.run(cmd.wait_argv(host.docker, name))
    return int(res.stdout.strip().splitlines()[-1])
