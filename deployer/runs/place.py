"""Placement (`deploy run --any --gpus N`, `run.place: any`): start on ONE host of the selection,
the one with the fewest free GPUs that still fit (best fit), on exactly those devices.

Free means no running deployer container holds the GPU and nvidia-smi shows it idle (gpuuse.Busy).
Two placements at once never share a GPU: the chosen GPUs are locked on the host by uuid (all or
none, commands.gpulock), looked at again while locked, and released once the container runs (it
then holds them, as status shows). A GPU another placement holds is left out and the choice made
again, so concurrent placements spread over the free GPUs.
"""
from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, BinaryIO

from deployer.commands import gpulock
from deployer.commands import run as cmd
from deployer.errors import PreflightError, SpecError
from deployer.fleet import Outcome
from deployer.history import who
from deployer.inventory.host import Host
from deployer.runs import status as statuses
from deployer.runs.gpuuse import GpuUse
from deployer.transport.retry import connect_retrying
from deployer.transport.session import Session

if TYPE_CHECKING:
    from deployer.runs.start import Prepared, Reporter, Started

ATTEMPTS = 6  # fresh looks at the fleet before giving up (each after a lost race for some GPUs)
STALE_LOCK_S = 600  # a placement holds its GPU locks for seconds; ten minutes means it died


@dataclass(frozen=True)
class Candidate:
    """One host as placement sees it: why it cannot take anything at all, or its GPUs."""

    host: str
    reason: str | None = None
    gpus: tuple[GpuUse, ...] = ()
    locked: frozenset[str] = frozenset()  # uuids another placement is starting a container on

    def free(self) -> list[GpuUse]:
        return [g for g in self.gpus if g.free and g.uuid not in self.locked]


@dataclass(frozen=True)
class Choice:
    """Where the container goes: a host and the GPUs it gets."""

    host: str
    indexes: tuple[int, ...]
    uuids: tuple[str, ...]
    free_before: int  # free GPUs the host had (best fit: the fewest that still fit)

    @property
    def gpus_value(self) -> str:
        """The --gpus value for exactly these devices (a list is quoted: the value is CSV)."""
        devices = ",".join(str(i) for i in self.indexes)
        return f'"device={devices}"' if len(self.indexes) > 1 else f"device={devices}"


def why_not(c: Candidate, want: int) -> str:
    """Why host c cannot take a container that needs `want` GPUs."""
    if c.reason is not None:
        return c.reason
    if not c.gpus:
        return "no GPUs (nvidia-smi lists none)"
    taken = [f"GPU {g.index} {g.why_not_free()}" for g in c.gpus if not g.free]
    taken += [f"GPU {g.index} being placed by another deploy" for g in c.gpus if g.free and g.uuid in c.locked]
    head = f"{len(c.free())} of {len(c.gpus)} GPU(s) free, {want} needed"
    return head + (": " + "; ".join(taken) if taken else "")


def choose(candidates: Sequence[Candidate], want: int) -> Choice | dict[str, str]:
    """Best fit: the host with the fewest free GPUs that still has `want` (first in order on a tie),
    and its lowest free indexes; else host -> why not (pure)."""
    fits = [(len(c.free()), i, c) for i, c in enumerate(candidates) if c.reason is None and len(c.free()) >= want]
    if not fits:
        return {c.host: why_not(c, want) for c in candidates}
    n, _, best = min(fits, key=lambda t: (t[0], t[1]))
    picked = sorted(best.free(), key=lambda g: g.index)[:want]
    return Choice(best.host, tuple(g.index for g in picked), tuple(g.uuid for g in picked), n)


def candidate(hs: statuses.HostStatus, locked: frozenset[str] = frozenset()) -> Candidate:
    """A host's status (all its containers, unfiltered) as a placement candidate."""
    if not hs.reachable:
        return Candidate(hs.host, f"unreachable: {hs.error}")
    if hs.error:
        return Candidate(hs.host, hs.error)
    return Candidate(hs.host, None, hs.gpu_use, locked)


def wanted_gpus(prepared: Mapping[str, Prepared]) -> int:
    """How many GPUs the container needs (every host's spec must agree)."""
    counts = {p.gpus.count for p in prepared.values() if p.gpus is not None}
    if len(counts) != 1 or min(counts) < 1:
        raise SpecError("placing by free GPUs needs one number of GPUs for every host (--gpus N)")
    return counts.pop()


# -- on the hosts ----------------------------------------------------------------------------

def _owner(token: str) -> str:
    """The owner line of our GPU locks: who, where, which process, since when."""
    return json.dumps({"by": who(), "workstation": socket.gethostname(), "pid": os.getpid(), "token": token,
                       "since": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                      sort_keys=True, separators=(",", ":"))


def _dead(state: gpulock.GpuLockState) -> bool:
    """A lock left by a dead placement: older than any placement takes, or its process on this
    workstation is gone."""
    if state.age_s is not None and state.age_s > STALE_LOCK_S:
        return True
    pid = state.owner.get("pid")
    if state.owner.get("workstation") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _lock(session: Session, host: Host, uuids: Sequence[str], token: str, owner: str) -> str | None:
    """Take the GPUs' locks (all or none); None when taken, else the uuid another placement holds.
    A lock left by a dead placement is cleared and the locks tried again."""
    cleared: set[str] = set()
    while True:
        state = gpulock.parse_lock(session.run(gpulock.lock_argv(host.staging_dir, owner, uuids), timeout=30).stdout)
        if state.acquired:
            return None
        if state.uuid in cleared or not _dead(state):
            return state.uuid
        cleared.add(state.uuid)
        session.run(gpulock.takeover_argv(host.staging_dir, state.uuid, str(state.owner.get("token") or "")),
                    timeout=30)


def place_and_start(hosts: list[Host], prepared: Mapping[str, Prepared], *, parallel: int = 8, attach: bool = False,
                    reporter: Reporter | None = None, output: BinaryIO | None = None,
                    timeout: float = 10.0) -> list[Outcome[Started]]:
    """Choose one host and its GPUs, lock them, start there (runs.start), release the locks.

    No host fits: every host's outcome is a PreflightError saying why not."""
    from deployer.runs import start as starting

    want = wanted_gpus(prepared)
    say = reporter or (lambda _h, _m: None)
    by_name = {h.name: h for h in hosts}
    skip: dict[str, set[str]] = {}  # uuids other placements hold, per host
    unfit: dict[str, str] = {}  # hosts that lack the image, and why
    token = uuid.uuid4().hex
    owner = _owner(token)
    picked: Choice | dict[str, str] = {}
    races = 0
    while races < ATTEMPTS:
        seen = statuses.gather(hosts, parallel=parallel, timeout=timeout)
        picked = choose([Candidate(hs.host, unfit[hs.host]) if hs.host in unfit
                         else candidate(hs, frozenset(skip.get(hs.host, ()))) for hs in seen], want)
        if not isinstance(picked, Choice):
            break
        host = by_name[picked.host]
        image = prepared[host.name].spec.image
        with connect_retrying(host, timeout=timeout) as session:
            found = session.run(cmd.image_inspect_argv(host.docker, image), check=False)
            if not found.ok:
                unfit[host.name] = (f"image {image} is not on this host (deploy ship --host {host.name} --image {image})"
                                    if "no such" in found.stderr.lower() else
                                    f"cannot inspect image {image}: {found.stderr_tail(1).strip() or found.exited}")
                continue
            held = _lock(session, host, picked.uuids, token, owner)
            if held is not None:
                skip.setdefault(host.name, set()).add(held)
                races += 1
                continue
            try:
                # Looked at again while locked: a placement that started its container and released
                # its locks after we looked holds these GPUs now.
                now = statuses.parse(host.name, session.run(cmd.status_argv(host.docker), timeout=60).stdout)
                taken = [g.uuid for g in now.gpu_use if g.uuid in picked.uuids and not g.free]
                if taken or now.error:
                    skip.setdefault(host.name, set()).update(taken)
                    races += 1
                    continue
                say(host.name, f"placed here: GPU {', '.join(map(str, picked.indexes))} "
                               f"({picked.free_before} free; best fit for {want})")
                spec = replace(prepared[host.name].spec, gpus=picked.gpus_value, place=None)
                started = starting.start([host], spec, parallel=1, reporter=reporter, timeout=timeout)
            finally:
                session.run(gpulock.unlock_argv(host.staging_dir, token, picked.uuids), check=False, timeout=30)
        if attach and started[0].ok and started[0].value is not None:
            value = started[0].value
            with connect_retrying(host, timeout=timeout) as session:
                code = starting.follow_to_exit(session, host, value.name, output, timeout=timeout)
            started = [Outcome(host, value=replace(value, exit_code=code))]
        return started
    reasons = picked if isinstance(picked, dict) else {}
    return [Outcome(h, error=PreflightError(h.name, f"cannot place a container that needs {want} free GPU(s): "
                                            f"{reasons.get(h.name, 'other placements kept taking the free GPUs')}",
                                            hint=_hint(reasons)))
            for h in hosts]


def _hint(reasons: Mapping[str, Any]) -> str | None:
    if not reasons:
        return "try again"
    return "free GPUs up (deploy stop NAME), ask for fewer, or widen --host; `deploy status` shows who uses what"
