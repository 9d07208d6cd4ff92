"""`deploy bundle` (wiring only): write a compressed docker-load tarball for air-gapped sites."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from deployer.cli import output
from deployer.cli.app import cli
from deployer.cli.context import AppContext
from deployer.codec import CODECS
from deployer.errors import SpecError
from deployer.local.bundle import (
    BundleResult,
    Progress,
    Target,
    target_warnings,
    write_bundle,
)
from deployer.local.client import docker_client
from deployer.local.image import inspect
from deployer.probe import probe_target
from deployer.sizes import human_bytes

EPILOG = """\b
Examples:
  deploy bundle --image trainer:v3 -o trainer-v3.tar.zst             # full image
  deploy bundle --image trainer:v3 -o trainer-v3.delta.zst --for airgap01   # only what airgap01 lacks
  deploy bundle --image trainer:v3 -o t.tar.gz --codec gzip          # for Docker < 23 without zstd
  deploy bundle --image trainer:v3 -o t.tar.zst --level 19 --json

\b
On the air-gapped server:
  zstd -dc trainer-v3.tar.zst | docker load       # any Docker version
  docker load -i trainer-v3.tar.zst               # Docker >= 23 (and any Docker for --codec gzip)

--for HOST connects once over SSH (inventory settings, strict host keys) to list the layers
HOST already has; the bundle then leaves those out and loads only there (or on a host with
the same base layers). Layers are compressed once and cached (~/.cache/deployer/blobs), so
bundles and ships of the same image share the work.
"""


@cli.command("bundle", epilog=EPILOG)
@click.option("--image", "image_ref", required=True, metavar="REF", help="Local image to bundle (name:tag or id).")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, writable=True),
              metavar="FILE", help="Bundle file to write (atomically: FILE.partial, then renamed).")
@click.option("--for", "for_host", metavar="HOST",
              help="Leave out the layers this inventory host already has.")
@click.option("--level", type=click.IntRange(1, 19), default=3, show_default=True,
              help="Compression level (zstd 1-19; gzip uses min(level, 9)).")
@click.option("--codec", type=click.Choice(CODECS), default="zstd", show_default=True,
              help="zstd: smaller and faster; gzip: `docker load -i` reads it on every Docker version.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_obj
def bundle(app: AppContext, image_ref: str, out: str, for_host: str | None, level: int, codec: str,
           as_json: bool) -> None:
    """Write a local image as one compressed file that `docker load` takes on a server no
    network reaches (sneakernet): the full image, or only the layers HOST lacks."""
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise SpecError(f"-o {out}: directory {parent} does not exist")
    target: Target | None = None
    if for_host:
        hosts = app.select(for_host)
        if len(hosts) != 1:
            raise SpecError(f"--for takes one host; {for_host!r} matches {len(hosts)}: "
                            + ", ".join(h.name for h in hosts[:5]))
        output.info(f"{hosts[0].name}: listing the layers it has")
        target = probe_target(hosts[0])
    client = docker_client()
    image = inspect(image_ref, client)
    for message in target_warnings(codec, target):
        output.warn(message)
    with _progress(image_ref) as report:
        result = write_bundle(image, out, codec=codec, level=level, target=target, client=client,
                              progress=report)
    _report(result, as_json)


def _report(result: BundleResult, as_json: bool) -> None:
    if as_json:
        output.emit_json(result.to_json())
        return
    left_out = result.layers_total - result.layers_included
    extra = f", {left_out} already on {result.target}" if result.target else ""
    output.info(
        f"wrote {result.file}: {result.layers_included}/{result.layers_total} layers{extra}, "
        f"{human_bytes(result.bytes)} ({human_bytes(result.raw_bytes)} uncompressed), {result.seconds:.1f}s"
    )
    output.info(f"load it with: {result.load_command}")


@contextmanager
def _progress(label: str) -> Iterator[Progress]:
    """Rich bars on a terminal, a plain line every few seconds otherwise (both on stderr)."""
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TaskID,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        with Bar("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                 TransferSpeedColumn(), TimeRemainingColumn(), console=output.stderr, transient=True) as bar:
            tasks: dict[str, TaskID] = {}

            def rich_report(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(f"{phase} {label}", total=total or None)
                bar.update(tasks[phase], completed=done, total=total or None)

            yield rich_report
        return
    last: dict[str, float] = {}

    def plain_report(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase in last and now - last[phase] < 5 and done < total:
            return
        last[phase] = now
        output.info(f"{phase} {label}: {human_bytes(done)}" + (f" of ~{human_bytes(total)}" if total else ""))

    yield plain_report
