"""The two transfer routes as steps on one host's Job (tarball: stage, assemble, load; registry: pull)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from deployer.commands import ship as cmd
from deployer.errors import DeployError
from deployer.local.cache import Blob
from deployer.local.export import Exporter
from deployer.local.tarball import manifest_json
from deployer.ship.progress import Reporter
from deployer.ship.registry import Pusher, pull_and_tag
from deployer.ship.tarball import (
    decompress_layers,
    load_and_verify,
    load_dir_tar,
    seed_load_dir,
    stage_blob,
    tag_and_verify,
)

if TYPE_CHECKING:
    from deployer.ship.runner import Job


def _estimate_total(plan_raw: int, known: list[Blob]) -> int:
    """Bytes to send: exact for blobs compressed so far, the same ratio for the rest."""
    size = sum(b.size for b in known)
    raw = sum(b.raw_size for b in known)
    rest = max(0, plan_raw - raw)
    return size + (int(rest * size / raw) if raw else rest)


def run_tarball(job: Job, exporter: Exporter | None, reporter: Reporter) -> None:
    """Stage the missing blobs (resumable, verified), assemble the load dir, load, verify, tag."""
    host, plan, conn, image = job.host, job.plan, job.conn, job.image
    assert plan is not None and plan.codec is not None
    name, staging, docker_argv = host.name, host.staging_dir, host.docker
    codec = plan.codec
    job.counter.on_sent = lambda n: reporter.sent(name, n)
    conn.run(cmd.prepare_argv(staging), what="preparing the staging dir", timeout=60)
    blobs: list[tuple[Blob, str]] = []
    assert exporter is not None  # the runner starts one export whenever a host takes this route
    for k, index in enumerate(plan.missing, 1):
        reporter.phase(name, "compressing" if not blobs else "sending", f"layer {k}/{len(plan.missing)}")
        blob = exporter.blob(image.diff_ids[index], codec.name)
        reporter.total(name, _estimate_total(plan.raw_bytes, [b for b, _ in blobs] + [blob]))
        reporter.phase(name, "sending", f"layer {k}/{len(plan.missing)}")
        before = job.counter.sent
        staged = stage_blob(conn, staging, blob, job.counter, note=lambda m: reporter.note(name, m))
        if job.counter.sent > before:
            job.layers_sent += 1
        blobs.append((blob, staged))
    reporter.total(name, job.counter.sent)
    assert exporter is not None
    config = exporter.config()
    load = cmd.load_dir(staging, image.id)
    try:
        reporter.phase(name, "loading", "assembling")
        seed_load_dir(conn, load, load_dir_tar(image.id_hex, config, manifest_json(image, ())), job.counter)
        if codec.host_decompress and blobs:
            reporter.phase(name, "loading", f"decompressing {len(blobs)} layer(s)")
            decompress_layers(conn, blobs, load, codec.name)
        elif blobs:
            conn.run(cmd.link_layers_argv([(staged, cmd.layer_path(load, b.diff_id)) for b, staged in blobs]),
                     what="assembling the load dir", timeout=300)
        reporter.phase(name, "loading", "docker load")
        load_and_verify(conn, docker_argv, load, image.id)
        reporter.phase(name, "verifying")
        job.verified = tag_and_verify(conn, docker_argv, image.id, image.ref, image.id)
        reporter.phase(name, "cleaning")
        conn.run(cmd.remove_argv([load, *(staged for _, staged in blobs)]), what="cleaning staging", timeout=300)
    except DeployError:
        # the load dir is derived data; the verified blobs stay for the next attempt
        try:
            conn.run(cmd.remove_argv([load]), what="clearing the load dir", timeout=120, check=False)
        except DeployError:
            pass
        raise


def run_registry(job: Job, pusher: Pusher, reporter: Reporter) -> None:
    """Push once (shared by all hosts of this ship), pull on the host, verify the id, tag."""
    host, plan, conn, image = job.host, job.plan, job.conn, job.image
    assert plan is not None and plan.registry_ref is not None and host.registry
    name = host.name
    reporter.phase(name, "pushing", plan.registry_ref)
    job.counter.on_sent = lambda n: reporter.sent(name, n)
    _stats, pushed_here = pusher.push(host.registry, on_bytes=job.counter.add)
    if not pushed_here:
        reporter.note(name, f"{plan.registry_ref} already pushed by this ship")
    reporter.phase(name, "pulling", plan.registry_ref)
    pulled, job.verified = pull_and_tag(conn, host.docker, plan.registry_ref, image.ref, image.id)
    job.layers_sent = pulled.layers_pulled
