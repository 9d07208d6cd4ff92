"""Shipping through a site relay (`deploy_relay`) on the testbed's air-gapped site: airgap01-03 on
one LAN behind the uplink. Every check reads the hosts' own Docker, the uplink's byte counter, and
the hosts' and relay's files (authorized_keys, staging).
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, Testbed, _deploy_argv
from tests.integration.cli_support import deploy
from tests.integration.image_support import config_digest_of, partial_sizes, partials, remove_image, staged, stop
from tests.integration.test_origin import APP_BYTES, pair  # pair: the fixture, a base in the registry

__all__ = ["pair"]

SITE = ("airgap01", "airgap02", "airgap03")
RELAY = "airgap01"


@pytest.fixture(scope="module")
def site_env(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """CLI environment: the testbed inventory with `deploy_relay: airgap01` on group `site`."""
    tmp = tmp_path_factory.mktemp("relay")
    data = yaml.safe_load(Path(testbed.inventory).read_text())
    data["all"]["children"]["site"]["vars"] = {"deploy_relay": RELAY}
    inventory = tmp / "inventory.yml"
    inventory.write_text(yaml.safe_dump(data))
    return {**testbed.env(), "DEPLOY_INVENTORY": str(inventory), "DEPLOYER_CACHE_DIR": str(tmp / "cache"),
            "DEPLOYER_RETRY_BUDGET": "20", "DEPLOYER_DEAD_LINK_S": "5"}


@pytest.fixture
def faults(testbed: Testbed) -> Iterator[Testbed]:
    try:
        yield testbed
    finally:
        testbed.off()


def build_scratch(testbed: Testbed, sizes_mb: list[float]) -> tuple[str, str]:
    """An image FROM scratch with one random file per layer (no base any host may already hold):
    (ref, config digest)."""
    ref = f"relaytest/app:{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        lines = ["FROM scratch"]
        for i, mb in enumerate(sizes_mb):
            data = os.urandom(int(mb * 1_000_000))
            info = tarfile.TarInfo(f"f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            lines.append(f"COPY f{i} /f{i}")
        dockerfile = "\n".join(lines).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    buf.seek(0)
    client = testbed.docker("ws", timeout=300)
    client.images.build(fileobj=buf, custom_context=True, tag=ref, rm=True)
    digest = config_digest_of(client, ref)
    assert digest is not None
    return ref, digest


def records(out: Any) -> dict[str, dict[str, Any]]:
    assert isinstance(out, list), out
    return {r["host"]: r for r in out}


def relay_lines(testbed: Testbed) -> list[str]:
    """authorized_keys lines a relay ever put on the site's hosts and are still there."""
    out = []
    for host in SITE:
        path = Path(testbed.hosts[host].staging_dir).parent / "authorized_keys"
        if path.exists():
            out += [ln for ln in path.read_text().splitlines() if "deployer-relay:" in ln]
    return out


def relay_files(testbed: Testbed) -> list[str]:
    root = Path(testbed.hosts[RELAY].staging_dir) / "relay"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def uplink_tx(testbed: Testbed) -> int:
    return testbed.uplink_bytes()[0]


def test_site_gets_each_blob_over_the_uplink_once(faults: Testbed, site_env: dict[str, str]) -> None:
    testbed = faults
    ref, digest = build_scratch(testbed, [12, 4])
    testbed.throttle("uplink", "200mbit")
    # one host alone goes direct (a site is two or more hosts of one ship): the reference figure
    before = uplink_tx(testbed)
    code, out, err = deploy(site_env, "ship", "--host", "airgap02", "--image", ref, "--json")
    one_host = uplink_tx(testbed) - before
    assert code == 0, err
    assert records(out)["airgap02"]["relay"] is None
    remove_image(testbed.docker("airgap02"), ref)

    # what an earlier run's dead relay could not clean (a re-run of this file) must not pass for this one's
    subprocess.run(["rm", "-rf", str(Path(testbed.hosts[RELAY].staging_dir) / "relay")], check=True)
    before = uplink_tx(testbed)
    code, out, err = deploy(site_env, "ship", "--host", "site", "--image", ref, "--json")
    site = uplink_tx(testbed) - before
    assert code == 0, err
    recs = records(out)
    for host in SITE:
        rec = recs[host]
        assert rec["ok"] and rec["verified"] and rec["relay"] == RELAY and rec["relay_fallback"] is False, rec
        assert rec["relay_bytes"] >= 16_000_000 * 0.99, rec  # every layer came over the site's LAN
        assert config_digest_of(testbed.docker(host), ref) == digest
    print(f"uplink: {one_host} B for one host, {site} B for three through the relay ({site / one_host:.3f}x)")
    assert site <= 1.05 * one_host
    assert sum(r["bytes_sent"] for r in recs.values()) <= 1.02 * max(r["relay_bytes"] for r in recs.values())
    # nothing of the ship stays behind: keys revoked, the relay's key dir and blobs removed
    assert relay_lines(testbed) == []
    assert relay_files(testbed) == []


def test_dry_run_shows_the_relay_plan(testbed: Testbed, site_env: dict[str, str]) -> None:
    ref, _ = build_scratch(testbed, [1])
    code, out, err = deploy(site_env, "ship", "--host", "airgap02,airgap03", "--image", ref, "--dry-run")
    assert code == 0, err
    assert out.count("through relay airgap01") == 2
    assert "relay-receive.sh" in out and "deployer-relay:<ship id>" in out
    assert "runs on airgap01, once per site" in out and "runs on airgap01; the host's forced receive" in out
    code, out, err = deploy(site_env, "ship", "--host", "airgap02,airgap03", "--image", ref, "--dry-run", "--json")
    assert code == 0, err
    assert {r["host"]: r["relay"] for r in out} == {"airgap02": RELAY, "airgap03": RELAY}
    assert relay_lines(testbed) == []  # a dry run changes nothing


def test_a_flaky_lan_link_resumes(faults: Testbed, site_env: dict[str, str]) -> None:
    """Connections to airgap03 are reset every 5 MB: the relay's LAN hop resumes where it stopped."""
    testbed = faults
    ref, digest = build_scratch(testbed, [16])
    testbed.flaky("airgap03", 5)
    code, out, err = deploy(site_env, "ship", "--host", "airgap02,airgap03", "--image", ref, "--json",
                            timeout=300)
    assert code == 0, err
    recs = records(out)
    for host in ("airgap02", "airgap03"):
        assert recs[host]["verified"] and recs[host]["relay"] == RELAY, recs[host]
        assert config_digest_of(testbed.docker(host), ref) == digest
    assert "resuming" in err, err[-3000:]
    assert recs["airgap03"]["bytes_sent"] + recs["airgap02"]["bytes_sent"] < 16_000_000 * 1.5
    assert relay_lines(testbed) == []


def _kill_sshd(host: str) -> None:
    """Every sshd in the host's network namespace: the listener and each connection's."""
    pids = subprocess.run(["ip", "netns", "pids", host], capture_output=True, text=True, check=True).stdout.split()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                os.kill(int(pid), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


def _kill_mid_ship(env: dict[str, str], hosts: str, ref: str, blobs: Path,
                   node: str) -> tuple[str, str, int, float]:
    """Ship REF to HOSTS in the background; once a blob in NODE's BLOBS dir passed 5 MB, kill every
    sshd of NODE; (stdout, stderr, exit code) of the ship and the seconds from the kill to its end.
    The testbed is repaired afterwards. A part an earlier run left there does not count: the kill
    must come while this ship's copy grows."""
    before = partials(blobs)
    proc = subprocess.Popen([*_deploy_argv(), "ship", "--host", hosts, "--image", ref, "--json"],
                            env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            staged = partial_sizes(blobs, but=before)
            if staged and max(staged) > 5_000_000:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"{node} never received 5 MB")
        _kill_sshd(node)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=300)
        after = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run([str(REPO / "scripts" / "testbed"), "up"], check=True, capture_output=True)
    return out, err, proc.returncode, after


def test_relay_dies_mid_ship_and_its_hosts_go_direct(faults: Testbed, site_env: dict[str, str]) -> None:
    """The documented rule (deploy_relay_fallback: direct): the relay's hosts finish with direct sends,
    resuming what the relay had passed on; nothing is half-applied. A relay that is down (it refuses
    now) is given up after 15 s, not after the retry budget (the default 2 minutes here)."""
    testbed = faults
    ref, digest = build_scratch(testbed, [30])
    testbed.throttle("uplink", "40mbit")
    relay_blobs = Path(testbed.hosts[RELAY].staging_dir) / "relay" / "blobs" / "sha256"
    env = {**site_env, "DEPLOYER_RETRY_BUDGET": "120"}
    out, err, code, after = _kill_mid_ship(env, "airgap02,airgap03", ref, relay_blobs, RELAY)
    print(f"the ship ended {after:.1f} s after the relay died")
    assert code == 0, err[-3000:]
    # the give-up (15 s and the last attempt), then the rest of 30 MB at 5 MB/s: far from 120 s
    assert after < 60, err[-3000:]
    recs = records(json.loads(out))
    for host in ("airgap02", "airgap03"):
        assert recs[host]["ok"] and recs[host]["verified"], recs[host]
        assert recs[host]["relay_fallback"] is True, recs[host]  # the record says what the note said
        # what the relay passed on before it died came over the LAN (the host resumed after it)
        assert recs[host]["relay_bytes"] > 0, recs[host]
        assert config_digest_of(testbed.docker(host), ref) == digest
    assert "sending directly from the workstation" in err
    assert relay_lines(testbed) == []  # each host's key line went with its own (direct) connection


def test_ctrl_c_stops_the_relays_copy_too_and_the_next_ship_resumes_it(faults: Testbed,
                                                                        site_env: dict[str, str]) -> None:
    """SIGTERM (or Ctrl-C) while the relay's copy crosses the uplink: deploy ends within seconds, not
    once that copy is complete (before: its send went on to the last byte); the relay keeps the part,
    the next ship sends the rest over the uplink, and no key line is left on the hosts."""
    testbed = faults
    ref, digest = build_scratch(testbed, [30])
    testbed.throttle("uplink", "40mbit")  # ~5 MB/s: the copy has ~4 s to go when the signal comes
    relay_blobs = Path(testbed.hosts[RELAY].staging_dir) / "relay" / "blobs" / "sha256"
    proc = subprocess.Popen([*_deploy_argv(), "ship", "--host", ",".join(SITE), "--image", ref, "--json"],
                            env=site_env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = partials(relay_blobs)  # an earlier ship's parts
    try:
        got = staged(proc, {RELAY: relay_blobs}, 10_000_000, but={RELAY: before})[RELAY]
        assert got >= 10_000_000, "the relay's copy never got going"
        out, err, stopped_in = stop(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"SIGTERM at {got} B on the relay; stopped in {stopped_in:.2f} s")
    assert proc.returncode == 143 and stopped_in < 3, err[-3000:]
    assert all(not r["ok"] and r["error"] == "interrupted (SIGTERM)" for r in json.loads(out)), out
    kept = max(partial_sizes(relay_blobs, but=before), default=0)
    assert kept >= got, "the relay's part was not kept"
    assert relay_lines(testbed) == []
    testbed.throttle("uplink", None)
    sent_before = uplink_tx(testbed)
    code, out2, err2 = deploy(site_env, "ship", "--host", ",".join(SITE), "--image", ref, "--json", timeout=300)
    assert code == 0, err2[-3000:]
    for host, rec in records(out2).items():
        assert rec["verified"] and config_digest_of(testbed.docker(host), ref) == digest, rec
    sent = uplink_tx(testbed) - sent_before
    print(f"the relay kept {kept} B; the next ship sent {sent} B over the uplink")
    assert sent < 30_000_000 - kept + 3_000_000  # the rest of the copy, once


def test_origin_pull_and_relay_combine(testbed: Testbed, tmp_path: Path, pair: Any) -> None:
    """Rule: each host that reaches the base's registry pulls the base itself; only the layers above
    it come through the relay. gpu01 and gpu02 (both reach the registry) form a site, relay gpu02."""
    data = yaml.safe_load(Path(testbed.inventory).read_text())
    for host in ("gpu01", "gpu02"):
        data["all"]["hosts"][host]["deploy_relay"] = "gpu02"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(data))
    env = {**testbed.env(), "DEPLOY_INVENTORY": str(inventory), "DEPLOYER_CACHE_DIR": str(tmp_path / "cache")}
    code, out, err = deploy(env, "ship", "--host", "gpu01,gpu02", "--image", pair.app, "--via", "tarball", "--json")
    assert code == 0, err
    recs = records(out)
    for host in ("gpu01", "gpu02"):
        rec = recs[host]
        assert rec["verified"] and rec["relay"] == "gpu02" and rec["origin"] == pair.repo_digest, rec
        assert rec["layers_from_origin"] == 1 and rec["layers_sent"] == 2, rec
        assert 0 < rec["relay_bytes"] < APP_BYTES * 1.5, rec  # the app's layers only, over the LAN
        assert config_digest_of(testbed.docker(host), pair.app) == pair.app_config
    assert sum(r["bytes_sent"] for r in recs.values()) < APP_BYTES * 1.5  # the base never crossed the uplink


def test_jump_hosts_and_registry_hosts_in_one_ship(testbed: Testbed, tmp_path: Path) -> None:
    """airgap02/03 are reached only through a jump host (airgap01, also the relay); gpu02 takes the
    registry route in the same ship. The relay reaches the jumped hosts on the LAN directly."""
    data = yaml.safe_load(Path(testbed.inventory).read_text())
    data["all"]["children"]["site"]["vars"] = {"deploy_relay": RELAY}
    for host in ("airgap02", "airgap03"):
        data["all"]["hosts"][host]["deploy_jump"] = f"root@{testbed.hosts[RELAY].address}"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(data))
    env = {**testbed.env(), "DEPLOY_INVENTORY": str(inventory), "DEPLOYER_CACHE_DIR": str(tmp_path / "cache")}
    ref, digest = build_scratch(testbed, [2])
    code, out, err = deploy(env, "ship", "--host", "airgap02,airgap03,gpu02", "--image", ref, "--json")
    assert code == 0, err
    recs = records(out)
    assert recs["gpu02"]["via"] == "registry" and recs["gpu02"]["relay"] is None
    for host in ("airgap02", "airgap03"):
        assert recs[host]["via"] == "tarball" and recs[host]["relay"] == RELAY and recs[host]["relay_bytes"] > 0
    for host in ("airgap02", "airgap03", "gpu02"):
        assert recs[host]["verified"] and config_digest_of(testbed.docker(host), ref) == digest
    assert relay_lines(testbed) == []


# -- a tree of relays: with deploy_relay_fanout 1 the site is the chain airgap01 -> airgap02 -> airgap03

CHAIN = {"airgap01": "airgap01", "airgap02": "airgap01", "airgap03": "airgap02"}  # host -> who served it


@pytest.fixture(scope="module")
def chain_env(site_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """site_env with `deploy_relay_fanout: 1` on group `site`: a tree of depth 2 out of three hosts."""
    data = yaml.safe_load(Path(site_env["DEPLOY_INVENTORY"]).read_text())
    data["all"]["children"]["site"]["vars"]["deploy_relay_fanout"] = 1
    inventory = tmp_path_factory.mktemp("chain") / "inventory.yml"
    inventory.write_text(yaml.safe_dump(data))
    return {**site_env, "DEPLOY_INVENTORY": str(inventory)}


def node_files(testbed: Testbed) -> dict[str, list[str]]:
    """Files under each site host's relay dir (key dirs, blob copies, the forced receive), by host."""
    out = {}
    for host in SITE:
        root = Path(testbed.hosts[host].staging_dir) / "relay"
        out[host] = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return out


def test_a_chain_of_relays_gets_each_blob_over_the_uplink_once(faults: Testbed, chain_env: dict[str, str]) -> None:
    testbed = faults
    ref, digest = build_scratch(testbed, [12, 4])
    code, out, err = deploy(chain_env, "ship", "--host", "site", "--image", ref, "--dry-run", "--json")
    assert code == 0, err
    assert {r["host"]: r["relay"] for r in out} == CHAIN  # the dry run shows the tree
    code, text, err = deploy(chain_env, "ship", "--host", "site", "--image", ref, "--dry-run")
    assert code == 0, err
    assert "airgap03: tarball" in text and "through relay airgap02" in text, text
    assert "runs on airgap02, which passes it on to airgap03 too" in text, text

    testbed.throttle("uplink", "200mbit")
    before = uplink_tx(testbed)
    code, out, err = deploy(chain_env, "ship", "--host", "airgap02", "--image", ref, "--json")
    one_host = uplink_tx(testbed) - before
    assert code == 0, err
    remove_image(testbed.docker("airgap02"), ref)

    left_before = node_files(testbed)  # what earlier tests' dead relays could not clean
    before = uplink_tx(testbed)
    code, out, err = deploy(chain_env, "ship", "--host", "site", "--image", ref, "--json")
    site = uplink_tx(testbed) - before
    assert code == 0, err
    recs = records(out)
    assert {h: r["relay"] for h, r in recs.items()} == CHAIN
    for host in SITE:
        rec = recs[host]
        assert rec["ok"] and rec["verified"], rec
        assert rec["relay_bytes"] >= 16_000_000 * 0.99, rec  # every layer came through the tree
        assert config_digest_of(testbed.docker(host), ref) == digest
    print(f"uplink: {one_host} B for one host, {site} B for three through a chain of relays "
          f"({site / one_host:.3f}x)")
    assert site <= 1.05 * one_host
    # nothing of the ship stays behind on any node: key lines, key dirs, blob copies, forced receives
    assert relay_lines(testbed) == []
    assert node_files(testbed) == left_before


def test_a_killed_node_of_the_tree_sends_its_child_direct(faults: Testbed, chain_env: dict[str, str]) -> None:
    """airgap02 (between airgap01 and airgap03) dies mid-blob: airgap03 falls back to direct sends
    (deploy_relay_fallback: direct), resuming, and ends verified; airgap01 is not disturbed."""
    testbed = faults
    ref, digest = build_scratch(testbed, [30])
    testbed.throttle("uplink", "40mbit")
    for host in ("airgap01", "airgap02"):  # a copy an earlier, failed run left must not pass for this one's
        subprocess.run(["rm", "-rf", str(Path(testbed.hosts[host].staging_dir) / "relay")], check=True)
    copies = Path(testbed.hosts["airgap02"].staging_dir) / "relay" / "blobs" / "sha256"
    out, err, code, _ = _kill_mid_ship(chain_env, "site", ref, copies, "airgap02")
    recs = records(json.loads(out))
    assert not recs["airgap02"]["ok"], recs["airgap02"]  # its own ship died with it; it hides no other host
    assert code != 0
    for host in ("airgap01", "airgap03"):
        assert recs[host]["ok"] and recs[host]["verified"], recs[host]
        assert config_digest_of(testbed.docker(host), ref) == digest
    assert recs["airgap03"]["relay"] == "airgap02", recs["airgap03"]  # it started in the tree
    assert recs["airgap03"]["relay_fallback"] is True and recs["airgap01"]["relay_fallback"] is False, recs
    assert recs["airgap03"]["relay_bytes"] > 0, recs["airgap03"]  # what airgap02 passed on before it died
    assert "relay airgap02 cannot serve this host" in err and "sending directly from the workstation" in err, \
        err[-3000:]
    # the living nodes are clean; the dead one could not be cleaned: its parent's key line (which
    # expires within a day) and its key dir stay there, and are removed here for the next tests
    left = relay_lines(testbed)
    keys = Path(testbed.hosts["airgap02"].staging_dir).parent / "authorized_keys"
    assert all(ln in keys.read_text() for ln in left), left
    files = node_files(testbed)
    assert files["airgap03"] == [], files
    # the relay keeps its copies for a resume (not every host succeeded), but no key dir
    assert all(f.startswith("blobs/") for f in files["airgap01"]), files
    keys.write_text("".join(ln + "\n" for ln in keys.read_text().splitlines() if "deployer-relay:" not in ln))
    for host in ("airgap01", "airgap02"):
        subprocess.run(["rm", "-rf", str(Path(testbed.hosts[host].staging_dir) / "relay")], check=True)
