"""`scripts/testbed` command line: up, down, status, env, cut, heal, throttle, flaky, off."""
from __future__ import annotations

import argparse
import sys

from . import bed, net
from .config import HOST_NAMES, STORES, WS_STORE_ENV, Paths
from .sh import TestbedError

EPILOG = """examples:
  scripts/testbed up                  # bring the fleet up (or repair it); idempotent
  scripts/testbed up --ws-store containerd   # workstation daemon on the containerd image store
  eval "$(scripts/testbed env)"       # DOCKER_HOST (workstation daemon) and DEPLOY_INVENTORY
  scripts/testbed status              # exit 0 when everything is up, 3 otherwise
  scripts/testbed cut gpu02           # gpu02 silently drops all packets (TCP hangs)
  scripts/testbed heal gpu02
  scripts/testbed throttle uplink 20mbit
  scripts/testbed throttle uplink off
  scripts/testbed flaky gpu01 5       # reset SSH connections to gpu01 after 5 MB
  scripts/testbed flaky gpu01 off
  scripts/testbed off                 # heal, unthrottle and unflake everything
  scripts/testbed down                # remove everything (keeps the image cache)
"""


def _say(msg: str) -> None:
    print(f"testbed: {msg}", file=sys.stderr, flush=True)


def _host(name: str) -> str:
    if name not in HOST_NAMES:
        raise argparse.ArgumentTypeError(f"unknown host {name!r} (hosts: {', '.join(HOST_NAMES)})")
    return name


def _target(name: str) -> str:
    return name if name == "uplink" else _host(name)


def _mb(value: str) -> str:
    if value != "off":
        try:
            if float(value) <= 0:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of megabytes or 'off'") from None
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/testbed", description="Simulated GPU fleet for deployer's tests: "
                                 "sshd + dockerd per network namespace, a registry, a workstation dockerd.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="create or repair the testbed")
    up.add_argument("--ws-store", choices=STORES, default=None,
                    help=f"image store of the workstation daemon (Docker 28 either way; default ${WS_STORE_ENV}, "
                         "else overlay2); a change restarts only that daemon")
    sub.add_parser("down", help="remove everything: processes, namespaces, links, mounts, state")
    sub.add_parser("status", help="show each component; exit 3 if any is down")
    sub.add_parser("env", help=f"print shell exports (DOCKER_HOST, DEPLOY_INVENTORY, {WS_STORE_ENV})")
    for name, helptext in (("cut", "make HOST unreachable (packets vanish, no resets)"), ("heal", "undo cut")):
        sub.add_parser(name, help=helptext).add_argument("host", type=_host)
    th = sub.add_parser("throttle", help="rate-limit TARGET (uplink or a host) in both directions with tc tbf")
    th.add_argument("target", type=_target)
    th.add_argument("rate", help="e.g. 20mbit, 500kbit, 1gbit; 'off' removes the limit")
    fl = sub.add_parser("flaky", help="reset SSH connections to HOST after MB megabytes; 'off' removes it")
    fl.add_argument("host", type=_host)
    fl.add_argument("mb", type=_mb, help="megabytes per connection before the reset, or 'off'")
    sub.add_parser("off", help="remove every fault: heal all hosts, remove all throttles and flaky rules")
    args = ap.parse_args(argv)
    p = Paths()
    try:
        return _dispatch(args, p)
    except ValueError as exc:  # bad input such as a malformed rate
        _say(f"error: {exc}")
        return 2
    except TestbedError as exc:
        _say(f"error: {exc}")
        return 1


def _dispatch(args: argparse.Namespace, p: Paths) -> int:
    if args.cmd == "up":
        bed.up(p, log=_say, ws_store=args.ws_store)
    elif args.cmd == "down":
        bed.down(p, log=_say)
    elif args.cmd == "env":
        print("\n".join(bed.env_lines(p)))
    elif args.cmd == "status":
        rows = bed.status(p)
        width = max(len(r[0]) for r in rows)
        for name, ok, detail in rows:
            print(f"{name:<{width}}  {'up  ' if ok else 'DOWN'}  {detail}".rstrip())
        return 0 if all(r[1] for r in rows) else 3
    else:
        _require_up()
        if args.cmd == "cut":
            net.cut(args.host)
        elif args.cmd == "heal":
            net.heal(args.host)
        elif args.cmd == "throttle":
            net.throttle(args.target, None if args.rate == "off" else args.rate)
        elif args.cmd == "flaky":
            net.flaky(args.host, None if args.mb == "off" else float(args.mb))
        elif args.cmd == "off":
            for h in HOST_NAMES:
                net.heal(h)
                net.throttle(h, None)
                net.flaky(h, None)
            net.throttle("uplink", None)
        _say(f"{args.cmd} done")
    return 0


def _require_up() -> None:
    if not net.ns_exists(net.SITE_NS):
        raise TestbedError("the testbed is not up; run `scripts/testbed up` first")


if __name__ == "__main__":
    sys.exit(main())
