"""`deploy ship -p --dry-run`: per host, the ship plan and the start steps runs.start executes; changes nothing.

A playbook that builds is planned with the image a build at this revision would be tagged as,
when it exists locally, else with the repo's :latest (the last build) and a note saying so.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from deployer.commands.step import Step
from deployer.errors import DeployError, error_fields, error_shown
from deployer.fleet import Outcome
from deployer.inventory.host import Host
from deployer.oneshot import image as images
from deployer.oneshot.pipeline import Prepared
from deployer.oneshot.platform import Arches, decide
from deployer.refs import registry_ref
from deployer.runs.start import planned_steps
from deployer.ship.plan import ShipPlan
from deployer.ship.render import describe, plan_json, step_line
from deployer.ship.steps import transfer_steps
from deployer.transport.session import remote_command


@dataclass(frozen=True)
class Preview:
    """What `deploy ship -p` would do: the ref it would ship, notes, and per-host ship plans."""

    ref: str
    planned_with: str | None  # the local image the plans were made with (None: nothing to plan with)
    git_rev: str | None
    notes: tuple[str, ...]
    plans: tuple[Outcome[ShipPlan], ...]


def preview(prepared: Prepared, client: Any = None, arches: Arches | None = None) -> Preview:
    """Plan the ship for every host (reads only: no build, no lock, nothing written anywhere); SpecError, as
    deploy() would, when a build is due and the hosts' architectures differ."""
    from deployer.local.client import docker_client
    from deployer.ship import plan_ship

    client = client or docker_client()
    exists = images.local_exists(client)
    choice, notes = prepared.image, [prepared.image.note] if prepared.image.note else []
    if choice.build is not None:
        from deployer.local.build import workstation_arch

        target = decide(choice.build.platform, prepared.hosts, workstation_arch(client), arches)
        notes += [f"would build {target.reason}", *target.warnings]
        revision = images.revision_of(choice.build)
        candidates = images.build_candidates(choice.build, revision)
        ref = candidates[0]
        found = images.first_existing(candidates, exists)
        git_rev = revision.tag if revision else None
        if found is None:
            notes.append(f"would build {ref}; no earlier build exists, so the layers to send are known only "
                         "after a build (deploy build)")
        elif found != ref:
            notes.append(f"would build {ref}; planned with {found} (the last build): a build may change the top layers")
        else:
            notes.append(f"would build {ref}; it exists already, so the plan is exact unless the build changes it")
        if revision is not None and revision.dirty:
            notes.append("the build context has uncommitted changes")
    else:
        assert choice.ref is not None
        ref, found = choice.ref, choice.ref if exists(choice.ref) else None
        git_rev = images.git_rev_label(client, ref) if found else None
        if found is None:
            notes.append(f"{ref} is not in the local Docker: ship would fail")
    plans: list[Outcome[ShipPlan]] = []
    if found is not None:
        shipped = plan_ship(list(prepared.ship_hosts), found, prepared.ship_options(git_rev), client=client)
        plans = [Outcome(o.host, value=_retarget(o.value, ref, o.host)) if o.value else o for o in shipped]
    return Preview(ref, found, git_rev, tuple(notes), tuple(plans))


def _retarget(plan: ShipPlan, ref: str, host: Host) -> ShipPlan:
    """The plan as it reads for `ref` (planned with an older build of the same repository)."""
    if plan.ref == ref:
        return plan
    return dataclasses.replace(plan, ref=ref,
                               registry_ref=registry_ref(str(host.registry), ref) if plan.registry_ref else None)


def host_lines(prepared: Prepared, view: Preview, host: Host, plan: Outcome[ShipPlan] | None) -> list[str]:
    """A host's dry-run text: route, layers and bytes, the ship commands, then the run commands."""
    lines = []
    if plan is None:
        lines.append(f"{host.name}: ship {view.ref}: layers unknown until it is built")
    elif plan.value is None:
        lines.append(f"{host.name}: cannot plan the ship: {error_shown(plan.error)}")
    else:
        lines.append(f"{host.name}: ship {view.ref}: {describe(plan.value)}")
        lines += [step_line(step) for step in transfer_steps(plan.value, _ship_host(prepared, host))]
    if not prepared.runs:
        lines.append(f"{host.name}: no container is started ({'--no-run' if prepared.playbook.run else 'no run:'})")
        return lines
    spec = prepared.specs(view.ref, view.git_rev, [host.name])[host.name]
    lines.append(f"{host.name}: run {spec.name}")
    image_id = plan.value.image_id if plan is not None and plan.value is not None else None
    lines += [step_line(step) for step in planned_steps(host, spec, image_id)]
    return lines


def host_json(prepared: Prepared, view: Preview, host: Host, plan: Outcome[ShipPlan] | None) -> dict[str, Any]:
    """A host's dry-run record: the ship plan (as `deploy ship --image --dry-run --json`) and the run steps."""
    rec: dict[str, Any] = {"host": host.name, "ok": plan is None or plan.ok, "error": None, "hint": None,
                           "image": view.ref, "planned_with": view.planned_with, "playbook": prepared.playbook.name,
                           "git_rev": view.git_rev, "ship": None, "run": None}
    if plan is not None and plan.value is not None:
        rec["ship"] = plan_json(plan.value, _ship_host(prepared, host))
    elif plan is not None:
        rec.update(error_fields(plan.error))
    if prepared.runs:
        spec = prepared.specs(view.ref, view.git_rev, [host.name])[host.name]
        image_id = plan.value.image_id if plan is not None and plan.value is not None else None
        rec["run"] = {"name": spec.name, "commands": [_step_json(step) for step in planned_steps(host, spec, image_id)]}
    return rec


def _step_json(step: Step) -> dict[str, Any]:
    return {"command": remote_command(step.argv), "when": step.note, "label": step.label}


def _ship_host(prepared: Prepared, host: Host) -> Host:
    return next(h for h in prepared.ship_hosts if h.name == host.name)


def failed(view: Preview) -> list[DeployError]:
    return [o.error for o in view.plans if o.error is not None]
