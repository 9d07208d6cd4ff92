"""`deploy logs NAME` over several hosts: every rank of a multi-node job (or every host that has
NAME), each line prefixed with `[RANK HOST] `; with follow, all ranks at once.

Each rank's stream is runs.logs.show (which survives dropped links), in a thread that owns its
failure: the error is handed back and reported after the other ranks' streams ended.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO

from deployer.commands import run as cmd
from deployer.errors import DeployError, HostError
from deployer.fleet import Outcome, for_each_host
from deployer.inventory.host import Host
from deployer.runs.logs import show
from deployer.transport.retry import connect_retrying

if TYPE_CHECKING:
    from deployer.runs.start import Started

Write = Callable[[bytes], None]


@dataclass(frozen=True)
class Source:
    """One stream to show: a host and the prefix of its lines ("" for a lone container)."""

    host: Host
    prefix: str


class Prefixer:
    """Splits one rank's chunks into lines and writes each with its prefix, whole, under a lock
    shared by all ranks, so lines of different ranks never mix (pure but for WRITE)."""

    def __init__(self, prefix: str, write: Write, lock: threading.Lock) -> None:
        self.prefix, self.write, self.lock = prefix.encode(), write, lock
        self.buf = b""

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        if lines:
            with self.lock:
                self.write(b"".join(self.prefix + line + b"\n" for line in lines))

    def flush(self) -> None:
        if self.buf:
            rest, self.buf = self.buf, b""
            with self.lock:
                self.write(self.prefix + rest + b"\n")


def sources(hosts: Sequence[Host], name: str, *, timeout: float,
            resolve: Callable[[Sequence[str]], Sequence[Host]]) -> list[Source]:
    """Where NAME's output is: every rank of its job in rank order (found from any one rank), else
    every selected host that has it. UsageError when none has it."""
    from deployer.runs.manage import unknown_name

    def names(host: Host) -> dict[str, tuple[str, ...]]:
        with connect_retrying(host, timeout=timeout) as session:
            return cmd.parse_names(session.run(cmd.names_argv(host.docker, jobs=True)).stdout)

    found = for_each_host(hosts, names, len(hosts) or 1)
    errors = [o.error for o in found if o.error is not None]
    have = [o.host for o in found if o.value and name in o.value]
    if not have:
        if errors:
            raise errors[0]
        raise unknown_name(name, [n for o in found if o.value for n in o.value], [h.name for h in hosts])
    job = next((o.value[name] for o in found if o.value and o.value.get(name)), ())
    if job:
        by_name = {h.name: h for h in resolve(job)}
        return [Source(by_name[h], f"[{rank} {h}] ") for rank, h in enumerate(job) if h in by_name]
    if len(have) == 1:
        return [Source(have[0], "")]
    return [Source(h, f"[{h.name}] ") for h in have]


def show_all(srcs: Sequence[Source], name: str, write: Write, *, follow: bool = False, tail: str | None = None,
             since: str | None = None, timestamps: bool = False, timeout: float = 10.0,
             on_reconnect: Callable[[str, str], None] | None = None) -> list[DeployError]:
    """Write every source's logs, prefixed; with follow, all at once until every stream ends.
    Returns the errors of the streams that failed (the others still ran to their end)."""
    lock = threading.Lock()
    errors: list[DeployError] = []

    def one(src: Source) -> None:
        out = Prefixer(src.prefix, write, lock)
        try:
            show(src.host, name, out.feed, follow=follow, tail=tail, since=since, timestamps=timestamps,
                 timeout=timeout, on_reconnect=(lambda why: on_reconnect(src.host.name, why)) if on_reconnect else None)
        except DeployError as exc:
            errors.append(exc)
        except Exception as exc:  # noqa: BLE001 - this stream's thread owns its failure (STYLE.md)
            err = HostError(src.host.name, f"log stream failed: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            errors.append(err)
        finally:
            out.flush()

    if not follow:  # rank by rank, each whole
        for src in srcs:
            one(src)
        return errors
    threads = [threading.Thread(target=one, args=(src,), daemon=True, name=f"logs-{src.host.name}") for src in srcs]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():  # joined in slices, so Ctrl-C reaches the main thread at once
            t.join(0.5)
    return errors


def follow_job(started: Sequence[Outcome[Started]], output: BinaryIO | None, *,
               timeout: float = 10.0) -> list[Outcome[Started]]:
    """`deploy run --nodes N --attach`: every rank's output, prefixed, until all ranks ended; then each
    Started carries the job's exit code (the rank that failed first, else 0)."""
    from deployer.runs import gang

    def write(data: bytes) -> None:
        if output is not None:
            output.write(data)
            output.flush()

    srcs = [Source(o.host, f"[{o.value.rank} {o.host.name}] ") for o in started if o.value is not None]
    name = next(o.value.name for o in started if o.value is not None)
    show_all(srcs, name, write, follow=True, timeout=timeout)

    def inspect(host: Host) -> cmd.ContainerStatus | None:
        with connect_retrying(host, timeout=timeout) as session:
            res = session.run(cmd.container_inspect_argv(host.docker, name), check=False, timeout=60)
            return next(iter(cmd.parse_inspect(res.stdout)), None) if res.ok else None

    found = for_each_host([o.host for o in started], inspect, len(started))
    members = [gang.JobRank(i, o.host.name, o.value) for i, o in enumerate(found)]
    code = gang.job_exit_code(members)
    return [Outcome(o.host, value=replace(o.value, exit_code=code)) if o.value is not None else o for o in started]
