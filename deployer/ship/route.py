"""The two transfer routes as steps on one host's Job (tarball: stage, assemble, load; registry: pull)."""
from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

from deployer.commands import ship as cmd
from deployer.errors import DeployError
from deployer.local.cache import Blob
from deployer.local.export import Exporter
from deployer.local.tarball import manifest_json
from deployer.ship.loadstream import StreamLoad
from deployer.ship.progress import Reporter
from deployer.ship.registry import Pusher, pull_and_tag
from deployer.ship.tarball import (
    finish_blob,
    install,
    load_dir_tar,
    seed_load_dir,
    send_blob,
    unpack_layer,
)

if TYPE_CHECKING:
    from deployer.ship.runner import Job

log = logging.getLogger(__name__)


def _estimate_total(plan_raw: int, known: list[Blob]) -> int:
    """Bytes to send: exact for blobs compressed so far, the same ratio for the rest."""
    size = sum(b.size for b in known)
    raw = sum(b.raw_size for b in known)
    rest = max(0, plan_raw - raw)
    return size + (int(rest * size / raw) if raw else rest)


def _in_completion_order(exporter: Exporter, codec: str, diff_ids: list[str]) -> Iterator[Blob]:
    """This host's blobs as the export finishes them (docker save's layer order is not the image's)."""
    left = dict.fromkeys(diff_ids)
    if not left:
        return
    for blob in exporter.ready():
        if blob.codec == codec and blob.diff_id in left:
            del left[blob.diff_id]
            yield blob
            if not left:
                return
    for diff_id in left:  # not produced by this export: the cache has it, or this raises why not
        yield exporter.blob(diff_id, codec)


def _stage(job: Job, exporter: Exporter, reporter: Reporter, wanted: list[str], got: dict[str, Blob],
           prepare: Callable[[], dict[str, int | None]],
           seed: Callable[[Future[dict[str, int | None]]], None],
           check: Callable[[Blob, bool, Future[dict[str, int | None]]], None]) -> None:
    """Send each blob as the export finishes it; prepare, seed and per-blob checks run alongside."""
    plan, conn, name, staging = job.plan, job.conn, job.host.name, job.host.staging_dir
    assert plan is not None and plan.codec is not None
    codec, note = plan.codec, partial(reporter.note, name)
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix=f"ship-{name}") as pool:
        prepared = pool.submit(prepare)  # while docker save gets going
        seeded = pool.submit(seed, prepared)
        checks: list[Future[None]] = []
        reporter.phase(name, "compressing", f"layer 1/{len(wanted)}")
        for k, blob in enumerate(_in_completion_order(exporter, codec.name, wanted), 1):
            got[blob.diff_id] = blob
            reporter.total(name, _estimate_total(plan.raw_bytes, list(got.values())))
            reporter.phase(name, "sending", f"layer {k}/{len(wanted)}")
            before = job.counter.sent
            staged = send_blob(conn, staging, blob, job.counter, note, listed=prepared.result())
            if job.counter.sent > before:
                job.layers_sent += 1
            checks.append(pool.submit(check, blob, staged, prepared))
        reporter.total(name, job.counter.sent)
        if checks:
            reporter.phase(name, "verifying", "sha256 of the staged blobs")
        for done in checks:
            done.result()
        seeded.result()


def run_tarball(job: Job, exporter: Exporter | None, reporter: Reporter) -> None:
    """Stage the missing blobs (resumable, verified), then assemble, load, verify and tag on the host.

    Round trips overlap where they are independent: blobs go out in the order the export
    finishes them; each one's sha256 check (and decompress into the load dir, when the host
    decompresses) runs while the next is sent; the load dir is seeded once the config is known.
    """
    host, plan, conn, image = job.host, job.plan, job.conn, job.image
    assert plan is not None and plan.codec is not None
    assert exporter is not None  # the runner starts one export whenever a host takes this route
    name, staging, codec = host.name, host.staging_dir, plan.codec
    job.counter.on_sent = lambda n: reporter.sent(name, n)
    note = partial(reporter.note, name)
    load = cmd.load_dir(staging, image.id)
    mode = codec.name if codec.host_decompress else "link"
    wanted = list(dict.fromkeys(image.diff_ids[i] for i in plan.missing))
    got: dict[str, Blob] = {}

    # the host decompresses: docker load can read each layer from the load dir as it lands
    stream = StreamLoad(conn, host.docker, load, image.id, job.counter, note) if mode != "link" else None

    def prepare() -> dict[str, int | None]:
        res = conn.run(cmd.prepare_argv(load, cmd.blob_dir(staging)), what="preparing the staging dir", timeout=120)
        if stream is not None:
            stream.start()  # the load dir exists now; files are named to it as they land
        return cmd.parse_stat(res.stdout)

    def seed(prepared: Future[dict[str, int | None]]) -> None:
        # the config may come late in the save stream: wait for it here, not in the send loop
        config, manifest = exporter.config(), manifest_json(image, ())
        prepared.result()
        seed_load_dir(conn, load, load_dir_tar(image.id_hex, config, manifest), job.counter, replace=False)
        if stream is not None:
            stream.add("manifest.json", len(manifest))
            stream.add(f"{image.id_hex}.json", len(config))

    def check(blob: Blob, staged: bool, prepared: Future[dict[str, int | None]]) -> None:
        final = cmd.blob_path(staging, blob.digest, blob.codec)
        if not staged:
            finish_blob(conn, staging, blob, job.counter, note)
        if mode != "link":
            prepared.result()  # the load dir is fresh: unpack into it
            dst = cmd.layer_path(load, blob.diff_id)
            unpack_layer(conn, mode, final, dst, blob.diff_id)
            if stream is not None:
                stream.add(posixpath.relpath(dst, load), blob.raw_size)

    try:
        _stage(job, exporter, reporter, wanted, got, prepare, seed, check)
    except BaseException:
        if stream is not None:
            stream.finish(complete=False)
        raise
    blobs = [got[image.diff_ids[i]] for i in plan.missing]
    layers = [(cmd.blob_path(staging, b.digest, b.codec), cmd.layer_path(load, b.diff_id), b.diff_id) for b in blobs]
    reporter.phase(name, "loading", f"docker load ({len(blobs)} new layer(s))")
    if stream is not None and stream.finish(complete=True):
        log.info("%s: docker load read the layers as they arrived", name)
    try:
        job.verified = install(conn, host.docker, load, image.id, image.ref, mode, layers)
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
    # progress counts Docker's raw layer bytes as they go; bytes_sent is what crossed the wire
    # (compressed), charged to the host that pushed: the others reuse the push
    stats, pushed_here = pusher.push(host.registry, on_bytes=lambda n: reporter.sent(name, n))
    if pushed_here:
        job.counter.add(stats.bytes_sent)
    else:
        reporter.note(name, f"{plan.registry_ref} already pushed by this ship")
    reporter.phase(name, "pulling", plan.registry_ref)
    pulled, job.verified = pull_and_tag(conn, host.docker, plan.registry_ref, image.ref, image.id)
    job.layers_sent = pulled.layers_pulled
