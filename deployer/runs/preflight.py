"""Preflight: check one host can start a RunSpec, changing nothing. Every problem is listed at once."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from deployer.commands import run as cmd
from deployer.commands.facts import probe_argv
from deployer.errors import CommandError, PreflightError
from deployer.facts import PROBE_TIMEOUT_S, read_probe
from deployer.inventory.host import Host
from deployer.runs.gpus import GpuRequest, check_against
from deployer.runs.spec import RunSpec, Volume
from deployer.transport.batch import run_batch
from deployer.transport.result import Result
from deployer.transport.session import Session


@dataclass(frozen=True)
class Ready:
    """A host that passed preflight, with what the start step needs to know."""

    host: Host
    image_id: str
    image_labels: dict[str, str] = field(default_factory=dict)
    missing_dirs: tuple[str, ...] = ()  # created at start (only with --mkdirs)
    existing: cmd.ContainerStatus | None = None  # removed at start (only with --replace)
    gpu_count: int | None = None


def _gpu_problems(host: Host, probed: Result, req: GpuRequest) -> tuple[list[str], int | None]:
    facts = read_probe(host.name, probed)
    if facts.docker is None:
        return [], None  # reported by the image check, which needs docker too
    if not facts.docker.gpu_runtime:
        return [(f"--gpus {req.text} asked for GPUs, but this host has no NVIDIA container runtime "
                 "(docker cannot give containers GPUs here); pick a GPU host or drop --gpus")], len(facts.gpus)
    problem = check_against(req, facts.gpus)
    return ([problem] if problem else []), len(facts.gpus)


def _image(host: Host, res: Result, image: str) -> tuple[str, dict[str, str]] | str:
    if res.ok:
        return cmd.parse_image_inspect(res.stdout)
    if "no such image" in res.stderr.lower():
        return f"image {image} is not on this host; ship it first: deploy ship --host {host.name} --image {image}"
    raise CommandError(host.name, res, what="cannot inspect the image")


def _existing(host: Host, res: Result, name: str) -> cmd.ContainerStatus | None:
    if not res.ok:
        if "no such" in res.stderr.lower():
            return None
        raise CommandError(host.name, res, what="cannot check whether the container name is free")
    found = [c for c in cmd.parse_inspect(res.stdout) if c.name == name]  # inspect also matches id prefixes
    return found[0] if found else None


def preflight(session: Session, host: Host, spec: RunSpec, *, name: str, gpus: GpuRequest | None,
              volumes: Sequence[Volume], probe: Result | None = None) -> Ready:
    """Check host can run spec as name; PreflightError listing every problem and its fix. The
    checks (GPUs, image, name, volume sources) read the host in one round trip. PROBE: the host's
    probe with GPUs, if the ship just made it (`ship -p`): not probed again."""
    sources = [v.source for v in volumes if v.bind]
    steps = {"image": cmd.image_inspect_argv(host.docker, spec.image),
             "existing": cmd.container_inspect_argv(host.docker, name)}
    if gpus is not None and probe is None:
        steps["facts"] = probe_argv(host)
    if sources:
        steps["paths"] = cmd.missing_paths_argv(sources)
    replies = dict(zip(steps, run_batch(session, list(steps.values()), parallel=True,
                                        timeout=PROBE_TIMEOUT_S)))
    if gpus is not None and probe is not None:
        replies["facts"] = probe
    problems: list[str] = []
    gpu_count = None
    if gpus is not None:
        gpu_problems, gpu_count = _gpu_problems(host, replies["facts"], gpus)
        problems += gpu_problems
    image = _image(host, replies["image"], spec.image)
    image_id, image_labels = ("", {}) if isinstance(image, str) else image
    if isinstance(image, str):
        problems.append(image)
    existing = _existing(host, replies["existing"], name)
    if existing is not None and not spec.replace:
        problems.append(f"a container named {name} already exists ({existing.state}); "
                        "pick another --name, or pass --replace to stop and remove it")
    elif existing is not None and not existing.managed:
        problems.append(f"the container {name} was not started by deployer, so --replace will not remove it; "
                        "pick another --name")
    missing: tuple[str, ...] = ()
    if sources:
        res = replies["paths"]
        if not res.ok:
            raise CommandError(host.name, res, what="cannot check the volume sources")
        missing = tuple(line for line in res.stdout.splitlines() if line)
        if missing and not spec.mkdirs:
            problems += [f"volume source {p} does not exist on this host; create it or pass --mkdirs" for p in missing]
    if problems:
        raise PreflightError(host.name, "preflight failed:\n  - " + "\n  - ".join(problems))
    return Ready(host, image_id, image_labels, missing, existing, gpu_count)
