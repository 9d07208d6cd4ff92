"""`scripts/bench`: deployer against the usual ways of shipping an image, on the testbed.

Examples:
  scripts/bench --smoke                          # ~20 MB image, 1 rep, CI-sized
  scripts/bench --size-gb 1 --rate 200mbit       # the real run (reps 3)
  scripts/bench --scenarios a,b --reps 1 --no-throttle
  scripts/bench --host-stores containerd --ws-store containerd   # one lane, ws switched for the run
  scripts/bench --scenarios a --rev HEAD~3       # deployer as committed three commits ago, same baselines

The single-host scenarios (a), (b), (d), (e) run once per host image store: overlay2 (gpu02) and containerd
(gpu01); (c) ships to gpu01, gpu02 and cpu01 at once. The workstation daemon's store is whatever it
runs (`scripts/testbed up --ws-store ...`), or --ws-store switches it for the run and back afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import account, dockerfile, hosts, image, machine, report, runner, snapshot, tools
from .config import (
    HOST_STORES,
    SCENARIOS,
    SMOKE_HOST_STORES,
    SMOKE_RATE,
    SMOKE_SIZE_GB,
    SMOKE_THROTTLED_SCENARIOS,
    WS_STORES,
    BenchConfig,
    parse_host_stores,
    parse_scenarios,
    rate_bits,
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str]) -> BenchConfig:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gb", type=float, default=1.0, help="image size in GB (default 1)")
    p.add_argument("--rate", default="200mbit", help="throttled uplink rate, tc syntax (default 200mbit)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per row; the median counts (default 3)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)} (default all)")
    p.add_argument("--host-stores", default=None,
                   help=f"host image stores for (a), (b), (d), subset of {','.join(HOST_STORES)} "
                   f"(default all; --smoke: {','.join(SMOKE_HOST_STORES)})")
    p.add_argument("--ws-store", choices=WS_STORES, default=None,
                   help="switch the workstation daemon to this image store for the run (`scripts/testbed up "
                   "--ws-store`, which restarts it under anyone else using it), and back afterwards")
    p.add_argument("--tools", default="", help=f"subset of {','.join(tools.TOOLS)} (default all)")
    p.add_argument("--smoke", action="store_true", help=f"~20 MB image, 1 rep, all scenarios unthrottled and (a) at {SMOKE_RATE}; "
                   "no quiet-uplink wait")
    p.add_argument("--no-throttle", action="store_true", help="skip the throttled passes")
    p.add_argument("--throttled-only", action="store_true", help="skip the unthrottled passes")
    p.add_argument("--out", default="bench-results", help="directory for the JSON (default bench-results/)")
    p.add_argument("--worktree", action="store_true",
                   help="benchmark deployer as in the working tree (default: a snapshot of git HEAD)")
    p.add_argument("--rev", default="HEAD", metavar="REV",
                   help="benchmark deployer as committed at REV, e.g. the commit before a change (default HEAD)")
    p.add_argument("--report", metavar="JSON", help="only re-render an earlier run's table and targets")
    p.add_argument("--rebuild", action="store_true", help="rebuild the images even if cached")
    a = p.parse_args(argv)
    if a.report:
        data = json.loads(Path(a.report).read_text())
        rows = report.rows_from_dicts(data["rows"])
        targets = report.targets_again(rows, data)
        Path(a.report).with_suffix(".md").write_text(report.markdown(rows, targets))
        report.print_table(rows, targets)
        sys.exit(0)
    try:
        scenarios = parse_scenarios(a.scenarios)
        host_stores = parse_host_stores(a.host_stores or ",".join(SMOKE_HOST_STORES if a.smoke else HOST_STORES))
        rate_bits(a.rate)
        chosen = tuple(t for t in a.tools.split(",") if t)
        if unknown := [t for t in chosen if t not in tools.TOOLS]:
            raise ValueError(f"unknown tool(s) {','.join(unknown)}: choose from {','.join(tools.TOOLS)}")
        if a.reps < 1 or a.size_gb <= 0:
            raise ValueError("--reps must be >= 1 and --size-gb > 0")
        if a.no_throttle and a.throttled_only:
            raise ValueError("--no-throttle and --throttled-only exclude each other")
    except ValueError as exc:
        p.error(str(exc))
    cfg = BenchConfig(size_gb=a.size_gb, rate=a.rate, reps=a.reps, scenarios=scenarios, out=Path(a.out),
                      host_stores=host_stores, ws_store=a.ws_store,
                      unthrottled=not a.throttled_only, throttled=not a.no_throttle, tools=chosen)
    if a.smoke:
        cfg = replace(cfg, size_gb=SMOKE_SIZE_GB, reps=1, rate=SMOKE_RATE if a.rate == "200mbit" else a.rate,
                      throttled_scenarios=SMOKE_THROTTLED_SCENARIOS, quiet_seconds=0.0)
    if a.worktree and a.rev != "HEAD":
        raise SystemExit("scripts/bench: --worktree and --rev are two sources of deployer; give one")
    return replace(cfg, smoke=a.smoke, rebuild=a.rebuild, worktree=a.worktree, rev=a.rev)


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    cfg = parse(argv)
    # SIGTERM unwinds like Ctrl-C: the running step's process group is killed, the uplink unthrottled.
    signal.signal(signal.SIGTERM, _interrupted)
    before = hosts.ws_store()
    if cfg.ws_store and cfg.ws_store != before:
        log(f"switching the workstation daemon from {before} to the {cfg.ws_store} store "
            "(it restarts: anyone else using it notices)")
        hosts.switch_ws_store(cfg.ws_store)
        os.environ["DEPLOYER_TESTBED_WS_STORE"] = cfg.ws_store
        try:
            return _main(cfg, argv)
        finally:
            log(f"switching the workstation daemon back to the {before} store")
            hosts.switch_ws_store(before)
    return _main(cfg, argv)


def _main(cfg: BenchConfig, argv: list[str]) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.monotonic()
    ws_store = hosts.ws_store()
    meta: dict[str, Any] = {"command": "scripts/bench " + shlex.join(argv), "started": stamp,
            "config": {"size_gb": cfg.size_gb, "rate": cfg.rate, "reps": cfg.reps,
                       "scenarios": list(cfg.scenarios), "host_stores": list(cfg.host_stores),
                       "ws_store": ws_store, "smoke": cfg.smoke, "modes": list(cfg.modes()),
                       "throttled_scenarios": list(cfg.throttled_scenarios),
                       "quiet_seconds": cfg.quiet_seconds},
            "machine": machine.describe()}
    log(f"workstation daemon on the {ws_store} store; host stores {','.join(cfg.host_stores)}; "
        f"disk {meta['machine']['disk_write_mbps']} MB/s (fsynced writes)")
    if not hosts.registry_route_ok():
        log("warning: cannot reach the workstation daemon's push metadata; registry pushes may reuse blobs")
    v1, v2 = image.build_pair(cfg.size_bytes, log, rebuild=cfg.rebuild)
    pair = image.inspect_pair(v1, v2, dockerfile.base_ref(cfg.size_bytes))
    log(f"image {pair.v1.ref} (config {pair.v1.config_digest[:19]}): {pair.v1.size / 1e6:.1f} MB raw, {pair.v1.zstd_size / 1e6:.1f} MB zstd; "
        f"code layer {pair.code_layer.size / 1e6:.2f} MB raw, {pair.code_layer.zstd_size / 1e6:.2f} MB zstd; "
        f"docker save writes {pair.v1.saved_size / 1e6:.1f} MB of layers")
    meta["image"] = {"v1": pair.v1.as_dict(), "v2": pair.v2.as_dict(), "code_layer": vars(pair.code_layer)}
    interrupted = False
    with account.Accounting() as acct:
        if acct.error:
            log(f"warning: no per-step byte accounting ({acct.error}); only the uplink counters")
        meta["own_bytes_accounting"] = acct.error or "cgroup v2 + nftables"
        source = None if cfg.worktree else snapshot.head(log, cfg.rev)
        meta["deployer"] = {"source": "working tree" if source is None else f"git {cfg.rev}",
                            "commit": machine.git_commit(cfg.rev), "dirty": snapshot.dirty()}
        run = runner.Runner(cfg, pair, stamp.lower(), log, acct, source, ws_store)
        meta["deployer"]["warm_start"] = "on (a server per run, started before the first step)"
        try:
            run.warm_up()
            samples = run.samples()
        except KeyboardInterrupt:
            interrupted, samples = True, run.results
            log(f"interrupted: reporting the {len(samples)} finished steps")
        finally:
            hosts.throttle(None, force=True)
            run.cleanup()
            if source is not None:
                shutil.rmtree(source, ignore_errors=True)
    meta["interrupted"] = interrupted
    rows = report.rows(samples)
    targets = report.targets(rows, pair.code_layer.zstd_size, pair.v1.size)
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["machine_after"] = {"loadavg": machine.loadavg(), "disk_write_mbps": machine.disk_write_mbps()}
    cfg.out.mkdir(parents=True, exist_ok=True)
    out = cfg.out / f"bench-{stamp}.json"
    out.write_text(json.dumps({"meta": meta, "rows": report.as_dicts(rows), "targets": targets,
                               "samples": [s.as_dict() for s in samples]}, indent=1, default=str) + "\n")
    (cfg.out / f"bench-{stamp}.md").write_text(report.markdown(rows, targets))
    report.print_table(rows, targets)
    log(f"wrote {out} and {out.with_suffix('.md')} in {meta['seconds']} s")
    if interrupted:
        return 130
    return 0 if all(s.ok for s in samples) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
