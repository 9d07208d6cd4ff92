"""Pure aggregation of samples into rows, targets and tables (no I/O except the printers)."""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import tools
from .config import HOST_STORES, MIXED, MULTI_HOSTS, SCENARIO_TITLES, SITE, SITE_HOSTS, STORE_HOSTS, rate_bits

MB = 1_000_000
MIB = 1024 * 1024
RSS_LIMIT = 200 * MIB
FIRST_SHIP_LIMIT = 0.8  # (a): deployer's wall time / the best one-liner's, on every pair of stores
RELAY_BYTES_LIMIT = 1.05  # (c) site: uplink bytes for the site through its relay / one host's
RELAY_TIME_LIMIT = 1.15  # (c) site: wall time through the relay / one host's
RESHIP_LIMIT = 0.8  # (b): a re-ship's wall time / push+pull's, on either route
LINK_SHARE = 0.9  # (a), a throttled uplink: the ship's bytes on it / its wall time, as a share of the rate
REGISTRY_LIMIT = 1.0  # (d): deployer's registry route / push+pull by hand


@dataclass(frozen=True)
class Row:
    """The figures of one scenario x uplink x tool over its successful repetitions: median time and
    memory, least bytes."""

    scenario: str
    rate: str | None
    tool: str
    runs: int
    ok: int
    seconds: float | None
    uplink_bytes: int | None
    own_bytes: int | None  # the step's own connections only (None for registry tools)
    bytes_sent: int | None
    peak_rss: int | None
    ratio: float | None  # seconds / best baseline's seconds in the same scenario and uplink
    bytes_ratio: float | None  # wire bytes / the fastest baseline's wire bytes
    best_baseline: str | None
    host_store: str = ""  # the lane: "overlay2", "containerd", "mixed" ((c)); "" in reports before lanes
    ws_store: str = ""  # the workstation daemon's store
    # deployer rows: median seconds per phase of the slowest host (from its --json), where time went
    phases: tuple[tuple[str, float], ...] = ()

    @property
    def wire_bytes(self) -> int | None:
        """The step's own bytes where they can be told apart from other traffic, else the uplink's."""
        return self.own_bytes if self.own_bytes is not None else self.uplink_bytes


def _median(values: Iterable[float | int | None]) -> Any:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _least(values: Iterable[int | None]) -> int | None:
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None


def phases(samples: Iterable[Any]) -> tuple[tuple[str, float], ...]:
    """Median over SAMPLES of each phase's seconds on the host that spent longest in it (deployer's
    --json `phases`), in the order the phases first appear."""
    per: dict[str, list[float]] = {}
    for s in samples:
        slowest: dict[str, float] = {}
        for rec in getattr(s, "deployer", None) or ():
            for name, sec in (rec.get("phases") or {}).items() if isinstance(rec, dict) else ():
                slowest[name] = max(slowest.get(name, 0.0), float(sec))
        for name, sec in slowest.items():
            per.setdefault(name, []).append(sec)
    return tuple((name, statistics.median(v)) for name, v in per.items())


def _wire(m: dict[str, Any]) -> int | None:
    return m["own_bytes"] if m["own_bytes"] is not None else m["uplink_bytes"]


Key = tuple[str, str, str, str | None, str]  # ws store, host store, scenario, rate, tool


def _key(s: Any) -> Key:
    return (getattr(s, "ws_store", "") or "", getattr(s, "host_store", "") or "", s.scenario, s.rate, s.tool)


def rows(samples: Sequence[Any]) -> list[Row]:
    """Group samples (objects with scenario, rate, tool, ok, seconds, ...; host_store and ws_store
    where known) into rows with ratios. Ratios compare tools within one lane (the same stores at
    both ends), scenario and uplink."""
    groups: dict[Key, list[Any]] = {}
    for s in samples:
        groups.setdefault(_key(s), []).append(s)
    med: dict[Key, dict[str, Any]] = {}
    for key, group in groups.items():
        good = [s for s in group if s.ok]
        med[key] = {
            "runs": len(group), "ok": len(good),
            "seconds": _median(s.seconds for s in good),
            # Bytes do not drift; other traffic on the shared uplink only ever adds: take the least.
            "uplink_bytes": _least(s.uplink_bytes for s in good),
            "own_bytes": _least(s.own_bytes for s in good),
            "bytes_sent": _least(s.bytes_sent for s in good),
            "peak_rss": _median(s.peak_rss for s in good),
            "phases": phases(good),
        }
    out = []
    for (ws, lane, scenario, rate, tool), m in med.items():
        best = best_baseline(med, ws, lane, scenario, rate)
        ratio = bytes_ratio = None
        if best and m["seconds"] is not None:
            ratio = m["seconds"] / med[best]["seconds"]
            mine, theirs = _wire(m), _wire(med[best])
            if mine is not None and theirs:
                bytes_ratio = mine / theirs
        out.append(Row(scenario, rate, tool, ratio=ratio, bytes_ratio=bytes_ratio,
                       best_baseline=best[4] + (f" ({best[2]})" if best[2] != scenario else "") if best else None,
                       host_store=lane, ws_store=ws, **m))
    order = {t: i for i, t in enumerate(tools.TOOLS)}
    lanes = {x: i for i, x in enumerate(("", *HOST_STORES, MIXED, SITE))}
    out.sort(key=lambda r: (r.ws_store, r.scenario, lanes.get(r.host_store, 99), r.rate is not None,
                            order.get(r.tool, 99)))
    return out


def best_baseline(med: dict[Key, dict[str, Any]], ws: str, lane: str, scenario: str,
                  rate: str | None) -> Key | None:
    """The fastest baseline in this lane, scenario and uplink; (d) also competes with (a)'s baselines."""
    pool = [scenario] + (["a"] if scenario in ("d", "e") else [])
    cands = [(m["seconds"], k) for k, m in med.items()
             if k[:2] == (ws, lane) and k[2] in pool and k[3] == rate and k[4] in tools.BASELINES
             and m["seconds"] is not None]
    return min(cands)[1] if cands else None


def _row(rows_: Sequence[Row], ws: str, lane: str, scenario: str, rate: str | None, tool: str) -> Row | None:
    return next((r for r in rows_ if (r.ws_store, r.host_store, r.scenario, r.rate, r.tool)
                 == (ws, lane, scenario, rate, tool)), None)


def lane_label(ws: str, lane: str) -> str:
    """'overlay2 ws -> containerd host (gpu01)'; '' for reports from before lanes."""
    if not ws and not lane:
        return ""
    host = {MIXED: "mixed hosts", SITE: "air-gapped site"}.get(lane, f"{lane} host" + (f" ({STORE_HOSTS[lane]})" if lane in STORE_HOSTS else ""))
    return f"{ws or '?'} ws -> {host}"


def targets(rows_: Sequence[Row], code_zstd: int, image_bytes: int) -> list[dict[str, Any]]:
    """Each issue target, per lane (the stores at both ends) and uplink, with the measured figure and
    whether it is met (None = not measured)."""
    out: list[dict[str, Any]] = []
    limit = 1.1 * code_zstd + MB
    lanes = sorted({(r.ws_store, r.host_store) for r in rows_ if r.host_store not in (MIXED, SITE)},
                   key=lambda x: (x[0], ("", *HOST_STORES).index(x[1]) if x[1] in ("", *HOST_STORES) else 99))
    rates = sorted({r.rate for r in rows_}, key=lambda x: x is not None)
    for ws, lane in lanes:
        where = lane_label(ws, lane)
        for rate in rates:
            tag = rate or "unthrottled"
            tag = f"{tag}, {where}" if where else tag
            b = _row(rows_, ws, lane, "b", rate, tools.DEPLOYER)
            if b:
                measured = b.wire_bytes
                out.append(_target(f"(b) {tag}: wire bytes <= 1.1 x code layer zstd ({code_zstd} B) + 1 MB",
                                   measured, round(limit), measured is not None and measured <= limit,
                                   f"uplink counter {b.uplink_bytes} B, deployer's own count {b.bytes_sent} B"))
            pushed = _row(rows_, ws, lane, "b", rate, tools.PUSH_PULL)
            for tool in (tools.DEPLOYER, tools.DEPLOYER_REGISTRY):
                re_ship = _row(rows_, ws, lane, "b", rate, tool)
                if re_ship and pushed and re_ship.seconds and pushed.seconds:
                    times = re_ship.seconds / pushed.seconds
                    out.append(_target(f"(b) {tag}, {tool} time: a re-ship <= {RESHIP_LIMIT}x push+pull's",
                                       _shown(times, RESHIP_LIMIT), RESHIP_LIMIT, times <= RESHIP_LIMIT,
                                       f"{_fmt(re_ship.seconds)} s vs {_fmt(pushed.seconds)} s"))
            a = _row(rows_, ws, lane, "a", rate, tools.DEPLOYER)
            if a:
                out.append(_target(f"(a) {tag}: deployer <= {FIRST_SHIP_LIMIT}x the best baseline's time "
                                   f"({a.best_baseline})", a.ratio and _shown(a.ratio, FIRST_SHIP_LIMIT), FIRST_SHIP_LIMIT,
                                   a.ratio is not None and a.ratio <= FIRST_SHIP_LIMIT,
                                   f"{a.seconds and round(a.seconds, 2)} s" +
                                   _floor_note(_row(rows_, ws, lane, "a", rate, tools.FLOOR))))
            if a and rate and a.uplink_bytes and a.seconds:
                share = a.uplink_bytes * 8 / a.seconds / rate_bits(rate)
                out.append(_target(f"(a) {tag}, link use: uplink bytes / wall time >= {LINK_SHARE:.0%} of the rate",
                                   _shown(share, LINK_SHARE), LINK_SHARE, share >= LINK_SHARE,
                                   f"{a.uplink_bytes * 8 / a.seconds / 1e6:.0f} Mbit/s over {_fmt(a.seconds)} s"))
            d, by_hand = _row(rows_, ws, lane, "d", rate, tools.DEPLOYER_REGISTRY), \
                _row(rows_, ws, lane, "d", rate, tools.PUSH_PULL)
            if d and by_hand and d.seconds and by_hand.seconds:
                times = d.seconds / by_hand.seconds
                out.append(_target(f"(d) {tag}, time: the registry route <= {REGISTRY_LIMIT}x push+pull's",
                                   _shown(times, REGISTRY_LIMIT), REGISTRY_LIMIT, times <= REGISTRY_LIMIT,
                                   f"{_fmt(d.seconds)} s vs {_fmt(by_hand.seconds)} s"))
    for ws in sorted({r.ws_store for r in rows_}):
        for rate in rates:
            relay, one = _row(rows_, ws, SITE, "c", rate, tools.DEPLOYER_RELAY), _row(rows_, ws, SITE, "c", rate, tools.DEPLOYER_ONE)
            if not (relay and one and relay.wire_bytes and one.wire_bytes and relay.seconds and one.seconds):
                continue
            tag = f"{rate or 'unthrottled'}{f', {ws} ws' if ws else ''}"
            direct = _row(rows_, ws, SITE, "c", rate, tools.DEPLOYER)
            was = f"; direct to all {len(SITE_HOSTS)}: {_fmt_bytes(direct.wire_bytes)} MB in {_fmt(direct.seconds)} s" \
                if direct else ""
            times = relay.wire_bytes / one.wire_bytes
            out.append(_target(f"(c) {tag}, uplink bytes: {len(SITE_HOSTS)} site hosts through a relay <= "
                               f"{RELAY_BYTES_LIMIT}x one host's", _shown(times, RELAY_BYTES_LIMIT, 3), RELAY_BYTES_LIMIT,
                               times <= RELAY_BYTES_LIMIT,
                               f"{_fmt_bytes(relay.wire_bytes)} MB vs {_fmt_bytes(one.wire_bytes)} MB{was}"))
            slower = relay.seconds / one.seconds
            out.append(_target(f"(c) {tag}, time: {len(SITE_HOSTS)} site hosts through a relay <= "
                               f"{RELAY_TIME_LIMIT}x one host's", _shown(slower, RELAY_TIME_LIMIT), RELAY_TIME_LIMIT,
                               slower <= RELAY_TIME_LIMIT, f"{_fmt(relay.seconds)} s vs {_fmt(one.seconds)} s"))
    for ws, lane in lanes:
        for rate in rates:
            e, today = _row(rows_, ws, lane, "e", rate, tools.DEPLOYER_ORIGIN), _row(rows_, ws, lane, "e", rate, tools.DEPLOYER)
            if e:
                tag = f"{rate or 'unthrottled'}, {lane_label(ws, lane)}"
                measured = e.wire_bytes
                vs = f"; today's tarball route {_fmt_bytes(today.wire_bytes)} MB in {_fmt(today.seconds)} s" if today else ""
                out.append(_target(f"(e) {tag}: uplink bytes <= 1.1 x the app's own layers zstd ({code_zstd} B) + 1 MB",
                                   measured, round(limit), measured is not None and measured <= limit,
                                   f"{_fmt(e.seconds)} s, {e.ratio and round(e.ratio, 2)}x {e.best_baseline}{vs}"))
    rss = [r.peak_rss for r in rows_ if r.tool in tools.DEPLOYERS and r.peak_rss]
    if rss:
        gb = image_bytes / 1e9
        out.append(_target(f"deployer peak RSS < 200 MiB (image {gb:.2f} GB"
                           f"{'' if gb >= 2 else ', NOT multi-GB'})", max(rss), RSS_LIMIT,
                           max(rss) < RSS_LIMIT, "max over deployer rows of the median peak"))
    return out


def _floor_note(floor: Row | None) -> str:
    """What the link's floor (OpenSSH moving deployer's zstd bytes, no Docker) says of the (a) limit."""
    if not (floor and floor.seconds and floor.ratio):
        return ""
    where = "below" if floor.ratio > FIRST_SHIP_LIMIT else "above"
    return (f"; the link's floor for these bytes ({tools.FLOOR}, no Docker) {_fmt(floor.seconds)} s = "
            f"{floor.ratio:.2f}x the best baseline: the limit lies {where} it")


def targets_again(rows_: Sequence[Row], data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The targets of an earlier run's JSON DATA, judged again from its ROWS by today's rules when
    it names its image's sizes (else as it stored them)."""
    image = (data.get("meta") or {}).get("image") or {}
    code_zstd = (image.get("code_layer") or {}).get("zstd_size")
    size = (image.get("v1") or {}).get("size")
    if not isinstance(code_zstd, int) or not isinstance(size, int):
        return list(data["targets"])
    return targets(rows_, code_zstd, size)


def _shown(x: float, limit: float, digits: int = 2) -> float:
    """X rounded to DIGITS, or to as many more as it takes not to show the LIMIT it misses or
    meets by a hair (0.8999 of a 0.9 limit is 0.8999, not 0.9 beside a "no")."""
    shown = round(x, digits)
    while shown == limit != x and digits < 6:
        digits += 1
        shown = round(x, digits)
    return shown


def _target(name: str, measured: Any, limit: Any, met: bool, note: str) -> dict[str, Any]:
    return {"target": name, "measured": measured, "limit": limit,
            "met": met if measured is not None else None, "note": note}


def _fmt_bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / MB:,.1f}"


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


COLUMNS = ("scenario", "ws store", "hosts", "uplink", "tool", "ok", "wall s", "uplink MB", "own MB", "sent MB", "peak RSS MiB",
           "x best time", "x bytes", "best baseline")


def table_rows(rows_: Sequence[Row]) -> list[list[str]]:
    return [[f"({r.scenario}) {SCENARIO_TITLES[r.scenario]}", r.ws_store or "-", _hosts(r.host_store),
             r.rate or "unthrottled", r.tool,
             f"{r.ok}/{r.runs}", _fmt(r.seconds), _fmt_bytes(r.uplink_bytes), _fmt_bytes(r.own_bytes),
             _fmt_bytes(r.bytes_sent),
             _fmt(None if r.peak_rss is None else r.peak_rss / MIB, ".0f"), _fmt(r.ratio),
             _fmt(r.bytes_ratio), r.best_baseline or "-"] for r in rows_]


PHASE_COLUMNS = ("scenario", "ws store", "hosts", "uplink", "tool", "seconds", "phases")


def phase_rows(rows_: Sequence[Row]) -> list[list[str]]:
    """The deployer rows' time per phase, one line each."""
    return [[f"({r.scenario})", r.ws_store or "-", _hosts(r.host_store), r.rate or "unthrottled", r.tool,
             _fmt(r.seconds), ", ".join(f"{name} {sec:.2f}" for name, sec in r.phases)]
            for r in rows_ if r.phases]


def _hosts(lane: str) -> str:
    if lane in STORE_HOSTS:
        return f"{STORE_HOSTS[lane]} ({lane})"
    return {MIXED: f"{','.join(MULTI_HOSTS)} (mixed)", SITE: f"{','.join(SITE_HOSTS)} (site)",
            "": "-"}.get(lane, lane)


def markdown(rows_: Sequence[Row], targets_: Sequence[dict[str, Any]]) -> str:
    """The table and the targets as GitHub markdown, for docs/benchmarks.md."""
    def cells(values: Iterable[Any]) -> str:
        # Tool names contain '|', which would split a markdown cell.
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [cells(COLUMNS), "|" + "---|" * len(COLUMNS)]
    lines += [cells(row) for row in table_rows(rows_)]
    timed = phase_rows(rows_)
    if timed:
        lines += ["", "Where deployer's time went (median seconds per phase, on the host slowest in it):", "",
                  cells(PHASE_COLUMNS), "|" + "---|" * len(PHASE_COLUMNS)]
        lines += [cells(row) for row in timed]
    lines += ["", "| target | measured | limit | met | note |", "|---|---|---|---|---|"]
    for t in targets_:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(cells([t["target"], t["measured"], t["limit"], met, t["note"]]))
    return "\n".join(lines) + "\n"


def rows_from_dicts(dicts: Iterable[dict[str, Any]]) -> list[Row]:
    """Rows back from a report's JSON (to re-render an earlier run)."""
    # reports from before lanes lack host_store/ws_store, and older ones phases: defaults
    return [Row(**{**d, "phases": tuple(tuple(p) for p in d.get("phases") or ())}) for d in dicts]


def as_dicts(rows_: Sequence[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows_]


def print_table(rows_: Sequence[Row], targets_: Sequence[dict[str, Any]]) -> None:
    """The table and the targets on stdout (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    t = Table(title="deployer vs baselines (medians)", header_style="bold")
    for col in COLUMNS:
        t.add_column(col, justify="right" if col not in ("scenario", "ws store", "hosts", "uplink", "tool",
                                                          "best baseline") else "left")
    for row in table_rows(rows_):
        t.add_row(*row)
    console.print(t)
    timed = phase_rows(rows_)
    if timed:
        pt = Table(title="where deployer's time went (median seconds per phase, on the host slowest in it)",
                   header_style="bold")
        for col in PHASE_COLUMNS:
            pt.add_column(col)
        for row in timed:
            pt.add_row(*row)
        console.print(pt)
    tt = Table(title="targets", header_style="bold")
    for col in ("target", "measured", "limit", "met", "note"):
        tt.add_column(col)
    for x in targets_:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "not measured"}[x["met"]]
        tt.add_row(x["target"], str(x["measured"]), str(x["limit"]), met, x["note"])
    console.print(tt)
