"""`deploy build` against the testbed's workstation Docker: BuildKit (docker buildx) progress, git-revision tags,
labels, failures; and the legacy builder when the docker CLI has no buildx plugin."""
from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

REPO = Path(__file__).resolve().parents[2]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def ws(testbed: Any) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=testbed.ws_docker_host, timeout=120)
    yield client
    client.close()


@pytest.fixture
def project(tmp_path: Path, ws: docker.DockerClient) -> Iterator[tuple[Path, str]]:
    """A git repo holding a playbook whose image builds FROM the testbed's busybox; images removed after."""
    name = f"pbtest-{uuid.uuid4().hex[:8]}"
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(
        "FROM deployer-testbed/busybox:latest\nARG MSG=none\nCOPY hello.txt /hello.txt\n"
        "RUN echo \"msg=$MSG\" > /msg.txt && echo built-step-output\nCMD [\"cat\", \"/hello.txt\"]\n")
    (app / "hello.txt").write_text("hello v1\n")
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "job.yml").write_text(
        f"name: {name}\nimage:\n  build:\n    context: ../app\n    args:\n      MSG: '{{{{ msg }}}}'\n"
        "run:\n  command: cat /msg.txt\nvars:\n  msg: from-vars\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.com")
    git(tmp_path, "config", "user.name", "t")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "init")
    yield tmp_path, name
    for image in ws.images.list(name=name):
        ws.images.remove(image.id, force=True)


def test_build_tags_with_git_revision_and_streams_output(project: tuple[Path, str], ws: docker.DockerClient,
                                                         deploy_cli: Any) -> None:
    root, name = project
    rev = git(root, "rev-parse", "HEAD")
    code, out, err = deploy_cli("build", "-p", str(root / "playbooks/job.yml"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["ref"] == f"{name}:{rev[:12]}" and result["dirty"] is False and result["revision"] == rev
    assert result["refs"] == [f"{name}:{rev[:12]}", f"{name}:latest"]
    # BuildKit's steps, one line each (piped: no live line), not the builder's whole log
    assert re.search(r"^  \[3/3\] RUN echo \"msg=from-vars\" > /msg.txt && echo built-step-output  (\d+\.\ds|cached)$",
                     err, re.M), err
    assert "  [2/3] COPY hello.txt /hello.txt  " in err and "#1 " not in err and "legacy builder" not in err
    image = ws.images.get(result["ref"])
    assert image.id == result["image_id"]
    assert ws.images.get(f"{name}:latest").id == image.id
    assert image.labels["org.opencontainers.image.revision"] == rev
    assert image.labels["deployer.git_rev"] == rev[:12]
    # The build arg came from the playbook's vars.
    assert ws.containers.run(image.id, ["cat", "/msg.txt"], remove=True) == b"msg=from-vars\n"

    # An uncommitted edit inside the context: a new image, tagged <rev>-dirty.
    (root / "app" / "hello.txt").write_text("hello v2\n")
    code, out, err = deploy_cli("build", "-p", str(root / "playbooks/job.yml"), "-q")
    assert code == 0, err
    assert out.strip() == f"{name}:{rev[:12]}-dirty"
    assert "uncommitted changes" in err and "[3/3]" not in err  # -q: no build output
    dirty = ws.images.get(out.strip())
    assert dirty.id != image.id and dirty.labels["deployer.git_rev"] == f"{rev[:12]}-dirty"
    assert ws.images.get(f"{name}:latest").id == dirty.id
    assert ws.containers.run(dirty.id, remove=True) == b"hello v2\n"

    # -v: BuildKit's whole log, with each step's own output
    code, out, err = deploy_cli("-v", "build", "-p", str(root / "playbooks/job.yml"))
    assert code == 0, err
    assert re.search(r"^#\d+ \[3/3\] RUN echo", err, re.M) and "CACHED" in err


def test_build_failure_names_the_step(project: tuple[Path, str], deploy_cli: Any) -> None:
    root, _name = project
    dockerfile = root / "app" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN echo about-to-fail && exit 3\n")
    code, out, err = deploy_cli("build", "-p", str(root / "playbooks/job.yml"))
    assert code == 1 and out == ""
    assert ("error: image build failed at [4/4] RUN echo about-to-fail && exit 3 (Dockerfile:6): process "
            '"/bin/sh -c echo about-to-fail && exit 3" did not complete successfully: exit code: 3\n') in err, err
    assert "output (last lines):\n    about-to-fail\n" in err
    assert "Traceback" not in err
    # `ship -p --json`: a script reading stdout learns per host that nothing was shipped, and why
    code, out, err = deploy_cli("ship", "-p", str(root / "playbooks/job.yml"), "--host", "gpu01,airgap01", "--json")
    assert code == 1 and "error: image build failed at [4/4]" in err, err
    records = {r["host"]: r for r in json.loads(out)}
    assert set(records) == {"gpu01", "airgap01"}
    for rec in records.values():
        assert (rec["ok"], rec["shipped"], rec["state"], rec["bytes_sent"]) == (False, False, "skipped", 0), rec
        assert rec["error"].startswith("image build failed at [4/4]") and rec["error"] == rec["ship_error"]
        assert rec["hint"] and "Dockerfile" in rec["hint"]


@pytest.fixture
def no_buildx(tmp_path: Path) -> dict[str, str]:
    """A docker CLI config without the buildx plugin: the documented fallback to the legacy builder."""
    config = tmp_path / "docker-config-without-buildx"
    config.mkdir()
    return {"DOCKER_CONFIG": str(config)}


def test_without_buildx_the_legacy_builder_builds_the_same_tags(project: tuple[Path, str], ws: docker.DockerClient,
                                                                deploy_cli: Any, no_buildx: dict[str, str]) -> None:
    root, name = project
    rev = git(root, "rev-parse", "HEAD")
    code, out, err = deploy_cli("build", "-p", str(root / "playbooks/job.yml"), "--json", env=no_buildx)
    assert code == 0, err
    result = json.loads(out)
    assert "docker buildx is not installed: built with Docker's legacy builder" in err
    assert re.search(r"^  \[4/\d+\] RUN echo \"msg=\$MSG\" > /msg.txt && echo built-step-output  done$", err, re.M), err
    assert result["refs"] == [f"{name}:{rev[:12]}", f"{name}:latest"]
    image = ws.images.get(result["ref"])
    assert image.id == result["image_id"] and image.labels["deployer.git_rev"] == rev[:12]
    assert ws.containers.run(image.id, ["cat", "/msg.txt"], remove=True) == b"msg=from-vars\n"

    # a failure names the legacy step, with its output
    dockerfile = root / "app" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN echo about-to-fail && exit 3\n")
    code, out, err = deploy_cli("build", "-p", str(root / "playbooks/job.yml"), env=no_buildx)
    assert code == 1 and out == ""
    # The labels deployer adds become extra steps at the end, hence Step 6/N.
    assert re.search(r"error: image build failed at Step 6/\d+ : RUN echo about-to-fail && exit 3: ", err), err
    assert "returned a non-zero code: 3" in err
    assert "output (last lines):\n    about-to-fail\n" in err

    # BuildKit-only features are refused up front, saying what to install
    book = root / "playbooks" / "job.yml"
    book.write_text(book.read_text().replace("    args:", "    secrets: {tok: {env: HOME}}\n    args:"))
    code, out, err = deploy_cli("build", "-p", str(book), env=no_buildx)
    assert code == 1 and "image.build uses secrets, which need BuildKit" in err and "docker buildx version" in err


def test_build_sample_playbook(ws: docker.DockerClient, deploy_cli: Any) -> None:
    code, out, err = deploy_cli("build", "-p", "playbooks/sample.yml", "--json")
    assert code == 0, err
    result = json.loads(out)
    rev = git(REPO, "rev-parse", "HEAD")[:12]
    assert result["ref"] in (f"sample:{rev}", f"sample:{rev}-dirty")
    assert ws.images.get(result["ref"]).id == result["image_id"]
    assert ws.images.get(result["ref"]).labels["deployer.git_rev"] == result["ref"].split(":")[1]
