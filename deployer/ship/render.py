"""Render a ShipPlan for humans (dry run): route, layers, bytes, and the exact remote commands.

Blob digests are only known once a layer is compressed, so they show as placeholders.
"""
from __future__ import annotations

import posixpath
from typing import Any

from deployer.commands import load as ld
from deployer.commands import ship as cmd
from deployer.inventory.host import Host
from deployer.ship.plan import ShipPlan, human_bytes
from deployer.transport.session import remote_command


def plan_commands(plan: ShipPlan, host: Host) -> list[tuple[str, ...]]:
    """The remote commands the plan runs, in order (pure; digests are placeholders)."""
    docker, staging = host.docker, host.staging_dir
    if plan.route == "noop":
        return []
    if plan.route == "tag":
        return [cmd.tag_verify_argv(docker, plan.host_id or plan.image_id, plan.ref)]
    if plan.route == "registry":
        assert plan.registry_ref is not None
        return [cmd.pull_argv(docker, plan.registry_ref), cmd.inspect_id_argv(docker, plan.registry_ref),
                cmd.tag_verify_argv(docker, plan.registry_ref, plan.ref)]
    assert plan.codec is not None
    codec = plan.codec.name
    mode = codec if plan.codec.host_decompress else "link"
    head = cmd.load_head_path(staging, plan.image_id)
    # the blob dir and the staged blobs' sizes, so each blob is sent without its own stat
    out: list[tuple[str, ...]] = [cmd.prepare_argv(staging)]
    files: list[ld.LoadFile] = []
    for i in plan.missing:
        digest = f"sha256:<{codec} blob of layer {i + 1}>"
        final = cmd.blob_path(staging, digest, codec)
        receive = cmd.receive_argv(cmd.partial_path(staging, digest, codec), final, digest, 0)
        out.append((*receive[:-1], "<blob bytes>"))
        files.append(ld.LoadFile(plan.diff_ids[i], final, -1))  # -1: the size is not known yet
    # layers register as they land: each run of staged layers loads as a stand-in image
    # (stdin: the tar head), and the last one with the real config; then install verifies and tags
    if files:
        out.append(ld.load_argv(docker, head, mode, HEAD_BLOCKS, files[:1]))
    names = [posixpath.basename(f.src) for f in files]
    out.append(ld.install_argv(docker, head, plan.host_id or plan.image_id, plan.ref, staging, cmd.blob_dir(staging),
                               names, mode, HEAD_BLOCKS, [], preview=True))
    return out


HEAD_BLOCKS = "<tar head blocks>"


def describe(plan: ShipPlan) -> str:
    """One line: route, reason, layers and bytes."""
    if not plan.transfers:
        return f"{plan.route}: {plan.reason}"
    text = f"{plan.via}: {plan.reason}; {len(plan.missing)}/{plan.layers_total} layers to send"
    if plan.codec is not None:
        text += f", {plan.codec.name}" + (" (decompressed on the host)" if plan.codec.host_decompress else "")
    if plan.raw_bytes:
        text += f", at most {human_bytes(plan.raw_bytes)} uncompressed"
    return text


def render(plan: ShipPlan, host: Host) -> list[str]:
    """Lines for a dry run: the summary and each remote command, shell-quoted as it will run."""
    lines = [f"{plan.host}: {describe(plan)}"]
    lines += ["  $ " + remote_command(argv) for argv in plan_commands(plan, host)]
    return lines


def plan_json(plan: ShipPlan, host: Host) -> dict[str, Any]:
    return {
        "host": plan.host, "route": plan.route, "via": plan.via, "reason": plan.reason,
        "image_id": plan.image_id, "host_image_id": plan.host_id, "layers_total": plan.layers_total,
        "layers_missing": [i + 1 for i in plan.missing],
        "codec": plan.codec.name if plan.codec else None,
        "host_decompress": plan.codec.host_decompress if plan.codec else None,
        "image_store": plan.image_store, "load_format": plan.load_format, "raw_bytes_max": plan.raw_bytes,
        "staging_need": plan.staging_need, "docker_need": plan.docker_need,
        "commands": [remote_command(argv) for argv in plan_commands(plan, host)],
    }
