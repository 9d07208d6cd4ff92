"""`deploy run|status|logs|stop|rm|history` (wiring only: parse, call deployer.runs, render)."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from deployer.cli import output
from deployer.cli.app import cli, finish
from deployer.cli.context import AppContext
from deployer.cli.inventory import host_pattern_option
from deployer.errors import UsageError
from deployer.fleet import Outcome

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _ctx() -> AppContext:
    ctx = click.get_current_context().find_object(AppContext)
    return ctx if ctx is not None else AppContext()


def _job_hosts(names: Any) -> list[Any]:
    """The inventory's hosts of a multi-node job (by name, in the job's rank order); a host the
    inventory no longer has is named in a warning and left out."""
    by_name = _ctx().inventory().hosts
    for name in names:
        if name not in by_name:
            output.warn(f"{name}: a node of this job, but not in the inventory any more; skipped")
    return [by_name[n] for n in names if n in by_name]


def _lines(outcomes: list[Outcome[Any]], ok: Any) -> None:
    """One line per host on stderr: the error, or what ok(outcome) says was done."""
    for o in outcomes:
        output.info(f"error: {o.error}" if o.error is not None else ok(o))


@cli.command("run", context_settings=_SETTINGS, epilog="""\b
Examples:
  deploy run --host gpu01 --image trainer:v3 --gpus all -v /data/imagenet:/data:ro -- python train.py
  deploy run --host gpus --image trainer:v3 --gpus '"device=0,2"' --shm-size 16g -e WANDB_MODE=offline
  deploy run --host gpu02 --image trainer:v3 --name eval --replace --attach -- python eval.py
  deploy run --host gpus --any --gpus 2 --image trainer:v3 -- python train.py   # wherever 2 GPUs are free
  deploy run --host gpus --nodes 2 --gpus all --image trainer:v3 --name ddp -- torchrun train.py
\b
--gpus takes exactly what `docker run --gpus` takes: all, 2, count=2, device=1,
'"device=0,2"' (quote a list: the value is CSV), device=GPU-<uuid>.
Every host is checked first (GPU runtime and GPUs, image present, volume sources, name
free); if any check fails, nothing starts anywhere. -e values and --env-file contents reach
the container through a private file on the host, never a command line.
\b
--any: free GPUs are those no running deployer container holds and nvidia-smi shows idle
(under 1024 MiB and 10 %; DEPLOYER_GPU_BUSY_MEMORY_MIB, DEPLOYER_GPU_BUSY_UTIL_PCT). The
chosen GPUs are locked on the host until the container runs, so placements started at once
never share a GPU. No host fits: exit 1, saying per host why not.
\b
--nodes N: one job across the first N hosts of --host (inventory order; rank 0 first), each
container with MASTER_ADDR, MASTER_PORT, NNODES, NODE_RANK, NPROC_PER_NODE (and torchrun's
PET_* twins), DEPLOYER_NODE_IPS and NCCL_SOCKET_IFNAME, host networking and --ipc host. Every
node is checked first (image id, GPUs free, master port free, workers reach it); all ranks
start together; with stop-all, a rank that exits non-zero stops the others (a watcher on each
node does it, so the job is guarded after this command returns). `deploy stop NAME` stops all.""")
@host_pattern_option(required=True)
@click.option("--image", required=True, help="Image reference on the host (ship it first: deploy ship).")
@click.option("--name", help="Container name. Default: image name + UTC time, e.g. sample-20261129-153012.")
@click.option("--gpus", help="GPUs, as docker run --gpus: all | N | device=I | '\"device=I,J\"' | device=GPU-uuid.")
@click.option("-v", "--volume", "volumes", multiple=True, metavar="SRC:DST[:ro|rw]",
              help="Bind mount (absolute host path) or named volume. Repeatable.")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="Environment variable (K alone: from your environment).")
@click.option("--env-file", type=click.Path(dir_okay=False), help="Local file of K=V lines (docker's format).")
@click.option("--shm-size", help="Size of /dev/shm (e.g. 16g).")
@click.option("--ipc", help="IPC mode (host, private, shareable, none, container:NAME).")
@click.option("--memory", help="Memory limit (e.g. 32g).")
@click.option("--restart", help="Restart policy: no, always, unless-stopped, on-failure[:N].")
@click.option("--workdir", help="Working directory in the container.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Extra container label. Repeatable.")
@click.option("--mkdirs", is_flag=True, help="Create missing volume source directories on the hosts.")
@click.option("--replace", is_flag=True, help="Stop and remove a deployer container of the same name (after all checks pass).")
@click.option("--any", "place", flag_value="any", default=None,
              help="Start on ONE host of --host: the one with the fewest free GPUs that still has --gpus N, "
                   "on exactly those devices.")
@click.option("--nodes", type=click.IntRange(min=1), help="Run ONE job across the first N hosts of --host (torchrun env set).")
@click.option("--master-port", type=int, help="With --nodes: rank 0's rendezvous port (MASTER_PORT).  [default: 29500]")
@click.option("--on-node-failure", type=click.Choice(["stop-all", "ignore"]),
              help="With --nodes: when one rank exits non-zero, stop the others (stop-all, the default) or not.")
@click.option("--network", help="docker --network (a --nodes job defaults to host).")
@click.option("--detach/--attach", "detach", default=True,
              help="--attach (one host, or a --nodes job): stream the output and exit with the container's "
                   "exit code (a job's: its first failing rank's).")
@click.option("--parallel", default=8, show_default=True, help="Hosts handled at once.")
@click.option("--timeout", default=10.0, show_default=True, help="SSH connect timeout, seconds.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the per-host results as JSON: ok, error, hint, then what was started (also when "
                   "Ctrl-C or SIGTERM stops it).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_cmd(pattern: str, image: str, detach: bool, parallel: int, timeout: float, as_json: bool,
            env: tuple[str, ...], labels: tuple[str, ...], **options: Any) -> None:
    """Start a container on every selected host, with GPUs, volumes and environment."""
    from deployer.runs import spec, start

    run_spec = spec.from_flags(image, env=env, labels=labels, environ=os.environ, **options)
    hosts = _ctx().select(pattern)
    with output.outcomes_on_stop(as_json, hosts, start.Started, start.to_json):
        outcomes = start.start(hosts, run_spec, parallel=parallel, attach=not detach, timeout=timeout,
                               reporter=lambda h, m: output.info(f"{h}: {m}"), output=sys.stdout.buffer)
    if as_json:
        output.emit_json(start.to_json(outcomes))
    _lines(outcomes, lambda o: f"{o.host.name}: started {o.value.name} ({o.value.container_id[:12]})"
           + (f" on GPU {(o.value.gpus or '').strip(chr(34)).removeprefix('device=')}"
              if options.get("place") == "any" else "")
           + (f" as rank {o.value.rank} of {o.value.nodes}" if o.value.rank is not None else ""))
    finish([o for o in outcomes if not o.ok])
    if not detach and outcomes[0].value is not None:
        exit_code = outcomes[0].value.exit_code or 0
        if outcomes[0].value.rank is not None:
            output.info(f"{outcomes[0].value.name}: the job ended with code {exit_code}"
                        + (" (the exit code of the rank that failed first)" if exit_code else ""))
        else:
            output.info(f"{outcomes[0].host.name}: {outcomes[0].value.name} exited with code {exit_code}")
        click.get_current_context().exit(exit_code)


@cli.command("status", context_settings=_SETTINGS, epilog="""\b
Examples:
  deploy status                      # every host in the inventory
  deploy status --host gpus --watch  # refresh in place every 2 s (Ctrl-C to leave)
  deploy status train-1 --json       # one run, for scripts
\b
Shows deployer-managed containers: running ones and those that finished in the last 24 h
(--all: every deployer container, however old), then every GPU: memory, utilization and who
uses it (a deployer container, "other process" when it is busy without one, or "free").
Containers deployer did not start are not listed. --json gives one object per selected host:
reachable or not, Docker version and image store, free disk, GPUs and containers. A host that
cannot be asked is shown as unreachable with the reason; the exit code is then 1.""")
@click.argument("name", required=False)
@host_pattern_option()
@click.option("--all", "show_all", is_flag=True, help="Include deployer containers that finished long ago.")
@click.option("--json", "as_json", is_flag=True, help="JSON array, one object per selected host (with its GPUs and containers).")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between --watch refreshes.")
@click.option("--timeout", default=5.0, show_default=True, help="SSH connect timeout per host, seconds.")
@click.option("--parallel", default=16, show_default=True, help="Hosts asked at once.")
def status_cmd(name: str | None, pattern: str, show_all: bool, as_json: bool, watch: bool, interval: float,
               timeout: float, parallel: int) -> None:
    """Show what runs where: containers, state, exit codes, OOM kills, GPUs, per host."""
    from deployer.runs import render, status

    hosts = _ctx().select(pattern)

    def snapshot() -> list[status.HostStatus]:
        return status.snapshot(hosts, name=name, show_all=show_all, parallel=parallel, timeout=timeout,
                               engine=as_json)

    def plain(statuses: list[status.HostStatus]) -> None:
        output.table(render.STATUS_COLUMNS, render.status_rows(statuses))
        job_rows = render.job_rows(statuses)
        if job_rows:
            print(flush=True)
            output.table(render.JOB_COLUMNS, job_rows)
        gpu_rows = render.gpu_rows(statuses)
        if gpu_rows:
            print(flush=True)  # a blank line, then the GPU table with its own header
            output.table(render.GPU_COLUMNS, gpu_rows)

    if watch and not as_json:
        try:
            if output.is_tty():
                from rich.live import Live

                with Live(render.status_renderable(snapshot()), console=output.stdout, auto_refresh=False) as live:
                    while True:
                        time.sleep(interval)
                        title = f"deploy status  {time.strftime('%H:%M:%S')}  (Ctrl-C to leave)"
                        live.update(render.status_renderable(snapshot(), title=title), refresh=True)
            while True:  # piped: a fresh table per refresh
                print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
                plain(snapshot())
                time.sleep(interval)
        except KeyboardInterrupt:
            click.get_current_context().exit(0)
    statuses = snapshot()
    if as_json:
        output.emit_json(status.to_json(statuses))
    elif output.is_tty():
        output.stdout.print(render.status_renderable(statuses))
    else:
        plain(statuses)
    finish(status.failed(statuses))


@cli.command("logs", context_settings=_SETTINGS, epilog="""\b
Examples:
  deploy logs train-1 --host gpu01 -f
  deploy logs train-1 --host gpu01 --tail 100 --since 10m
  deploy logs ddp --host gpu01 -f        # a multi-node job: every rank, lines prefixed [RANK HOST]
\b
With -f a dropped connection is re-opened and the stream resumes where it stopped
(by docker's timestamps), without repeating lines. Ctrl-C ends it. A rank of a multi-node
job (deploy run --nodes) shows the whole job: every rank, from any host of it.""")
@click.argument("name")
@host_pattern_option(required=True, note="Several hosts that have NAME are shown one after another, prefixed.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new output.")
@click.option("--tail", help="Only the last N lines (or 'all').")
@click.option("--since", help="Only output since T (e.g. 10m, 2h, 2026-11-29T15:30:00).")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each line with docker's timestamp.")
@click.option("--timeout", default=10.0, show_default=True, help="SSH connect timeout, seconds.")
def logs_cmd(name: str, pattern: str, follow: bool, tail: str | None, since: str | None, timestamps: bool,
             timeout: float) -> None:
    """Stream a container's output (stdout and stderr)."""
    from deployer.runs import joblogs

    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    try:
        srcs = joblogs.sources(_ctx().select(pattern), name, timeout=timeout,
                               resolve=_job_hosts)
        errors = joblogs.show_all(srcs, name, write, follow=follow, tail=tail, since=since, timestamps=timestamps,
                                  timeout=timeout,
                                  on_reconnect=lambda h, why: output.warn(f"{h}: connection lost ({why}); reconnecting"))
    except KeyboardInterrupt:
        click.get_current_context().exit(0)
    except BrokenPipeError:  # `deploy logs ... | head`
        sys.stderr.close()
        click.get_current_context().exit(0)
    if len(srcs) == 1 and errors:
        raise errors[0]
    for err in errors:
        output.info(f"error: {err}")
    finish(errors)


@cli.command("stop", context_settings=_SETTINGS, epilog="""\b
Examples:
  deploy stop train-1 --host gpu01
  deploy stop train-1 --host gpus --rm --timeout 30
\b
A rank of a multi-node job (deploy run --nodes) stops the whole job: every node it runs on,
whether or not --host names it.""")
@click.argument("name")
@host_pattern_option(required=True, note="Hosts without the container are skipped.")
@click.option("--rm", "remove", is_flag=True, help="Remove the container after it stopped.")
@click.option("--timeout", "stop_timeout", type=int, help="Seconds to wait after SIGTERM before SIGKILL (docker's default 10).")
@click.option("--parallel", default=8, show_default=True, help="Hosts handled at once.")
def stop_cmd(name: str, pattern: str, remove: bool, stop_timeout: int | None, parallel: int) -> None:
    """Stop a deployer container on every selected host that has it."""
    from deployer.runs import manage

    outcomes = manage.stop(_ctx().select(pattern), name, timeout_s=stop_timeout, remove=remove, parallel=parallel,
                           resolve=_job_hosts)
    done = "stopped and removed" if remove else "stopped"
    _lines(outcomes, lambda o: f"{o.host.name}: {done} {name}" if o.value.found
           else f"{o.host.name}: no container {name} (skipped)")
    finish([o for o in outcomes if not o.ok])


@cli.command("rm", context_settings=_SETTINGS, epilog="""\b
Examples:
  deploy rm train-1 --host gpu01
  deploy rm train-1 --host gpus --force   # also a running one""")
@click.argument("name")
@host_pattern_option(required=True, note="Hosts without the container are skipped.")
@click.option("-f", "--force", is_flag=True, help="Remove even if running (kills it).")
@click.option("--parallel", default=8, show_default=True, help="Hosts handled at once.")
def rm_cmd(name: str, pattern: str, force: bool, parallel: int) -> None:
    """Remove a deployer container on every selected host that has it."""
    from deployer.runs import manage

    outcomes = manage.rm(_ctx().select(pattern), name, force=force, parallel=parallel)
    _lines(outcomes, lambda o: f"{o.host.name}: removed {name}" if o.value.found
           else f"{o.host.name}: no container {name} (skipped)")
    finish([o for o in outcomes if not o.ok])


@cli.command("history", context_settings=_SETTINGS, epilog="""\b
Examples:
  deploy history --host gpus
  deploy history --host gpu01 --name train-1 --json""")
@host_pattern_option()
@click.option("--name", help="Only records about this container name.")
@click.option("--limit", default=50, show_default=True, help="Newest N records (0: all).")
@click.option("--json", "as_json", is_flag=True, help="JSON array of records, newest first.")
def history_cmd(pattern: str, name: str | None, limit: int, as_json: bool) -> None:
    """What was shipped, run, stopped and removed on the hosts, newest first."""
    from deployer.runs import journal, render

    if limit < 0:
        raise UsageError("--limit must be 0 or more")
    records, errors = journal.collect(_ctx().select(pattern), name=name, limit=limit or None)
    if as_json:
        output.emit_json(records)
    else:
        output.table(render.HISTORY_COLUMNS, render.history_rows(records))
    for err in errors.values():
        output.info(f"error: {err}")
    finish(errors)
