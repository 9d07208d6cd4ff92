"""`scripts/bench --smoke` on the real testbed: it runs end to end and writes a well-formed report.

No timing assertions (timings drift on a shared machine); only that every scenario x host store x
uplink x tool row exists, every step succeeded and was verified on the host (by config digest, which
means the same image on either image store), and the byte counts are physically sane.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from bench_lib import tools
from bench_lib.config import (
    MULTI_HOSTS,
    SCENARIOS,
    SITE,
    SMOKE_HOST_STORES,
    SMOKE_RATE,
    SMOKE_THROTTLED_SCENARIOS,
    hosts_for,
    lanes_for,
)

ROWS = {(sc, lane, rate, tool) for sc in SCENARIOS for lane in lanes_for(sc, SMOKE_HOST_STORES)
        for rate in (None, SMOKE_RATE) for tool in tools.tools_for(sc, lane)
        if rate is None or sc in SMOKE_THROTTLED_SCENARIOS}


@pytest.fixture(scope="module")
def smoke(testbed, tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([str(REPO / "scripts" / "bench"), "--smoke", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=600, env=testbed.env(),
                          cwd=str(REPO))
    reports = sorted(out.glob("bench-*.json"))
    assert reports, f"no report written; exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc, json.loads(reports[-1].read_text())


def test_every_step_ran_and_was_verified(smoke) -> None:
    proc, data = smoke
    failed = [(s["scenario"], s["rate"], s["tool"], s["error"]) for s in data["samples"] if not s["ok"]]
    assert not failed, failed
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every step that ships an image was checked on its hosts; the link's floor ships none
    assert all(s["verified"] != (s["tool"] == tools.FLOOR) for s in data["samples"])
    assert "deployer vs baselines" in proc.stdout


def test_hosts_were_checked_by_config_digest(smoke, testbed) -> None:
    """Every host holds the local image's config digest, whatever its store's id for it; the smoke
    ships to containerd-store hosts (whose ids differ from the local one) and classic ones."""
    _, data = smoke
    image = data["meta"]["image"]
    want = {"v1": image["v1"]["config_digest"], "v2": image["v2"]["config_digest"]}
    assert want["v1"].startswith("sha256:") and want["v1"] != want["v2"]
    stores = {name: h.store for name, h in testbed.hosts.items()}
    seen = set()
    for s in data["samples"]:
        if s["tool"] == tools.FLOOR:  # random bytes to /dev/null: no image to check
            assert s["checked"] == {} and s["scenario"] == "a"
            continue
        assert set(s["checked"]) == set(s["hosts"]) == set(hosts_for(s["scenario"], s["host_store"], s["tool"]))
        for host, got in s["checked"].items():
            assert got["config_digest"] == want["v2" if s["scenario"] == "b" else "v1"], (s["scenario"], s["tool"], host)
            seen.add(stores[host])
        assert s["ws_store"] == data["meta"]["config"]["ws_store"] == testbed.ws_store
    assert {"containerd", "overlay2"} <= seen


def test_report_has_every_row(smoke) -> None:
    _, data = smoke
    got = {(r["scenario"], r["host_store"], r["rate"], r["tool"]) for r in data["rows"]}
    assert got == ROWS
    for r in data["rows"]:
        assert r["runs"] == r["ok"] == 1
        assert r["seconds"] > 0
        assert r["best_baseline"]
    meta = data["meta"]
    assert meta["config"]["smoke"] is True and meta["machine"]["nproc"] >= 1
    # the disk's pace (fsynced writes) before and after: what a containerd-store host's loads wait on
    assert meta["machine"]["disk_write_mbps"] > 0 and meta["machine_after"]["disk_write_mbps"] > 0
    assert {t["target"].split(" ")[0] for t in data["targets"]} >= {"(a)", "(b)", "(c)", "deployer"}
    assert all(t["met"] in (True, False) for t in data["targets"])


def test_byte_counts_are_sane(smoke) -> None:
    _, data = smoke
    image = data["meta"]["image"]
    raw, zstd, saved = image["v1"]["size"], image["v1"]["zstd_size"], image["v1"]["saved_size"]
    # A classic-store workstation's `docker save` writes the layers uncompressed; a containerd-store
    # one writes them as its content store keeps them (the builder's gzip blobs).
    assert saved == raw if data["meta"]["config"]["ws_store"] != "containerd" else 0.5 * zstd < saved <= raw
    assert 15e6 < raw < 40e6 and 0 < image["code_layer"]["zstd_size"] < zstd < raw
    rows = {(r["scenario"], r["host_store"], r["rate"], r["tool"]): r for r in data["rows"]}
    accounted = data["meta"]["own_bytes_accounting"] == "cgroup v2 + nftables"
    for (sc, _, rate, tool), r in rows.items():
        if tool in tools.REGISTRY_TOOLS or not accounted:
            assert r["own_bytes"] is None
        else:  # a step's own bytes are part of all the bytes on the uplink
            assert 0 < r["own_bytes"] <= r["uplink_bytes"], (sc, rate, tool)
            r["uplink_bytes"] = r["own_bytes"]  # the stricter figure for the bounds below
    # A full resend can not take fewer bytes than its payload; compressed ones at least half the zstd size.
    for (sc, lane, rate, tool), r in rows.items():
        n = len(MULTI_HOSTS) if sc == "c" else 1
        if tool == tools.RAW:
            assert r["uplink_bytes"] >= n * saved, (sc, rate, tool)
        elif tool == tools.FLOOR:  # as many random bytes as deployer's stream, plus SSH's framing
            sent = rows[(sc, lane, rate, tools.DEPLOYER)]["bytes_sent"]
            assert sent <= r["uplink_bytes"] < 1.1 * sent + 1e6, (sc, rate, tool)
        elif tool in (tools.GZIP, tools.ZSTD):
            assert r["uplink_bytes"] >= n * 0.5 * zstd, (sc, rate, tool)
        elif sc == "b" or (sc == "e" and tool != tools.DEPLOYER):
            # deployer and push+pull are incremental by design: the code layer only; in (e) the host
            # pulls the base from the registry, and push+pull's push mounts it there
            assert r["uplink_bytes"] >= 0.5 * image["code_layer"]["zstd_size"], (sc, rate, tool)
        else:  # registry routes send once (the registry sits inside the site); deployer's tarball per host
            assert r["uplink_bytes"] >= 0.5 * zstd, (sc, rate, tool)
        if tool in tools.DEPLOYERS:
            assert r["bytes_sent"] and r["bytes_sent"] > 0, (sc, rate, tool)
            if tool == tools.DEPLOYER:
                # deployer's own count of compressed bytes it put on the wire went over the uplink
                assert r["uplink_bytes"] >= 0.9 * r["bytes_sent"], (sc, rate, tool)
    # Through the site's relay the image crosses the uplink once for the three hosts (direct: thrice).
    for rate in {r for (sc, lane, r, _) in rows if (sc, lane) == ("c", SITE)}:
        relay, one = rows.get(("c", SITE, rate, tools.DEPLOYER_RELAY)), rows.get(("c", SITE, rate, tools.DEPLOYER_ONE))
        assert relay and one, rate
        assert relay["uplink_bytes"] <= 1.5 * one["uplink_bytes"], (rate, relay["uplink_bytes"], one["uplink_bytes"])
