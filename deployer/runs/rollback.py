"""`deploy rollback NAME`: restart NAME with the image it ran before, with the same options.

The host's history log says what NAME ran: its latest run record holds the options (the docker
argv deployer built, and the names of its environment variables), and the newest earlier record
with another image id names the image to go back to. The environment's values were never
recorded; they are read from the current container. Then runs.start replaces the container,
with its preflight of every host first.
"""
from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployer import history
from deployer.commands import rerun
from deployer.commands import run as cmd
from deployer.errors import CommandError, PreflightError, UsageError
from deployer.fleet import Outcome, for_each_host
from deployer.inventory.host import Host
from deployer.runs.spec import RunSpec
from deployer.runs.start import Reporter, Started, start
from deployer.transport.retry import connect_retrying
from deployer.transport.session import Session

# Labels start sets from facts; a rollback's come from its new image, not the old run's.
_OWN_LABELS = {"deployer.managed", "deployer.name", "deployer.image", "deployer.image_id", "deployer.user",
               "deployer.started_at", "deployer.gpus", "deployer.git_rev"}


@dataclass(frozen=True)
class Target:
    """What a rollback goes back to on one host: the earlier run record, and the current one."""

    previous: dict[str, Any]
    current: dict[str, Any]


def runs_of(records: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """NAME's successful run records, oldest first."""
    return [r for r in records if r.get("action") == "run" and r.get("name") == name
            and r.get("result") == "ok" and r.get("image_id") and r.get("command")]


def target(records: Sequence[dict[str, Any]], name: str, current_image_id: str | None) -> Target | str:
    """The run to go back to, or why there is none (pure). The current image is the container's
    (when it exists), else the latest run's."""
    runs = runs_of(records, name)
    if not runs and any(r.get("action") == "run" and r.get("name") == name and r.get("nodes") for r in records):
        return (f"{name} is a multi-node job, which rollback does not restart; start it again with the earlier "
                f"image: deploy run --nodes N --image OLD --name {name} --replace ...")
    if not runs:
        return f"this host's history has no run of {name}"
    now = current_image_id or str(runs[-1]["image_id"])
    for rec in reversed(runs):
        if rec["image_id"] != now:
            return Target(rec, runs[-1])
    return f"{name} has only ever run {runs[-1].get('image')} ({now[:19]}) here: there is nothing to go back to"


def spec_for(t: Target, *, name: str, image: str, env: dict[str, str]) -> RunSpec:
    """The current run's options with the earlier image (pure). env: the current container's values."""
    opts = rerun.parse_run_argv(shlex.split(str(t.current["command"])))
    keys = [str(k) for k in t.current.get("env_keys") or ()]
    missing = [k for k in keys if k not in env]
    if missing:
        raise PreflightError("", f"the values of {', '.join(missing)} are unknown (they are never recorded, and "
                                 f"the container {name} that had them is gone)")
    return RunSpec(image=image, command=opts["command"], gpus=opts.get("gpus"), volumes=opts["volumes"],
                   env=tuple((k, env[k]) for k in keys), shm_size=opts.get("shm_size"), ipc=opts.get("ipc"),
                   memory=opts.get("memory"), restart=opts.get("restart"), workdir=opts.get("workdir"),
                   network=opts.get("network"), name=name,
                   labels=tuple((k, v) for k, v in opts["labels"] if k not in _OWN_LABELS), replace=True)


def _env(session: Session, host: Host, name: str) -> tuple[str | None, dict[str, str]]:
    """(the container's image id, its environment), or (None, {}) when there is no such container."""
    res = session.run(cmd.container_inspect_argv(host.docker, name), check=False)
    if not res.ok:
        if "no such" in res.stderr.lower():
            return None, {}
        raise CommandError(host.name, res, what=f"cannot inspect {name}")
    # the inspect JSON holds the environment too: no second round trip
    mine = next((c for c in json.loads(res.stdout or "[]")
                 if isinstance(c, dict) and str(c.get("Name") or "").lstrip("/") == name), None)
    if mine is None:
        return None, {}
    env_list = (mine.get("Config") or {}).get("Env") or []
    return str(mine.get("Image") or ""), dict(str(e).partition("=")[::2] for e in env_list)


def resolve(host: Host, name: str, *, timeout: float = 10.0) -> RunSpec | None:
    """The RunSpec that rolls NAME back on host; None when NAME never ran there (nor runs now);
    PreflightError when it cannot be done (nothing changed)."""
    with connect_retrying(host, timeout=timeout) as session:
        image_id, env = _env(session, host, name)
        records = history.read(session, host.staging_dir)
        if image_id is None and not runs_of(records, name):
            return None
        found = target(records, name, image_id)
        if isinstance(found, str):
            raise PreflightError(host.name, f"cannot roll back {name}: {found}")
        prev = found.previous
        ref, prev_id = str(prev.get("image") or ""), str(prev["image_id"])
        state = session.run(rerun.image_ids_argv(host.docker, (prev_id, ref or prev_id))).stdout.split()
        if not state or state[0] != prev_id:
            raise PreflightError(host.name, f"cannot roll back {name}: it ran {ref} ({prev_id[:19]}) before, but that "
                                 "image is no longer on this host (pruned?)",
                                 hint=f"ship it again (deploy ship --host {host.name} --image {ref}), then roll back")
        image = ref if len(state) > 1 and state[1] == prev_id else prev_id  # the tag may name another image now
        try:
            return spec_for(found, name=name, image=image, env=env)
        except PreflightError as exc:
            raise PreflightError(host.name, f"cannot roll back {name}: {exc.reason}") from exc


def rollback(hosts: Sequence[Host], name: str, *, parallel: int = 8, timeout: float = 10.0,
             reporter: Reporter | None = None) -> list[Outcome[Started]]:
    """Roll NAME back on every host that can; a host that cannot says why and changes nothing. Hosts
    where NAME never ran are skipped (value and error None); UsageError when that is every host."""
    resolved = for_each_host(hosts, lambda h: resolve(h, name, timeout=timeout), parallel)
    if all(o.ok and o.value is None for o in resolved):
        raise UsageError(f"{name} never ran on {', '.join(h.name for h in hosts)} (no run of it in their history)",
                         hint="`deploy history --name NAME` lists where it ran")
    specs = {o.host.name: o.value for o in resolved if o.value is not None}
    ready = [h for h in hosts if h.name in specs]
    say = reporter or (lambda _h, _m: None)
    for h in ready:
        say(h.name, f"rolling {name} back to {specs[h.name].image}")
    started = {}
    if ready:
        started = {o.host.name: o for o in start(ready, specs, parallel=parallel, reporter=reporter, timeout=timeout)}
    return [started.get(o.host.name) or Outcome(o.host, error=o.error) for o in resolved]


def to_json(outcomes: Sequence[Outcome[Started]]) -> list[dict[str, Any]]:
    """`rollback --json`: as `run --json` (per host ok, error, then what was started)."""
    from deployer.runs.start import to_json as started_json

    return started_json(list(outcomes))
