"""The remote commands that move an image to one host, as labelled steps (pure).

The executor (ship.tarball, ship.loader, ship.registry) runs each step through these builders
with the real values; `transfer_steps` lists the same builders in the order the executor runs
them, for `deploy ship --dry-run`, with placeholders for what is known only once a layer is
compressed (blob digests and sizes, the tar head). One description of the sequence, two users.
"""
from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import replace

from deployer.commands import load as ld
from deployer.commands import relay as rc
from deployer.commands import ship as cmd
from deployer.commands.layers import content_dir
from deployer.commands.step import Step
from deployer.inventory.host import Host
from deployer.ship.plan import ShipPlan
from deployer.tarfmt import Descriptor

HEAD = "stdin: the load's tar head (manifest and config)"


def prepare(staging: str, token: str = "") -> Step:
    """Make the blob dir and list the blobs already staged (one stat for all of them); with TOKEN,
    only while the deploy lock is that token's."""
    return Step("preparing the staging dir", cmd.prepare_argv(staging, token))


def receive(staging: str, digest: str, codec: str, size: int | str, offset: int | str | None = None) -> Step:
    """Append the blob's missing tail (from OFFSET) to its .partial; the host hashes it and moves
    it into place."""
    return Step(f"sending blob {digest[7:19]}",
                cmd.receive_argv(cmd.partial_path(staging, digest, codec), cmd.blob_path(staging, digest, codec),
                                 digest, size, offset),
                "stdin: the part of the blob the host lacks (resumes after a drop); a blob not compressed yet "
                "when the link is free goes as it is compressed, to <layer>.<codec><level>.growing.partial, "
                "and is renamed once its size and sha256 match")


def receive_growing(path: str, diff_id: str, offset: int | str = 0) -> Step:
    """A blob still being compressed, from OFFSET (what the host holds): the host hashes it."""
    return Step(f"sending layer {diff_id[7:19]} as it is compressed", cmd.receive_growing_argv(path, offset),
                "stdin: the blob as the compressor writes it; named once its size and sha256 match")


def name_blob(src: str, dest: str, digest: str, *, leftover: bool = False) -> Step:
    """Move a blob received before its digest was known to DEST (its final name, or its .partial);
    LEFTOVER: a killed ship's, whose receive may live on."""
    return Step(f"naming blob {digest[7:19]}", cmd.move_argv(src, dest, leftover=leftover))


def authorize(relay: str, staging: str, authorized_keys: str, line: str) -> Step:
    """Let the ship's key run only the forced receive on the host (from the relay, for a day at most);
    an empty LINE installs the receive only (a tree node feeding its own staging)."""
    label = f"authorizing relay {relay}'s key" if line else f"installing relay {relay}'s receive"
    return Step(label, rc.authorize_argv(staging, authorized_keys, line))


def forward(relay: str, relay_staging: str, digest: str, codec: str, size: int | str, offset: int | str,
            ship_dir: str, dest: str, port: int, stall_s: int | str, slot: int | str, here: str = "",
            growing: str = "") -> Step:
    """On the relay: pass the blob on to the host over the LAN, from OFFSET, as it arrives (HERE:
    the relay is the host, its receiver's path; GROWING: where the relay's copy grows while the
    blob is still being compressed)."""
    return Step(f"relay {relay} passes blob {digest[7:19]} on",
                rc.forward_argv(rc.relay_staging(relay_staging), digest, codec, size, offset, ship_dir, dest, port,
                                stall_s, slot, here, growing),
                f"runs on {relay}; the host's forced receive checks the sha256")


def revoke(relay: str, authorized_keys: str, ship_id: str) -> Step:
    return Step(f"removing relay {relay}'s key", rc.revoke_argv(authorized_keys, ship_id))


def stand_in_load(docker: tuple[str, ...], staging: str, image_id: str, mode: str, blocks: int | str,
                  files: Sequence[ld.LoadFile], records: Sequence[tuple[str, Descriptor]], span: str,
                  standin: str = "", stall_s: int = 0) -> Step:
    """Register the layers staged so far (a stand-in image, id STANDIN) while later blobs are in
    flight; STALL_S > 0: the last of them is read as it arrives (ld.load_argv)."""
    return Step(f"docker load of layers {span}",
                ld.load_argv(docker, cmd.load_head_path(staging, image_id), mode, blocks, files, staging,
                             records, standin, stall_s), HEAD)


def install(docker: tuple[str, ...], staging: str, image_id: str, loaded_id: str, ref: str, blobs: Sequence[str],
            mode: str, blocks: int | str, files: Sequence[ld.LoadFile], records: Sequence[tuple[str, Descriptor]],
            *, tagged: bool = False, previous: str = "", loaded: bool = False, whole: bool = False,
            preview: bool = False) -> Step:
    """Load what is left with the real config, verify LOADED_ID, clean up the staging dir, tag REF
    (TAGGED: the load's head names REF, so the load tags it, and a failed check names PREVIOUS
    again; LOADED: the layer loader loaded it; WHOLE: that load, or this one, makes it whole by
    construction and names REF: no check after it)."""
    return Step("removing the stand-ins" if loaded and whole else "verifying, tagging" if loaded else "docker load",
                ld.install_argv(docker, cmd.load_head_path(staging, image_id), loaded_id, ref, staging,
                                cmd.blob_dir(staging), blobs, mode, blocks, files, records, tagged=tagged,
                                previous=previous, loaded=loaded, whole=whole, preview=preview),
                HEAD)


def origin_pull(docker: tuple[str, ...], ref: str) -> Step:
    """The host pulls the image's base from the registry it came from (by digest), while the
    layers above it are sent; the loads wait for it."""
    return Step(f"docker pull {ref}", cmd.origin_pull_argv(docker, ref),
                "alongside the sends; if it fails, the base layers are sent instead")


def stage_pull(docker: tuple[str, ...], ref: str, k: int) -> Step:
    """Pull stage K (`repo@digest`), pushed ahead of the image, while the push of the rest goes on."""
    return Step(f"docker pull stage {k}", cmd.stage_pull_argv(docker, ref),
                "while the push goes on; if it fails, the image's own pull gets its layers")


def pull(plan: ShipPlan, docker: tuple[str, ...], image_ids: Sequence[str], pushed: str, *, staging: str = "",
         records: Sequence[tuple[str, Descriptor]] | str = (), records_from: str = "", drop: Sequence[str] = (),
         preview: bool = False) -> Step:
    """Pull PLAN's registry ref, check the id (PUSHED: or that the pull got that manifest) and that
    the image is complete (the containerd store can pull one in part: REF then goes back to what
    it named at the check), tag REF (one round trip; see cmd.pull_install_argv). On the containerd
    store, the blobs of the manifest (or index) RECORDS_FROM (RECORDS) go to STAGING's content
    records if that is what the pull got: a later tarball ship's load names the layers by them
    instead of sending them again."""
    assert plan.registry_ref is not None
    whole = plan.image_store != "containerd"
    return Step(f"docker pull {plan.registry_ref}",
                cmd.pull_install_argv(docker, plan.registry_ref, plan.ref, image_ids, pushed=pushed,
                                      whole=whole, previous=plan.ref_was or "",
                                      content=content_dir(staging) if staging and not whole else "",
                                      records=() if whole else records, records_from=records_from,
                                      drop=drop, preview=preview),
                "the id must be the image's; the containerd store can pull an incomplete one (moby#49784). "
                "The push before it (once per ship, from this workstation): deployer's zstd layer blobs under "
                "an OCI manifest if every host that pulls runs Docker 23+ (else, or with --codec gzip, `docker "
                "push`); a first push of a big image from a classic-store workstation pushes its lower layers "
                "ahead as stage images, which the host pulls (docker pull stage N) while the rest goes up")


def tag(docker: tuple[str, ...], source: str, ref: str) -> Step:
    """Tag SOURCE as REF and read back the id REF resolves to."""
    return Step(f"docker tag {ref}", cmd.tag_verify_argv(docker, source, ref))


EXPECTED_IDS = "<the image's ids: config digest, pushed manifest digest>"
PUSHED = "<the pushed manifest's digest>"
PUSHED_BLOBS = "<per layer: diff id, media type, digest, size of its blob in the pushed manifest>"
HEAD_BLOCKS = "<tar head blocks>"
BLOB_SIZE = "<blob bytes>"
HELD = "<bytes the host holds>"
SHIP_ID = "<ship id>"
KEY_LINE = ('from="<relay LAN address>",expiry-time="<in a day>",restrict,command="sh <staging>/relay-receive.sh" '
            "ssh-ed25519 <this ship's key> deployer-relay:<ship id>")
STALL_MARGIN_S = 30  # a relay's forward waits this long past the retry budget for new bytes
STALL_S = "<retry budget + 30 s>"


def blob_placeholder(codec: str, index: int) -> str:
    """A dry run's stand-in for the digest of layer INDEX's blob (known once it is compressed)."""
    return f"sha256:<{codec} blob of layer {index + 1}>"


def transfer_steps(plan: ShipPlan, host: Host) -> list[Step]:
    """The steps the executor runs for PLAN on HOST, in order (a dry run's view: placeholders
    stand for blob digests and sizes; a blob already staged is only verified, not sent)."""
    docker, staging = host.docker, host.staging_dir
    if plan.route == "noop":
        return []
    if plan.route == "tag":
        return [tag(docker, plan.host_id or plan.image_id, plan.ref)]
    if plan.route == "registry":
        return [pull(plan, docker, [EXPECTED_IDS], PUSHED, staging=staging, records=PUSHED_BLOBS,
                     records_from=PUSHED, preview=True)]
    assert plan.codec is not None
    codec = plan.codec.name
    mode = codec if plan.codec.host_decompress else "link"
    steps = [origin_pull(docker, plan.origin)] if plan.origin else []
    steps.append(prepare(staging))
    relay, feeds = plan.relay, plan.relay_feeds  # feeds: the host is a node of its site's tree
    if relay is not None:
        assert plan.relay_staging is not None
        keys = host.authorized_keys
        if relay != host.name:  # the site's relay feeds its own staging from its copy, with no key
            inbound = rc.relay_staging(staging) if feeds else staging
            steps.append(authorize(relay, inbound, keys, KEY_LINE.replace("<staging>", inbound)))
        if feeds or relay == host.name:
            steps.append(authorize(host.name, staging, keys, ""))
    files: list[ld.LoadFile] = []
    for i in plan.missing:
        digest = blob_placeholder(codec, i)
        if relay is not None and plan.relay_staging is not None:
            to_relay = receive(rc.relay_staging(plan.relay_staging), digest, codec, BLOB_SIZE, HELD)
            steps.append(Step(f"{to_relay.label} to relay {relay}", to_relay.argv,
                              f"runs on {relay}, once per site for every host it serves (the site's relay gets "
                              "it from the workstation, any other node of the tree from the node before it)"))
            dest = host.internal_ip or host.address
            growing = cmd.growing_path(rc.relay_staging(plan.relay_staging), plan.diff_ids[i], codec, "<level>")
            steps.append(forward(relay, plan.relay_staging, digest, codec, BLOB_SIZE, HELD,
                                 rc.ship_dir(plan.relay_staging, SHIP_ID), rc.ssh_dest(host.user, dest), host.port,
                                 STALL_S, "<n>", rc.receiver_path(staging) if host.name == relay else "", growing))
            if feeds and relay != host.name:  # into the host's copy, then from it into its staging
                own = forward(host.name, staging, digest, codec, BLOB_SIZE, HELD,
                              rc.ship_dir(staging, SHIP_ID), "-", host.port, STALL_S, "<n>", rc.receiver_path(staging))
                steps.append(replace(own, note=f"runs on {host.name}, which passes it on to {', '.join(feeds)} too"))
        else:
            steps.append(receive(staging, digest, codec, BLOB_SIZE, HELD))
        files.append(ld.LoadFile(plan.diff_ids[i], cmd.blob_path(staging, digest, codec), -1))  # size not known yet
    # records: the layers left out, by the blob the host has (the sent ones' digests are not known yet)
    records = list(plan.reused)
    if files:
        first = plan.missing[0]
        steps.append(stand_in_load(docker, staging, plan.image_id, mode, HEAD_BLOCKS, files[:1],
                                   [r for r in records if r[0] in plan.diff_ids[:first + 1]], f"1-{first + 1}"))
    names = [posixpath.basename(f.src) for f in files]
    if relay is not None and relay != host.name:
        gone = revoke(relay, keys, SHIP_ID)
        steps.append(replace(gone, note="once the ship ends (its subtree is served by then)") if feeds else gone)
    steps.append(install(docker, staging, plan.image_id, plan.host_id or plan.image_id, plan.ref, names, mode,
                         HEAD_BLOCKS, [], records, tagged=True, previous=plan.ref_was or "", preview=True))
    return steps
