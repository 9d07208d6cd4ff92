"""Render a ShipPlan for humans (dry run): route, layers, bytes, and the exact remote commands.

The commands are ship.steps.transfer_steps, the executor's own builders; blob digests are only
known once a layer is compressed, so they show as placeholders.
"""
from __future__ import annotations

from typing import Any

from deployer.commands.step import Step
from deployer.inventory.host import Host
from deployer.ship.plan import ShipPlan, human_bytes
from deployer.ship.steps import transfer_steps
from deployer.transport.session import remote_command


def step_line(step: Step) -> str:
    """A dry run's line for one step: the command as the remote shell gets it, and its note."""
    return "  $ " + remote_command(step.argv) + (f"    # {step.note}" if step.note else "")


def plan_commands(plan: ShipPlan, host: Host) -> list[tuple[str, ...]]:
    """The remote commands the plan runs, in order (pure; digests are placeholders)."""
    return [step.argv for step in transfer_steps(plan, host)]


def describe(plan: ShipPlan) -> str:
    """One line: route, reason, layers and bytes."""
    if not plan.transfers:
        return f"{plan.route}: {plan.reason}"
    text = f"{plan.via}: {plan.reason}; {len(plan.missing)}/{plan.layers_total} layers to send"
    if plan.codec is not None:
        text += f", {plan.codec.name}" + (" (decompressed on the host)" if plan.codec.host_decompress else "")
    if plan.raw_bytes:
        text += f", at most {human_bytes(plan.raw_bytes)} uncompressed"
    if plan.relay:
        text += f"; through relay {plan.relay} (each blob crosses the uplink once for the site, then the LAN)"
    return text


def render(plan: ShipPlan, host: Host) -> list[str]:
    """Lines for a dry run: the summary and each remote command, shell-quoted as it will run."""
    lines = [f"{plan.host}: {describe(plan)}"]
    lines += [step_line(step) for step in transfer_steps(plan, host)]
    return lines


def plan_json(plan: ShipPlan, host: Host) -> dict[str, Any]:
    return {
        "host": plan.host, "route": plan.route, "via": plan.via, "reason": plan.reason,
        "image_id": plan.image_id, "host_image_id": plan.host_id, "layers_total": plan.layers_total,
        "layers_missing": [i + 1 for i in plan.missing],
        "origin": plan.origin, "layers_from_origin": [i + 1 for i in plan.from_origin], "relay": plan.relay,
        "codec": plan.codec.name if plan.codec else None,
        "host_decompress": plan.codec.host_decompress if plan.codec else None,
        "image_store": plan.image_store, "load_format": plan.load_format, "raw_bytes_max": plan.raw_bytes,
        "staging_need": plan.staging_need, "docker_need": plan.docker_need,
        "steps": [step.label for step in transfer_steps(plan, host)],  # what each command does, in a few words
        "commands": [remote_command(argv) for argv in plan_commands(plan, host)],
    }
