"""Run the scenario x uplink x tool matrix on the testbed, one measured sample at a time."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import hosts, procmon, tools
from .account import Accounting
from .config import REGISTRY, BenchConfig, hosts_for, inventory, lanes_for
from .image import ImageInfo, ImagePair
from .tools import Ship

DEPLOY = Path(sys.executable).parent / "deploy"


@dataclass
class Sample:
    """One timed ship: scenario, uplink rate (None = unthrottled), tool, repetition, and figures."""

    scenario: str
    rate: str | None
    tool: str
    rep: int
    hosts: tuple[str, ...]
    host_store: str = ""  # the lane: the hosts' image store ("overlay2", "containerd", "mixed" for (c))
    ws_store: str = ""  # the workstation daemon's image store
    ok: bool = False
    seconds: float | None = None
    uplink_bytes: int | None = None
    own_bytes: int | None = None  # the step's own connections only (see account.py); None for registry tools
    peak_rss: int | None = None
    verified: bool = False
    # What the check compared, per host: the host's image id and its config digest (the id differs
    # between stores for the same image; the config digest does not).
    checked: dict[str, dict[str, str]] = field(default_factory=dict)
    background: float | None = None  # bytes/s on the uplink just before the step (others' traffic)
    error: str | None = None
    deployer: list[dict[str, Any]] | None = None  # deployer's own --json report, for its rows
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_sent(self) -> int | None:
        """deployer's own count of bytes it put on the wire, summed over hosts."""
        if not self.deployer:
            return None
        return sum(int(r.get("bytes_sent") or 0) for r in self.deployer)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes_sent"] = self.bytes_sent
        return d


def settle_disk() -> float:
    """Write back every dirty page (all hosts' files live on this machine's disk); the seconds it took."""
    start = time.monotonic()
    os.sync()
    return time.monotonic() - start


def floor_size(samples: list[Sample], fallback: int) -> int:
    """The floor's payload: the least deployer sent in a successful (a) ship so far, else FALLBACK."""
    sent = [s.bytes_sent for s in samples if s.ok and s.scenario == "a" and s.tool == tools.DEPLOYER and s.bytes_sent]
    return min(sent) if sent else fallback


class Runner:
    def __init__(self, cfg: BenchConfig, pair: ImagePair, run_id: str, log: Callable[[str], None],
                 acct: Accounting | None = None, source: Path | None = None, ws_store: str = ""):
        self.cfg, self.pair, self.run_id, self.log = cfg, pair, run_id, log
        self.ws_store = ws_store
        self.acct, self.source = acct, source
        self.counter = 0
        self.results: list[Sample] = []  # grows as steps finish, so an interrupted run can still report
        self.cache = Path(tempfile.mkdtemp(prefix="deployer-bench-cache-"))
        # deployer's warm start: this run's own server (started in the accounting cgroup, so its
        # children's bytes count as deployer's own), by the first command, kept warm for the rest
        self.runtime = self.cache / "run"
        self.runtime.mkdir(mode=0o700)
        self.timeout = max(600.0, 1500.0 * cfg.size_gb * (3 if cfg.rate else 1))

    def warm_up(self) -> None:
        """Start deployer's warm server before the first timed step, as any earlier command would
        have on a user's workstation ("deployer-cold" rows time every run without it)."""
        procs = self.acct.procs_file() if self.acct else None
        procmon.run([str(DEPLOY), "--version"], env=self.env(), timeout=60, cgroup_procs=procs)
        deadline = time.monotonic() + 60
        while not list(self.runtime.glob("deployer/warm-*.sock")) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not list(self.runtime.glob("deployer/warm-*.sock")):
            self.log("warning: deployer's warm server did not start; every deployer step runs cold")

    def cleanup(self) -> None:
        for pid in procmon.warm_servers(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
            try:
                if str(self.runtime).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        shutil.rmtree(self.cache, ignore_errors=True)

    def env(self, cache_home: str | None = None) -> dict[str, str]:
        # A private cache (facts, layer listings, blobs) per sample: nothing a previous sample learnt
        # may survive a host reset. (b)'s two ships share one, as a workstation's ships would.
        env = dict(os.environ)
        env["XDG_CACHE_HOME"] = cache_home or tempfile.mkdtemp(dir=self.cache)
        env["XDG_RUNTIME_DIR"] = str(self.runtime)
        env.pop("DEPLOY_INVENTORY", None)
        if self.source is not None:
            # Ahead of the editable install on sys.path: the `deploy` script imports this snapshot.
            env["PYTHONPATH"] = str(self.source)
        return env

    def samples(self) -> list[Sample]:
        """Every step of the matrix, in order, reps innermost so that drift hits all tools alike."""
        out = self.results
        for scenario in self.cfg.scenarios:
            for lane in lanes_for(scenario, self.cfg.host_stores):
                for rate in self.cfg.modes():
                    if rate is not None and scenario not in self.cfg.throttled_scenarios:
                        continue
                    for rep in range(1, self.cfg.reps + 1):
                        for tool in tools.tools_for(scenario, lane):
                            if self.cfg.tools and tool not in self.cfg.tools:
                                continue
                            out.append(self.measure(scenario, lane, rate, tool, rep))
        return out

    def measure(self, scenario: str, lane: str, rate: str | None, tool: str, rep: int) -> Sample:
        """One sample; a failed step is tried once more (the testbed is shared with other tests that
        cut links and reset connections), and the first failure is kept in the notes."""
        sample = self._measure(scenario, lane, rate, tool, rep)
        if not sample.ok:
            first = sample.error
            sample = self._measure(scenario, lane, rate, tool, rep)
            sample.notes.append(f"second attempt; the first failed: {(first or '')[-500:]}")
        return sample

    def _measure(self, scenario: str, lane: str, rate: str | None, tool: str, rep: int) -> Sample:
        hs = hosts_for(scenario, lane, tool)
        sample = Sample(scenario, rate, tool, rep, hs, lane, self.ws_store)
        label = (f"({scenario}) {self.ws_store} ws -> {','.join(hs)} ({lane}) {rate or 'unthrottled'} {tool} "
                 f"rep {rep}/{self.cfg.reps}")
        self.counter += 1
        uniq = f"{self.run_id}-{self.counter}"
        v1, v2 = self.pair.v1.ref, self.pair.v2.ref
        local_tags: list[str] = []
        ship: Ship | None = None
        try:
            if self.ws_store and (now := hosts.ws_store()) != self.ws_store:
                raise RuntimeError(f"the workstation daemon now runs the {now} store, not {self.ws_store} as when the "
                                   "run started: someone ran `scripts/testbed up --ws-store` meanwhile")
            hosts.throttle(None)
            for h in hs:
                hosts.reset(h)
                if hosts.layer_count(h):
                    sample.notes.append(f"{h} kept {hosts.layer_count(h)} layers (in use by running containers)")
                if blobs := hosts.content_blobs(h):
                    sample.notes.append(f"{h} kept {blobs} blobs in its containerd content store after the reset")
            if tool == tools.DEPLOYER_REGISTRY:
                # A fresh reference per step, so that deployer pushes to a repo that holds nothing yet.
                v1, v2 = (self._tag(ref, f"deployer-bench-{uniq}/ml", local_tags) for ref in (v1, v2))
            if tool in tools.REGISTRY_TOOLS:
                # (e): the registry holds the base, as the origin it was pulled from: only the rest is new
                keep = self._push_base() if scenario == "e" else frozenset()
                hosts.forget_pushes([self.pair.v1.id, self.pair.v2.id], keep=keep)
            elif scenario == "e":
                self._push_base()
            repo = f"bench-{uniq}/ml"
            want = self.pair.v1
            home = tempfile.mkdtemp(dir=self.cache)
            if scenario == "b":
                # The host first gets v1 with the same tool (unthrottled, untimed), then v2 is timed.
                first = Ship(tool, v1, hs, repo)
                try:
                    self._check(self._run(first, home), first, self.pair.v1, Sample(scenario, None, tool, rep, hs))
                finally:
                    self._untag_pushed(first)
                want, v1 = self.pair.v2, v2
            ship = Ship(tool, v1, hs, repo, self._payload() if tool == tools.FLOOR else "")
            hosts.throttle(rate)
            if self.cfg.quiet_seconds:
                # every step starts from a settled disk: the last step's writeback (up to GBs of
                # unpacked layers, whichever tool wrote them) would land on this one's fsyncs
                flushed = settle_disk()
                if flushed > 1.0:
                    sample.notes.append(f"flushing the disk before the step took {flushed:.1f} s")
                sample.background = hosts.wait_quiet(self.cfg.quiet_seconds)
                if sample.background > hosts.QUIET_BPS:
                    sample.notes.append(f"uplink busy before the step: {sample.background / 1e3:.0f} kB/s")
            before, own = hosts.uplink_bytes(), self._own()
            fin = self._run(ship, home)
            sample.uplink_bytes = hosts.uplink_bytes() - before
            if own is not None and tool not in tools.REGISTRY_TOOLS:
                sample.own_bytes = (self._own() or 0) - own
            hosts.throttle(None)
            sample.seconds, sample.peak_rss = fin.seconds, fin.peak_rss
            self._check(fin, ship, want, sample)
            sample.ok = True
        except Exception as exc:  # noqa: BLE001 - one failed step must not end the whole run
            sample.error = str(exc)[-2000:]
        finally:
            self._untag(local_tags)
            if ship is not None:
                self._untag_pushed(ship)
        self.log(self._line(label, sample))
        return sample

    def _push_base(self) -> frozenset[str]:
        """(e): put the pair's base in the registry (unthrottled, untimed; quick when it is there):
        the push gives the local base a repo digest, as a pull from its origin would. Its layers."""
        ref = f"{REGISTRY}/deployer-bench/base:{self.pair.base_tag}"
        subprocess.run(["docker", "tag", self.pair.base_ref, ref], check=True)
        subprocess.run(["docker", "push", "-q", ref], check=True, stdout=subprocess.DEVNULL, timeout=self.timeout)
        return frozenset(layer.diff_id for layer in self.pair.v1.layers[:-1])

    def _payload(self) -> str:
        """FLOOR's file: as many random bytes as deployer sent in the least of this run's (a) ships
        (its stream is the smallest here: one thread, a 4 MB window), else as v1's `zstd -3 -T0`
        stream; written once per size (then read from the page cache)."""
        size = floor_size(self.results, self.pair.v1.zstd_size)
        path = self.cache / f"floor-{size}.bin"
        if not path.exists():
            with open(path, "wb") as fh:
                for left in range(size, 0, -(1 << 20)):
                    fh.write(os.urandom(min(left, 1 << 20)))
        return str(path)

    def _own(self) -> int | None:
        return self.acct.bytes() if self.acct else None

    def _run(self, ship: Ship, cache_home: str) -> procmon.Finished:
        procs = self.acct.procs_file() if self.acct else None
        return procmon.run(tools.argv(ship, DEPLOY, inventory()), env=self.env(cache_home), timeout=self.timeout,
                           cgroup_procs=procs)

    def _check(self, fin: procmon.Finished, ship: Ship, want: ImageInfo, sample: Sample) -> None:
        """Raise unless the step exited 0 and every host now has the exact image: the same config
        digest as the local one (the same config, so the same layers), on either store at either end.

        Image ids are no proof across stores: a containerd-store daemon's id is the digest of a
        manifest or index, which differs from the classic store's id (the config digest) and from
        one containerd-store daemon to the next (compressed or not, gzip or zstd, OCI or Docker)."""
        if ship.tool in tools.DEPLOYERS:
            try:
                sample.deployer = json.loads(fin.stdout)
            except ValueError:
                sample.deployer = None
        if fin.exited != 0:
            tail = (fin.stderr.strip() or fin.stdout.strip())[-1500:]
            raise RuntimeError(f"{ship.tool} exited {fin.exited}: {tail}")
        if ship.tool == tools.FLOOR:
            sample.notes.append(f"the floor ships no image: {os.path.getsize(ship.payload)} random bytes to /dev/null")
            return
        reported = {r.get("host"): r for r in sample.deployer or () if isinstance(r, dict)}
        for h in ship.hosts:
            got = hosts.image_digests(h, ship.pulled_ref)
            if got is None:
                raise RuntimeError(f"{h}: no image {ship.pulled_ref} after the step")
            host_id, digest = got
            if digest != want.config_digest:
                raise RuntimeError(f"{h}: {ship.pulled_ref} has config digest {digest} (id {host_id}), expected "
                                   f"{want.config_digest} (local id {want.id})")
            sample.checked[h] = {"id": host_id, "config_digest": digest}
            mine = reported.get(h)
            if mine and mine.get("config_digest") and mine["config_digest"] != want.config_digest:
                raise RuntimeError(f"{h}: deployer reported config digest {mine['config_digest']}, "
                                   f"expected {want.config_digest}")
        sample.verified = True

    @staticmethod
    def _tag(ref: str, repo: str, local_tags: list[str]) -> str:
        new = f"{repo}:{ref.rsplit(':', 1)[1]}"
        subprocess.run(["docker", "tag", ref, new], check=True)
        local_tags.append(new)
        return new

    def _untag_pushed(self, ship: Ship) -> None:
        """push+pull and deployer's registry route tag the image on the workstation for their push:
        remove that tag again, so that a long run does not pile up tags of one-off repositories."""
        if ship.tool == tools.PUSH_PULL:
            self._untag([ship.pulled_ref])
        elif ship.tool == tools.DEPLOYER_REGISTRY:
            self._untag([f"{REGISTRY}/{ship.ref}"])

    @staticmethod
    def _untag(refs: list[str]) -> None:
        if refs:
            subprocess.run(["docker", "rmi", *refs], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _line(label: str, s: Sample) -> str:
        if not s.ok:
            return f"{label}: FAILED: {(s.error or '').splitlines()[-1] if s.error else '?'}"
        rss = f", peak RSS {s.peak_rss / 2**20:.0f} MiB" if s.peak_rss else ""
        own = f" ({s.own_bytes / 1e6:.1f} MB its own)" if s.own_bytes is not None else ""
        return f"{label}: {s.seconds:.1f} s, {(s.uplink_bytes or 0) / 1e6:.1f} MB on the uplink{own}{rss}"
