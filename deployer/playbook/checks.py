"""Value checks for run options: exactly the rules `deploy run` applies to its flags (pure).

Each field is checked through the RUN helper's own validator (deployer.runs.spec.validate), so a
playbook and the command line can never disagree about what `gpus: device=0,2` means.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from deployer.errors import SpecError
from deployer.playbook.templating import is_template
from deployer.runs.spec import RunSpec, validate

# A reference: [registry[:port]/]path[:tag][@digest], path components lowercase (distribution/reference).
REF_RE = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::\d+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_FIELDS = ("gpus", "shm_size", "memory", "restart", "ipc", "workdir", "name", "network")


def image_ref_problem(ref: str) -> str | None:
    if not REF_RE.match(ref):
        return f"{ref!r} is not a valid image reference (lowercase name, optional registry/ and :tag)"
    return None


Problem = tuple[str, str, "str | None"]  # key path, message, hint


def run_problems(opts: RunSpec, *, only_static: bool = False) -> Iterator[Problem]:
    """(key path, message, hint) for every invalid value; with only_static, templated values are skipped."""

    def static(value: str | None) -> bool:
        return value is not None and not (only_static and is_template(value))

    for key in _FIELDS:
        value = getattr(opts, key)
        if static(value):
            problem = _problem(**{key: value})
            if problem:
                yield (f"run.{key}", *problem)
    if static(opts.place):  # with the GPUs it places by (a templated gpus is checked once rendered)
        problem = _problem(place=opts.place, gpus=opts.gpus if opts.gpus is None or static(opts.gpus) else "1")
        if problem:
            yield ("run.place", *problem)
    if opts.nodes is not None or opts.master_port is not None or static(opts.on_node_failure):
        job = {"nodes": opts.nodes, "master_port": opts.master_port,
               "on_node_failure": opts.on_node_failure if static(opts.on_node_failure) else None}
        problem = _problem(**job, place=opts.place if static(opts.place) else None,
                           gpus=opts.gpus if opts.gpus is None or static(opts.gpus) else "1")
        if problem:
            flag = problem[0].split(" ", 1)[0].lstrip("-").replace("-", "_")  # "--master-port 0: ..."
            yield (f"run.{flag if flag in job else 'nodes'}", *problem)
    volumes = [v for v in opts.volumes if static(v)]
    for i, volume in enumerate(opts.volumes):
        if static(volume):
            problem = _problem(volumes=(volume,))
            if problem:
                yield (f"run.volumes[{i}]", *problem)
    if len(volumes) == len(opts.volumes):  # duplicate mount targets, once all are known
        problem = _problem(volumes=tuple(volumes))
        if problem:
            yield ("run.volumes", *problem)
    for key, value in opts.env:
        if static(value) or static(key):
            problem = _problem(env=((key, value),))
            if problem:
                yield (f"run.env.{key}", *problem)


def _problem(**fields: Any) -> tuple[str, str | None] | None:
    """The RUN helper's complaint (message, hint) about a RunSpec holding just these fields, or None."""
    try:
        validate(RunSpec(image="playbook-check", **fields))
    except SpecError as exc:
        return exc.message, exc.hint
    return None
