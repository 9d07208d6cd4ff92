"""`deploy ship -p PLAYBOOK` end to end, through the real CLI against the testbed: build, ship by two
routes, run with per-host volumes, re-ship of an edit, dry run, invalid playbooks, scripts/demo.

The project (playbook + build context, in its own git repo) and the inventory live in a temp dir:
each host's data_root and staging dir are fresh temp paths, so nothing here touches the repo or
another test's files. Results are read from the hosts' own Docker and files.
"""
from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml

from tests.conftest import REPO, Testbed, _deploy_argv
from tests.integration.image_support import config_digest_of

BASE = "deployer-testbed/busybox:latest"
PLAYBOOK = """\
name: {name}
hosts: gpu01

image:
  build:
    context: ../app

run:
  gpus: "{{{{ 'all' if 'gpus' in group_names else '' }}}}"
  volumes:
    - "{{{{ data_root }}}}/{{{{ job_dir }}}}:/out"
  env:
    JOB_HOST: "{{{{ inventory_hostname }}}}"
    GREETING: "{{{{ greeting }}}}"
  command: ["/bin/sh", "/app/job.sh"]
  mkdirs: true
  replace: true

vars:
  greeting: hi
  job_dir: default-dir
"""
JOB = 'set -eu\necho "$JOB_HOST $GREETING gpus=${{NVIDIA_VISIBLE_DEVICES:-none}} version={v}" > /out/result.txt\n'


@dataclass
class Project:
    root: Path
    name: str
    rev: str  # the 12-character revision tag
    env: dict[str, str]

    @property
    def playbook(self) -> Path:
        return self.root / "playbooks" / "job.yml"

    def host_dir(self, host: str, kind: str) -> Path:
        return self.root / "hosts" / host / kind


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def inventory(testbed: Testbed, path: Path, hosts_root: Path, extra: dict[str, dict[str, Any]]) -> Path:
    """The testbed's inventory with every host's data_root and staging dir under hosts_root."""
    data = yaml.safe_load(Path(testbed.inventory).read_text())
    for name, hvars in data["all"]["hosts"].items():
        hvars["data_root"] = str(hosts_root / name / "data")
        hvars["deploy_staging_dir"] = str(hosts_root / name / "staging")
        hvars.update(extra.get(name, {}))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def project(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("oneshot")
    name = f"oneshot-{uuid.uuid4().hex[:8]}"
    (root / "app").mkdir()
    # a 2 MB random layer under the one that changes, so "only the top layer" is measurable; the
    # name in its command keeps the build cache (and the registry) from reusing an earlier run's
    (root / "app" / "Dockerfile").write_text(
        f"FROM {BASE}\nRUN head -c 2000000 /dev/urandom > /base.bin && echo {name} > /build-id\n"
        "COPY job.sh /app/job.sh\n")
    (root / "app" / "job.sh").write_text(JOB.format(v=1))
    (root / "playbooks").mkdir()
    (root / "playbooks" / "job.yml").write_text(PLAYBOOK.format(name=name))
    git(root, "init", "-q")
    git(root, "add", "app", "playbooks")
    git(root, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "job")
    inv = inventory(testbed, root / "inventory.yml", root / "hosts",
                    {"gpu01": {"job_dir": "alpha"}, "airgap01": {"job_dir": "beta"}})
    env = {**testbed.env(), "DEPLOY_INVENTORY": str(inv), "DEPLOYER_CACHE_DIR": str(root / "cache")}
    env.pop("DEPLOY_PLAYBOOK", None)
    yield Project(root, name, git(root, "rev-parse", "HEAD")[:12], env)
    for host in ("ws", *testbed.hosts):
        client = testbed.docker(host)
        for container in client.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)
        ids = {i.id for i in client.images.list(name=name) + client.images.list(name=f"{testbed.registry}/{name}")}
        for image_id in ids:
            try:
                client.images.remove(image_id, force=True)
            except docker.errors.NotFound:
                pass  # went with another of the ids (a child of it)


def deploy(project: Project, *args: str, timeout: float = 180) -> tuple[int, Any, str]:
    """`deploy ARGS` in a subprocess: (exit code, parsed JSON stdout or the raw text, stderr)."""
    proc = subprocess.run([*_deploy_argv(), *args], capture_output=True, text=True, timeout=timeout,
                          env=project.env, cwd=str(project.root), check=False)
    try:
        out: Any = json.loads(proc.stdout)
    except ValueError:
        out = proc.stdout
    return proc.returncode, out, proc.stderr


def by_host(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["host"]: r for r in records}


def finished(testbed: Testbed, host: str, name: str) -> Any:
    """The container, after waiting for it to exit 0."""
    container = testbed.docker(host).containers.get(name)
    assert container.wait(timeout=60)["StatusCode"] == 0, container.logs()
    container.reload()
    return container


def history(project: Project, host: str) -> list[dict[str, Any]]:
    log = project.host_dir(host, "staging") / "history.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_ship(testbed: Testbed, project: Project) -> dict[str, dict[str, Any]]:
    code, out, err = deploy(project, "ship", "-p", str(project.playbook), "--host", "gpu01,airgap01", "--json")
    assert code == 0, err
    return by_host(out)


def test_builds_ships_and_runs_on_two_hosts_by_two_routes(testbed: Testbed, project: Project,
                                                          first_ship: dict[str, dict[str, Any]]) -> None:
    ref = f"{project.name}:{project.rev}"
    local_id = testbed.docker("ws").images.get(ref).id
    config = config_digest_of(testbed.docker("ws"), ref)
    gpu01, air = first_ship["gpu01"], first_ship["airgap01"]
    assert gpu01["via"] == "registry" and air["via"] == "tarball"
    for host, rec in first_ship.items():
        assert rec["ok"] and rec["verified"] and rec["image_id"] == local_id, rec
        assert rec["image"] == ref and rec["git_rev"] == project.rev and rec["playbook"] == project.name
        assert rec["state"] == "started" and rec["container"] == project.name and rec["container_id"]
        assert rec["layers_total"] == 3 and rec["bytes_sent"] > 1_500_000  # the 2 MB random layer travelled
        assert config_digest_of(testbed.docker(host), ref) == config
        container = finished(testbed, host, project.name)
        assert container.labels["deployer.playbook"] == project.name
        assert container.labels["deployer.git_rev"] == project.rev
        assert container.attrs["HostConfig"]["DeviceRequests"]  # --gpus all, rendered for the gpus group
        records = history(project, host)
        ship = [r for r in records if r["action"] == "ship" and r["image"] == ref]
        run = [r for r in records if r["action"] == "run" and r["image"] == ref]
        assert ship and ship[-1]["result"] == "ok" and ship[-1]["playbook"] == project.name
        assert ship[-1]["git_rev"] == project.rev and ship[-1]["via"] == rec["via"]
        assert run and run[-1]["result"] == "ok" and run[-1]["playbook"] == project.name
        assert run[-1]["git_rev"] == project.rev
    # the registry route really pulled from the registry; the air-gapped host never could
    assert config_digest_of(testbed.docker("gpu01"), f"{testbed.registry}/{ref}") == config


def test_per_host_variables_render_into_volumes(testbed: Testbed, project: Project,
                                                first_ship: dict[str, dict[str, Any]]) -> None:
    for host, job_dir in (("gpu01", "alpha"), ("airgap01", "beta")):
        finished(testbed, host, project.name)
        data = project.host_dir(host, "data")
        assert (data / job_dir / "result.txt").read_text() == f"{host} hi gpus=all version=1\n"
        # each host got its own data_root and its own job_dir, nothing else
        assert sorted(p.name for p in data.iterdir()) == [job_dir]
        command = first_ship[host]["command"]
        assert f"--volume {data}/{job_dir}:/out" in command and "--gpus all" in command


def ssh_logins(testbed: Testbed, host: str) -> int:
    """SSH connections the host's sshd accepted so far (its log under the testbed's state dir)."""
    return (testbed.paths.logs / f"sshd-{host}.log").read_text().count("Accepted publickey")


def test_reship_after_editing_one_file_sends_only_the_new_top_layer(
        testbed: Testbed, project: Project, first_ship: dict[str, dict[str, Any]]) -> None:
    (project.root / "app" / "job.sh").write_text(JOB.format(v=2))
    before = {h: ssh_logins(testbed, h) for h in ("gpu01", "airgap01")}
    code, out, err = deploy(project, "ship", "-p", str(project.playbook), "--host", "gpu01,airgap01", "--json")
    assert code == 0, err
    # the run started on the connection the ship used: one SSH connection per host (issue 17)
    assert {h: ssh_logins(testbed, h) - n for h, n in before.items()} == {"gpu01": 1, "airgap01": 1}, err
    dirty = f"{project.name}:{project.rev}-dirty"
    image = testbed.docker("ws").images.get(dirty)
    top = image.attrs["RootFS"]["Layers"][-1]
    for host, rec in by_host(out).items():
        assert rec["ok"] and rec["verified"] and rec["image"] == dirty and rec["git_rev"] == f"{project.rev}-dirty"
        assert rec["layers_total"] == 3 and rec["layers_sent"] == 1, rec
        assert rec["bytes_sent"] < 100_000 < first_ship[host]["bytes_sent"], rec
        assert testbed.docker(host).images.get(dirty).attrs["RootFS"]["Layers"][-1] == top
        finished(testbed, host, project.name)
    assert (project.host_dir("gpu01", "data") / "alpha" / "result.txt").read_text().endswith("version=2\n")
    assert (project.host_dir("airgap01", "data") / "beta" / "result.txt").read_text().endswith("version=2\n")
    # --no-build ships the build of this revision that exists: already there, so nothing travels
    code, out, err = deploy(project, "ship", "-p", str(project.playbook), "--host", "airgap01", "--no-build",
                            "--no-run", "--json")
    assert code == 0, err
    [rec] = out
    assert rec["image"] == dirty and rec["bytes_sent"] == 0 and rec["verified"] and rec["state"] == "not run"
    assert "Step 1/" not in err


def snapshot(testbed: Testbed, hosts_root: Path, name: str) -> dict[str, Any]:
    """Everything a deploy could change: each host's images, containers, staging and data dirs; the
    workstation's images of the project; the registry's tags for it."""
    state: dict[str, Any] = {}
    for host in ("gpu02", "cpu01"):
        client = testbed.docker(host)
        state[host] = {
            "images": sorted((i.id, tuple(sorted(i.tags))) for i in client.images.list(all=True)),
            "containers": sorted((c.id, c.status) for c in client.containers.list(all=True)),
            "dirs": sorted(str(p) for p in (hosts_root / host).rglob("*")) if (hosts_root / host).exists() else None,
        }
    state["ws"] = sorted((i.id, tuple(sorted(i.tags))) for i in testbed.docker("ws").images.list(name=name))
    try:
        with urllib.request.urlopen(f"http://{testbed.registry}/v2/{name}/tags/list", timeout=10) as resp:
            state["registry"] = sorted(json.load(resp).get("tags") or [])
    except urllib.error.HTTPError as exc:
        state["registry"] = f"HTTP {exc.code}"
    return state


def test_dry_run_changes_nothing(testbed: Testbed, project: Project, first_ship: dict[str, dict[str, Any]]) -> None:
    dry_root = project.root / "dry-hosts"
    inv = inventory(testbed, project.root / "dry-inventory.yml", dry_root,
                    {"gpu02": {"deploy_via": "tarball", "job_dir": "gamma"}})
    (project.root / "app" / "job.sh").write_text(JOB.format(v=3))  # a build would make a new image
    before = snapshot(testbed, dry_root, project.name)
    # a dry run builds nothing: it plans with this revision's build if one exists (the re-ship test
    # above makes it), else with the newest build there is
    ref = f"{project.name}:{project.rev}-dirty"
    built = ref in {t for i in testbed.docker("ws").images.list(name=project.name) for t in i.tags}
    project_env = project.env
    project.env = {**project_env, "DEPLOY_INVENTORY": str(inv)}
    try:
        args = ("ship", "-p", str(project.playbook), "--host", "gpu02,cpu01", "--dry-run")
        code, out, err = deploy(project, *args, "--json")
        assert code == 0, err
        text_code, text, text_err = deploy(project, *args)
    finally:
        project.env = project_env
    assert text_code == 0, text_err
    assert snapshot(testbed, dry_root, project.name) == before
    assert not dry_root.exists()  # no staging dir, no lock, no history, no data dir
    plans = by_host(out)
    gpu02, cpu01 = plans["gpu02"], plans["cpu01"]
    planned = ref if built else f"{project.name}:latest"
    assert gpu02["ok"] and gpu02["image"] == ref and gpu02["planned_with"] == planned
    assert gpu02["ship"]["route"] == "tarball" and gpu02["ship"]["layers_missing"]
    assert any(c.startswith("docker load") or "docker" in c for c in gpu02["ship"]["commands"])
    assert cpu01["ship"]["route"] == "registry"
    assert cpu01["ship"]["steps"][0] == f"docker pull {testbed.registry}/{ref}"
    assert f" {testbed.registry}/{ref} {ref} " in cpu01["ship"]["commands"][0]  # pull, check, tag: one script
    gpu02_run = [c["command"] for c in gpu02["run"]["commands"] if c["command"].startswith("docker run")]
    cpu01_run = [c["command"] for c in cpu01["run"]["commands"] if c["command"].startswith("docker run")]
    assert len(gpu02_run) == len(cpu01_run) == 1
    assert f"--volume {dry_root}/gpu02/data/gamma:/out" in gpu02_run[0] and "--gpus all" in gpu02_run[0]
    assert f"--volume {dry_root}/cpu01/data/default-dir:/out" in cpu01_run[0] and "--gpus" not in cpu01_run[0]
    assert f"--label deployer.playbook={project.name}" in gpu02_run[0] and gpu02_run[0].endswith(
        f"{ref} /bin/sh /app/job.sh")
    assert "gpu02: ship " in text and "\n  $ docker run --detach --name" in text
    assert "nothing was built" in text_err and "Step 1/" not in text_err


def test_invalid_playbooks_exit_2_with_file_line_and_key_path(testbed: Testbed, project: Project) -> None:
    books = project.root / "playbooks"
    text = project.playbook.read_text()
    typo = books / "typo.yml"
    typo.write_text(text.replace("  volumes:", "  volumse:"))
    line = text.splitlines().index("  volumes:") + 1
    before = snapshot(testbed, project.root / "hosts", project.name)["ws"]
    code, out, err = deploy(project, "ship", "-p", str(typo), "--host", "gpu01")
    assert code == 2 and out == ""
    assert f"error: {typo}:{line}: run.volumse: unknown key 'volumse'" in err and "did you mean 'volumes'" in err
    undefined = books / "undefined.yml"
    undefined.write_text(text.replace("{{ job_dir }}", "{{ job_subdir }}"))
    vol_line = next(i for i, ln in enumerate(text.splitlines(), 1) if "{{ job_dir }}" in ln)
    code, out, err = deploy(project, "ship", "-p", str(undefined), "--host", "gpu01,airgap01", "--json")
    assert code == 2 and out == ""
    assert f"error: {undefined}:{vol_line}: run.volumes[0]: undefined variable 'job_subdir' for host gpu01" in err
    assert "also failing: airgap01" in err and "Traceback" not in err
    assert snapshot(testbed, project.root / "hosts", project.name)["ws"] == before  # nothing was built


def test_demo_runs_clean(testbed: Testbed) -> None:
    """scripts/demo as a user runs it: no fleet given, so it brings the testbed up (here: finds it up)."""
    env = {k: v for k, v in testbed.env().items() if k not in ("DEPLOY_INVENTORY", "DOCKER_HOST", "DEPLOY_PLAYBOOK")}
    proc = subprocess.run([str(REPO / "scripts" / "demo")], cwd=str(REPO), env=env, check=False, timeout=240,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "gpu01\tok\tregistry\t" in out and "airgap01\tok\ttarball\t" in out
    assert out.count("done: wrote 3 lines to /data/sample.log") >= 3
    assert "edited by scripts/demo at" in out and "-dirty" in out
    # the build's output is a few compact lines: one per Dockerfile step (BuildKit), not the builder's log
    build = out[out.index("\nbuilding sample from"):out.index("\nshipping sample:")].strip().splitlines()
    steps = [ln for ln in build if ln.startswith("  [")]
    assert len(build) <= 6 and 1 <= len(steps) <= 3 and build[-1].startswith("built sample:"), build
    assert "#1 " not in out and "legacy builder" not in out
    reship = out[out.index("== 6."):]
    assert "gpu01\tok\tregistry\t1/2\t" in reship and "airgap01\tok\ttarball\t1/2\t" in reship
    assert "Traceback" not in out and "error:" not in out
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "playbooks"], check=True,
                           capture_output=True, text=True).stdout
    assert dirty == "", dirty
