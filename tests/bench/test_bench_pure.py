"""The benchmark harness's pure parts: config parsing, image recipe, command builders, report."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
from dataclasses import dataclass

import pytest
import zstandard
from bench_lib import account, config, digests, dockerfile, hosts, image, machine, procmon, report, tools


def test_rate_bits_and_errors() -> None:
    assert config.rate_bits("200mbit") == 200_000_000
    assert config.rate_bits("1.5Gbit") == 1_500_000_000
    with pytest.raises(ValueError, match="bad rate '200mb'"):
        config.rate_bits("200mb")


def test_parse_scenarios_canonical_order_and_unknown() -> None:
    assert config.parse_scenarios("e, d, a") == ("a", "d", "e")
    with pytest.raises(ValueError, match=r"unknown scenario.*f"):
        config.parse_scenarios("a,f")


def test_host_store_lanes() -> None:
    assert config.parse_host_stores("containerd, overlay2") == ("overlay2", "containerd")
    with pytest.raises(ValueError, match=r"unknown host store.*zfs"):
        config.parse_host_stores("zfs,overlay2")
    assert config.hosts_for("a", "overlay2") == ("gpu02",)
    assert config.hosts_for("b", "containerd") == ("gpu01",)
    assert config.hosts_for("c", config.MIXED) == config.MULTI_HOSTS
    assert config.lanes_for("c", ("overlay2", "containerd")) == (config.MIXED, config.SITE)
    assert config.hosts_for("c", config.SITE) == config.SITE_HOSTS == ("airgap01", "airgap02", "airgap03")
    assert config.hosts_for("c", config.SITE, tools.DEPLOYER_ONE) == ("airgap01",)
    assert tools.tools_for("c", config.SITE) == (tools.DEPLOYER_RELAY, tools.DEPLOYER_ONE, tools.DEPLOYER, tools.ZSTD)
    assert config.lanes_for("d", ("containerd",)) == ("containerd",)
    # The smoke ships to at least one containerd-store host.
    assert "containerd" in config.SMOKE_HOST_STORES


def test_plan_sizes_add_up_and_code_layer_is_small() -> None:
    size = 1024**3
    layers = dockerfile.plan(size)
    total = sum(layer.size for layer in layers)
    assert 0.95 * size <= total <= size
    assert layers[-1].name == "code-v1" and layers[-1].size == size // 200
    kinds = {p.kind for layer in layers for p in layer.parts}
    assert kinds == {"random", "binary", "text"}


def test_versions_differ_only_in_code_layer() -> None:
    layers = dockerfile.plan(50 * 1024 * 1024)
    base = dockerfile.base_dockerfile(layers, 50 * 1024 * 1024)
    assert base.startswith(f"FROM {dockerfile.BASE_IMAGE}\n")
    assert base.count("\nRUN ") == len(layers) - 1
    code = layers[-1].size
    v1 = dockerfile.app_dockerfile("b:1", dockerfile.code_layer(code, "v1"), "v1")
    v2 = dockerfile.app_dockerfile("b:1", dockerfile.code_layer(code, "v2"), "v2")
    assert v1.count("\nRUN ") == 1 and v1 != v2
    assert v1.replace("v1", "v2") == v2


def test_random_part_script_is_chunked() -> None:
    part = dockerfile.Part("random", "/opt/m", 2 * dockerfile.CHUNK + 5)
    script = dockerfile.part_script(part, "s")
    assert f"while [ $i -lt 2 ]; do head -c {dockerfile.CHUNK} /dev/urandom > /opt/m/blob$i.bin" in script
    assert script.endswith("head -c 5 /dev/urandom > /opt/m/blob_tail.bin")


@pytest.mark.parametrize("kind", ["text", "binary", "random"])
def test_part_scripts_write_exact_sizes(tmp_path, kind: str) -> None:
    """Run the generated shell here (POSIX sh + awk; /bin/busybox comes with scripts/lib.sh's apt list)."""
    part = dockerfile.Part(kind, str(tmp_path / "d"), 300_001)
    subprocess.run(["sh", "-c", dockerfile.part_script(part, "seedx")], check=True)
    files = sorted((tmp_path / "d").iterdir())
    assert sum(f.stat().st_size for f in files) == 300_001
    if kind == "text":
        assert files[0].name == "mod_seedx_0.py"
        assert files[0].read_text().startswith("def fn_seedx_0(x, y=0):\n")


def test_ssh_argv_is_strict() -> None:
    argv = tools.ssh_argv("gpu02", ["sh", "-c", "zstd -dc | docker load"])
    assert argv == ["ssh", "-i", str(config.KEY), "-o", "StrictHostKeyChecking=yes", "-o",
                    f"UserKnownHostsFile={config.KNOWN_HOSTS}", "-o", "BatchMode=yes",
                    "root@10.213.0.12", "sh -c 'zstd -dc | docker load'"]


def test_baseline_scripts() -> None:
    zstd = tools.baseline_script(tools.Ship(tools.ZSTD, "img:v1", ("gpu01",), "r/ml"))
    assert zstd.startswith("set -euo pipefail\ndocker save img:v1 | zstd -3 -T0 -q -c | ssh ")
    assert zstd.rstrip().endswith("root@10.213.0.11 'sh -c '\"'\"'zstd -dc | docker load'\"'\"''")
    gz = tools.baseline_script(tools.Ship(tools.GZIP, "img:v1", ("gpu01", "cpu01"), "r/ml"))
    assert gz.count("docker save img:v1 | gzip | ssh") == 2
    assert "( docker save" in gz and "wait $p || rc=1" in gz
    pp = tools.Ship(tools.PUSH_PULL, "img:v1", ("gpu01", "gpu02"), "bench-1/ml")
    assert pp.pulled_ref == "10.213.0.5:5000/bench-1/ml:v1"
    script = tools.baseline_script(pp)
    assert "docker tag img:v1 10.213.0.5:5000/bench-1/ml:v1 && docker push 10.213.0.5:5000/bench-1/ml:v1" in script
    assert script.count("docker pull -q 10.213.0.5:5000/bench-1/ml:v1") == 2


def test_the_floor_sends_its_payload_to_dev_null_and_is_no_baseline() -> None:
    floor = tools.baseline_script(tools.Ship(tools.FLOOR, "img:v1", ("gpu01",), "r/ml", "/tmp/x y/floor.bin"))
    assert floor.startswith("set -euo pipefail\nssh ")
    assert floor.rstrip().endswith("root@10.213.0.11 'sh -c '\"'\"'cat >/dev/null'\"'\"'' < '/tmp/x y/floor.bin'")
    assert "docker" not in floor
    assert tools.tools_for("a") == (tools.DEPLOYER, *tools.BASELINES, tools.FLOOR)
    assert tools.FLOOR not in tools.BASELINES and tools.FLOOR not in tools.DEPLOYERS
    assert all(tools.FLOOR not in tools.tools_for(sc) for sc in ("b", "c", "d", "e"))


def test_the_floor_is_never_the_best_baseline_and_says_where_the_limit_lies() -> None:
    samples = [
        S("a", "1mbit", tools.DEPLOYER, True, 8.5, 1000),
        S("a", "1mbit", tools.ZSTD, True, 10.0, 1000),
        S("a", "1mbit", tools.FLOOR, True, 8.2, 1000),
    ]
    rows = report.rows(samples)
    assert {r.tool: r.best_baseline for r in rows} == {t: tools.ZSTD for t in (tools.DEPLOYER, tools.ZSTD, tools.FLOOR)}
    a = {t["target"].split(":")[0]: t for t in report.targets(rows, 100_000, 10**9)}["(a) 1mbit"]
    assert (a["measured"], a["met"]) == (0.85, False)
    assert a["note"] == ("8.5 s; the link's floor for these bytes (ssh-floor, no Docker) 8.20 s = 0.82x the best "
                         "baseline: the limit lies below it")
    samples[2] = S("a", "1mbit", tools.FLOOR, True, 7.0, 1000)
    a = {t["target"].split(":")[0]: t for t in report.targets(report.rows(samples), 100_000, 10**9)}["(a) 1mbit"]
    assert a["note"].endswith("7.00 s = 0.70x the best baseline: the limit lies above it")
    without = {t["target"].split(":")[0]: t for t in report.targets(report.rows(samples[:2]), 100_000, 10**9)}
    assert without["(a) 1mbit"]["note"] == "8.5 s"


def test_the_floor_carries_what_deployer_sent_least_in_a() -> None:
    from bench_lib import runner

    def sample(scenario: str, tool: str, ok: bool, sent: int) -> runner.Sample:
        return runner.Sample(scenario, None, tool, 1, ("gpu01",), ok=ok, deployer=[{"bytes_sent": sent}])

    assert runner.floor_size([], 313) == 313
    found = [sample("b", tools.DEPLOYER, True, 1), sample("a", tools.ZSTD, True, 2), sample("a", tools.DEPLOYER, False, 3)]
    assert runner.floor_size(found, 313) == 313  # none of them a successful first ship by deployer
    found += [sample("a", tools.DEPLOYER, True, 302), sample("a", tools.DEPLOYER, True, 301)]
    assert runner.floor_size(found, 313) == 301


def test_parallel_script_fails_when_one_host_fails() -> None:
    script = tools._parallel(["true", "false", "true"])
    assert subprocess.run(["bash", "-c", script], check=False).returncode == 1
    assert subprocess.run(["bash", "-c", tools._parallel(["true", "true"])], check=False).returncode == 0


def test_deployer_argv() -> None:
    from pathlib import Path
    one = tools.argv(tools.Ship(tools.DEPLOYER, "img:v1", ("gpu01",), "x"), Path("/v/deploy"), Path("inv.yml"))
    assert one == ["/v/deploy", "-i", "inv.yml", "ship", "--host", "gpu01", "--image", "img:v1",
                   "--via", "tarball", "--json", "--level", "3", "--origin-pull", "never"]
    origin = tools.argv(tools.Ship(tools.DEPLOYER_ORIGIN, "img:v1", ("gpu01",), "x"), Path("/v/deploy"), Path("inv.yml"))
    assert origin == one[:-2]  # the default: the host pulls the base from its origin registry
    assert tools.tools_for("e") == (tools.DEPLOYER_ORIGIN, tools.DEPLOYER, tools.PUSH_PULL)
    many = tools.argv(tools.Ship(tools.DEPLOYER_REGISTRY, "img:v1", ("gpu01", "cpu01"), "x"),
                      Path("/v/deploy"), Path("inv.yml"))
    assert many[5:] == ["gpu01,cpu01", "--image", "img:v1", "--via", "registry", "--json", "--parallel", "2"]
    cold = tools.argv(tools.Ship(tools.DEPLOYER_COLD, "img:v1", ("gpu01",), "x"), Path("/v/deploy"), Path("inv.yml"))
    assert cold == ["env", "DEPLOY_WARM=0", *one]  # the same ship, warm start off


@dataclass
class S:
    scenario: str
    rate: str | None
    tool: str
    ok: bool
    seconds: float | None
    uplink_bytes: int | None
    peak_rss: int | None = None
    bytes_sent: int | None = None
    own_bytes: int | None = None
    host_store: str = ""
    ws_store: str = ""
    deployer: list | None = None  # deployer's --json records


def test_rows_median_time_least_bytes_and_ratios() -> None:
    samples = [
        S("a", None, tools.DEPLOYER, True, 10.0, 100, 50 * report.MIB, 90),
        S("a", None, tools.DEPLOYER, True, 12.0, 120, 60 * report.MIB, 90),
        S("a", None, tools.DEPLOYER, True, 30.0, 110, 40 * report.MIB, 90),
        S("a", None, tools.ZSTD, True, 8.0, 200),
        S("a", None, tools.GZIP, True, 20.0, 150),
        S("a", None, tools.RAW, False, None, None),
        S("d", None, tools.DEPLOYER_REGISTRY, True, 16.0, 100),
        S("d", None, tools.PUSH_PULL, True, 32.0, 100),
    ]
    rows = {(r.scenario, r.tool): r for r in report.rows(samples)}
    dep = rows[("a", tools.DEPLOYER)]
    assert (dep.seconds, dep.uplink_bytes, dep.peak_rss, dep.runs, dep.ok) == (12.0, 100, 50 * report.MIB, 3, 3)
    assert dep.ratio == 1.5 and dep.bytes_ratio == 0.5 and dep.best_baseline == tools.ZSTD
    assert rows[("a", tools.RAW)].ok == 0 and rows[("a", tools.RAW)].seconds is None
    # (d) competes with (a)'s baselines too.
    assert rows[("d", tools.DEPLOYER_REGISTRY)].ratio == 2.0
    assert rows[("d", tools.DEPLOYER_REGISTRY)].best_baseline == f"{tools.ZSTD} (a)"


def test_the_origin_target_and_its_comparison() -> None:
    ws, lane = "overlay2", "overlay2"

    def s(tool: str, seconds: float, wire: int, scenario: str = "e") -> S:
        return S(scenario, "200mbit", tool, True, seconds, wire, host_store=lane, ws_store=ws)

    rows = report.rows([s(tools.DEPLOYER_ORIGIN, 2.0, 900_000), s(tools.DEPLOYER, 20.0, 300_000_000),
                        s(tools.PUSH_PULL, 4.0, 950_000), s(tools.ZSTD, 19.0, 300_000_000, "a")])
    by_tool = {r.tool: r for r in rows if r.scenario == "e"}
    assert by_tool[tools.DEPLOYER_ORIGIN].best_baseline == tools.PUSH_PULL and by_tool[tools.DEPLOYER_ORIGIN].ratio == 0.5
    [target] = [t for t in report.targets(rows, 100_000, 10**9) if t["target"].startswith("(e)")]
    assert target["measured"] == 900_000 and target["met"] is True and target["limit"] == round(1.1 * 100_000 + report.MB)
    assert "today's tarball route 300.0 MB in 20.00 s" in target["note"]


def test_phases_are_the_median_of_the_slowest_host_per_phase() -> None:
    def run(*hosts: dict[str, float]) -> S:
        return S("b", None, tools.DEPLOYER, True, 3.0, 100, deployer=[{"host": f"h{i}", "phases": p}
                                                                      for i, p in enumerate(hosts)])

    samples = [run({"connecting": 0.1, "checking": 1.0}, {"connecting": 0.3, "checking": 0.5, "sending": 2.0}),
               run({"connecting": 0.2, "checking": 2.0, "sending": 1.0}),
               run({"connecting": 0.5, "checking": 1.5, "sending": 3.0}),
               S("b", None, tools.PUSH_PULL, True, 1.0, 100)]
    rows = {r.tool: r for r in report.rows(samples)}
    assert rows[tools.DEPLOYER].phases == (("connecting", 0.3), ("checking", 1.5), ("sending", 2.0))
    assert rows[tools.PUSH_PULL].phases == ()
    assert report.phase_rows(list(rows.values())) == [
        ["(b)", "-", "-", "unthrottled", tools.DEPLOYER, "3.00", "connecting 0.30, checking 1.50, sending 2.00"]]
    again = report.rows_from_dicts(json.loads(json.dumps(report.as_dicts(list(rows.values())))))
    assert {r.tool: r.phases for r in again} == {r.tool: r.phases for r in rows.values()}
    assert "Where deployer's time went" in report.markdown(list(rows.values()), [])


def test_targets() -> None:
    samples = [
        S("a", "1mbit", tools.DEPLOYER, True, 8.0, 1000, 300 * report.MIB),
        S("a", "1mbit", tools.ZSTD, True, 10.0, 1000),
        S("b", "1mbit", tools.DEPLOYER, True, 1.0, 1_100_000, 10 * report.MIB, 1_050_000),
        S("c", "1mbit", tools.DEPLOYER, True, 27.0, 3000, host_store=config.SITE),
        S("c", "1mbit", tools.DEPLOYER_RELAY, True, 11.0, 1040, host_store=config.SITE),
        S("c", "1mbit", tools.DEPLOYER_ONE, True, 10.0, 1000, host_store=config.SITE),
    ]
    got = {t["target"].split(":")[0]: t for t in report.targets(report.rows(samples), 100_000, 3 * 10**9)}
    assert got["(b) 1mbit"]["met"] is True and got["(b) 1mbit"]["measured"] == 1_100_000
    assert got["(b) 1mbit"]["limit"] == 1_110_000
    assert got["(a) 1mbit"]["met"] is True and got["(a) 1mbit"]["measured"] == 0.8
    assert got["(a) 1mbit"]["limit"] == report.FIRST_SHIP_LIMIT == 0.8
    relay_bytes, relay_time = got["(c) 1mbit, uplink bytes"], got["(c) 1mbit, time"]
    assert relay_bytes["met"] is True and relay_bytes["measured"] == 1.04 and relay_bytes["limit"] == 1.05
    assert "direct to all 3" in relay_bytes["note"]
    assert relay_time["met"] is True and relay_time["measured"] == 1.1 and relay_time["limit"] == 1.15
    rss = next(t for k, t in got.items() if k.startswith("deployer peak RSS"))
    assert rss["met"] is False and rss["measured"] == 300 * report.MIB
    # Own bytes, where known, win over the (shared) uplink counter.
    samples[2] = S("b", "1mbit", tools.DEPLOYER, True, 1.0, 5_000_000, 10 * report.MIB, 1_050_000, 1_080_000)
    b = {t["target"].split(":")[0]: t for t in report.targets(report.rows(samples), 100_000, 10**9)}["(b) 1mbit"]
    assert b["met"] is True and b["measured"] == 1_080_000 and "uplink counter 5000000 B" in b["note"]
    md = report.markdown(report.rows(samples), list(got.values()))
    assert md.count("\n| (a) first ship") == 2 and "| **no** |" in md
    # A first ship slower than 0.8x the best one-liner misses the target.
    samples[0] = S("a", "1mbit", tools.DEPLOYER, True, 9.0, 1000, 300 * report.MIB)
    a = {t["target"].split(":")[0]: t for t in report.targets(report.rows(samples), 100_000, 10**9)}["(a) 1mbit"]
    assert a["met"] is False and a["measured"] == 0.9
    assert "| save\\|zstd\\|ssh |" in md  # a '|' inside a cell is escaped
    again = report.rows_from_dicts(report.as_dicts(report.rows(samples)))
    assert again == report.rows(samples)


def test_the_fast_path_targets() -> None:
    samples = [
        S("a", "1mbit", tools.DEPLOYER, True, 10.0, 1_000_000),  # 0.8 Mbit/s on 1 Mbit/s: 80 %
        S("a", "1mbit", tools.ZSTD, True, 20.0, 1_000_000),
        S("b", "1mbit", tools.DEPLOYER, True, 0.7, 900_000),
        S("b", "1mbit", tools.DEPLOYER_REGISTRY, True, 1.2, 900_000),
        S("b", "1mbit", tools.PUSH_PULL, True, 1.0, 900_000),
        S("d", "1mbit", tools.DEPLOYER_REGISTRY, True, 9.9, 1_000_000),
        S("d", "1mbit", tools.PUSH_PULL, True, 10.0, 1_000_000),
    ]
    got = {t["target"].split(":")[0]: t for t in report.targets(report.rows(samples), 100_000, 10**9)}
    tarball, registry = got[f"(b) 1mbit, {tools.DEPLOYER} time"], got[f"(b) 1mbit, {tools.DEPLOYER_REGISTRY} time"]
    assert (tarball["measured"], tarball["limit"], tarball["met"]) == (0.7, report.RESHIP_LIMIT, True)
    assert (registry["measured"], registry["met"]) == (1.2, False) and "1.20 s vs 1.00 s" in registry["note"]
    link = got["(a) 1mbit, link use"]
    assert (link["measured"], link["limit"], link["met"]) == (0.8, report.LINK_SHARE, False)
    d = got["(d) 1mbit, time"]
    assert (d["measured"], d["limit"], d["met"]) == (0.99, report.REGISTRY_LIMIT, True)
    assert got["(a) 1mbit"]["measured"] == 0.5  # the existing targets keep their names
    assert tools.tools_for("b") == (tools.DEPLOYER, tools.DEPLOYER_REGISTRY, tools.DEPLOYER_COLD, *tools.BASELINES)


def test_a_figure_a_hair_off_its_limit_is_not_shown_as_the_limit() -> None:
    samples = [
        S("a", "1mbit", tools.DEPLOYER, True, 10.0, 1_124_875),  # 0.8999 Mbit/s on 1 Mbit/s
        S("a", "1mbit", tools.ZSTD, True, 12.5, 1_000_000),       # deployer at exactly 0.8x
        S("d", "1mbit", tools.DEPLOYER_REGISTRY, True, 10.004, 1_000_000),
        S("d", "1mbit", tools.PUSH_PULL, True, 10.0, 1_000_000),
    ]
    got = {t["target"].split(":")[0]: t for t in report.targets(report.rows(samples), 100_000, 10**9)}
    link, d, a = got["(a) 1mbit, link use"], got["(d) 1mbit, time"], got["(a) 1mbit"]
    assert (link["measured"], link["met"]) == (0.8999, False)
    assert (d["measured"], d["met"]) == (1.0004, False)
    assert (a["measured"], a["met"]) == (0.8, True)  # on the limit itself: shown as it is
    md = report.markdown(report.rows(samples), list(got.values()))
    assert "| 0.8999 | 0.9 | **no** |" in md
    # `--report` judges an earlier run's rows again when its JSON names the image's sizes
    rows = report.rows(samples)
    stored = [{**t, "measured": 0.9} for t in got.values()]
    data = {"meta": {"image": {"code_layer": {"zstd_size": 100_000}, "v1": {"size": 10**9}}}, "targets": stored}
    assert report.targets_again(rows, data) == list(got.values())
    assert report.targets_again(rows, {"meta": {}, "targets": stored}) == stored  # an older JSON: as stored


def test_procmon_tree_peak_rss() -> None:
    # A child holding ~60 MB: the tree's peak must see it though the parent is a small shell.
    fin = procmon.run(["sh", "-c", "python3 -c 'import time; b = bytearray(60_000_000); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(0.5)'"])
    assert fin.exited == 0
    assert fin.peak_rss > 60_000_000
    assert fin.seconds >= 0.5


def test_accounting_ruleset_counts_the_cgroup_and_its_replies() -> None:
    rules = account.ruleset("t1", "unified/deployer-bench-7")
    assert 'oifname "dtb-uplink" socket cgroupv2 level 1 "unified/deployer-bench-7" ct mark set 0xbec counter' in rules
    assert 'iifname "dtb-uplink" ct mark 0xbec counter' in rules


def test_lanes_compare_within_their_own_stores() -> None:
    """Each (ws store, host store) lane has its own best baseline and its own targets."""
    samples = [
        S("a", None, tools.DEPLOYER, True, 8.0, 100, host_store="overlay2", ws_store="overlay2"),
        S("a", None, tools.ZSTD, True, 10.0, 200, host_store="overlay2", ws_store="overlay2"),
        S("a", None, tools.DEPLOYER, True, 30.0, 100, host_store="containerd", ws_store="overlay2"),
        S("a", None, tools.ZSTD, True, 20.0, 200, host_store="containerd", ws_store="overlay2"),
        S("a", None, tools.RAW, True, 2.0, 300, host_store="containerd", ws_store="containerd"),
        S("b", None, tools.DEPLOYER, True, 1.0, 900_000, host_store="containerd", ws_store="overlay2"),
        S("c", None, tools.DEPLOYER, True, 30.0, 300, host_store=config.MIXED, ws_store="overlay2"),
        S("c", None, tools.DEPLOYER_RELAY, True, 12.0, 120, host_store=config.SITE, ws_store="overlay2"),
        S("c", None, tools.DEPLOYER_ONE, True, 10.0, 100, host_store=config.SITE, ws_store="overlay2"),
    ]
    rows = {(r.ws_store, r.host_store, r.scenario, r.tool): r for r in report.rows(samples)}
    assert rows[("overlay2", "overlay2", "a", tools.DEPLOYER)].ratio == 0.8
    assert rows[("overlay2", "containerd", "a", tools.DEPLOYER)].ratio == 1.5  # not against the other lane's
    assert rows[("overlay2", "containerd", "a", tools.DEPLOYER)].best_baseline == tools.ZSTD
    assert rows[("overlay2", "containerd", "b", tools.DEPLOYER)].best_baseline is None
    got = {t["target"].split(":")[0]: t for t in report.targets(report.rows(samples), 100_000, 10**9)}
    o, c = "overlay2 ws -> overlay2 host (gpu02)", "overlay2 ws -> containerd host (gpu01)"
    assert got[f"(a) unthrottled, {o}"]["met"] is True
    assert got[f"(a) unthrottled, {c}"]["met"] is False and got[f"(a) unthrottled, {c}"]["measured"] == 1.5
    assert got[f"(b) unthrottled, {c}"]["met"] is True
    assert got["(c) unthrottled, overlay2 ws, uplink bytes"]["measured"] == 1.2  # not met: 1.05
    assert got["(c) unthrottled, overlay2 ws, time"]["met"] is False
    md = report.markdown(report.rows(samples), list(got.values()))
    assert "| (a) first ship, host has no layers | overlay2 | gpu01 (containerd) | unthrottled | deployer |" in md
    assert "| containerd | gpu01 (containerd) |" in md and "gpu01,gpu02,cpu01 (mixed)" in md
    assert "airgap01,airgap02,airgap03 (site)" in md
    # A report from before lanes (no host_store / ws_store in its rows) still renders.
    old = [{k: v for k, v in d.items() if k not in ("host_store", "ws_store")} for d in report.as_dicts(report.rows(samples))]
    assert [r.host_store for r in report.rows_from_dicts(old)] == [""] * len(old)
    assert "| - | - |" in report.markdown(report.rows_from_dicts(old), [])


def _blob(store: dict[str, bytes], doc: dict) -> str:
    data = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store[digest] = data
    return digest


def test_config_digest_on_either_store() -> None:
    blobs: dict[str, bytes] = {}
    layers = ["sha256:" + "a" * 64, "sha256:" + "b" * 64]
    config_digest = _blob(blobs, {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": layers}})
    manifest = _blob(blobs, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                             "config": {"digest": config_digest}, "layers": []})
    attest = _blob(blobs, {"schemaVersion": 2, "config": {"digest": "sha256:" + "c" * 64}, "layers": []})
    index = _blob(blobs, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"digest": manifest, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": attest, "platform": {"os": "unknown", "architecture": "unknown"}}]})
    read = blobs.__getitem__
    base = {"Os": "linux", "Architecture": "amd64", "RootFS": {"Layers": layers}}
    # Classic store (no Descriptor): the id is the config digest.
    assert digests.config_digest_from({**base, "Id": config_digest}, read) == config_digest
    # containerd store: the id is a manifest's digest, or an index's.
    for top in (manifest, index):
        assert digests.config_digest_from({**base, "Id": top, "Descriptor": {"digest": top}}, read) == config_digest
    with pytest.raises(RuntimeError, match="other layers"):
        digests.config_digest_from({**base, "Id": manifest, "Descriptor": {"digest": manifest}, "RootFS": {"Layers": layers[:1]}}, read)
    with pytest.raises(RuntimeError, match="0 manifests"):
        digests.config_digest_from({**base, "Id": index, "Descriptor": {"digest": index}, "Architecture": "arm64"}, read)
    assert digests.store_of({"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}) == "containerd"
    assert digests.store_of({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}) == "overlay2"


def test_read_blob_checks_the_digest(tmp_path) -> None:
    (tmp_path / "sha256").mkdir()
    good = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    (tmp_path / "sha256" / good[7:]).write_bytes(b"{}")
    assert digests.read_blob(tmp_path, good) == b"{}"
    (tmp_path / "sha256" / good[7:]).write_bytes(b"{ }")
    with pytest.raises(RuntimeError, match="does not match"):
        digests.read_blob(tmp_path, good)


def test_parse_content_ls() -> None:
    text = ("DIGEST\tSIZE\tAGE\tLABELS\n"
            "sha256:aa\t5.6MB\t1 minute\tcontainerd.io/distribution.source.10.213.0.5=bench-1/ml,"
            "containerd.io/uncompressed=sha256:bb\n"
            "sha256:cc\t2MB\t12 seconds\t-\n")
    assert hosts.parse_content_ls(text) == {
        "sha256:aa": {"containerd.io/distribution.source.10.213.0.5": "bench-1/ml",
                      "containerd.io/uncompressed": "sha256:bb"},
        "sha256:cc": {}}


@pytest.mark.parametrize("pack", [lambda b: b, gzip.compress, lambda b: zstandard.ZstdCompressor().compress(b)])
def test_layer_blobs_are_measured_uncompressed(pack) -> None:
    raw = b"layer tar bytes " * 10_000
    assert image._uncompressed(io.BytesIO(pack(raw))).read() == raw


def test_the_disk_probe_measures_fsynced_writes_and_leaves_nothing(tmp_path) -> None:
    assert machine.disk_write_mbps(tmp_path, mib=4) > 0
    assert list(tmp_path.iterdir()) == []
    assert machine.disk_write_mbps(tmp_path / "missing", mib=4) is None
