"""BuildKit features through `deploy ship -p`, on the testbed: a Dockerfile with a cache mount, two secret mounts
(an environment variable and a file) and heredocs builds, ships and runs; neither secret's value is in any layer
(docker save, on the workstation and on the host), in deploy's output (with -v), in the image's history or in
BuildKit's build records; a rebuild after a requirements change reuses the cache mount."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import zstandard

from tests.conftest import Testbed, _deploy_argv

HOST = "gpu02"
DOCKERFILE = """\
FROM deployer-testbed/busybox:latest
ARG TOKEN_SHA
ARG NETRC_SHA
COPY requirements.txt /tmp/requirements.txt
# a pip-like install: a wheel is downloaded only when the cache mount lacks it
RUN --mount=type=cache,id={name}-wheels,target=/wheels <<EOT
set -e
mkdir -p /opt/pkgs
while read -r pkg; do
  [ -n "$pkg" ] || continue
  if [ -f "/wheels/$pkg" ]; then echo "reused $pkg"; else echo "downloading $pkg"; echo "wheel $pkg" > "/wheels/$pkg"; fi
  cp "/wheels/$pkg" "/opt/pkgs/$pkg"
done < /tmp/requirements.txt
EOT
RUN --mount=type=secret,id=hf_token,required=true --mount=type=secret,id=netrc,required=true \\
    echo "$TOKEN_SHA  /run/secrets/hf_token" | sha256sum -c -s \\
    && echo "$NETRC_SHA  /run/secrets/netrc" | sha256sum -c -s && echo secrets-checked > /secrets-checked
COPY <<EOT /app/hello.txt
hello from a heredoc
EOT
CMD ["cat", "/app/hello.txt", "/secrets-checked"]
"""
PLAYBOOK = """\
name: {name}
hosts: {host}
image:
  build:
    context: ../app
    args: {{TOKEN_SHA: "{token_sha}", NETRC_SHA: "{netrc_sha}"}}
    secrets:
      hf_token: {{env: DEPLOYER_TEST_HF_TOKEN}}
      netrc: {{file: ../private/netrc}}
run:
  replace: true
"""


@dataclass
class Project:
    root: Path
    name: str
    token: str
    netrc: str
    env: dict[str, str]

    @property
    def playbook(self) -> Path:
        return self.root / "playbooks" / "job.yml"

    @property
    def secrets(self) -> tuple[bytes, bytes]:
        return self.token.encode(), self.netrc.encode()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def project(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("buildkit")
    name = f"bktest-{uuid.uuid4().hex[:8]}"
    token, netrc = f"hf_{uuid.uuid4().hex}", f"machine pypi.example login u password pw-{uuid.uuid4().hex}"
    (root / "app").mkdir()
    (root / "app" / "Dockerfile").write_text(DOCKERFILE.format(name=name))
    (root / "app" / "requirements.txt").write_text("torch\nnumpy\n")
    (root / "private").mkdir()
    (root / "private" / "netrc").write_text(netrc)  # outside the build context
    (root / "playbooks").mkdir()
    (root / "playbooks" / "job.yml").write_text(PLAYBOOK.format(
        name=name, host=HOST, token_sha=hashlib.sha256(token.encode()).hexdigest(),
        netrc_sha=hashlib.sha256(netrc.encode()).hexdigest()))
    git(root, "init", "-q")
    git(root, "add", "app", "playbooks")
    git(root, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "job")
    env = {**testbed.env(), "DEPLOYER_TEST_HF_TOKEN": token, "DEPLOYER_CACHE_DIR": str(root / "cache")}
    env.pop("DEPLOY_PLAYBOOK", None)
    yield Project(root, name, token, netrc, env)
    for host in ("ws", HOST):
        client = testbed.docker(host)
        for container in client.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)
        for image in client.images.list(name=name) + client.images.list(name=f"{testbed.registry}/{name}"):
            try:
                client.images.remove(image.id, force=True)
            except docker.errors.NotFound:
                pass


def deploy(project: Project, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run([*_deploy_argv(), *args], capture_output=True, text=True, timeout=300, env=project.env,
                          cwd=str(project.root), check=False)
    return proc.returncode, proc.stdout, proc.stderr


def build_records(env: dict[str, str]) -> dict[str, str]:
    """BuildKit's build history on the workstation: record id -> its `inspect` JSON and its logs."""
    listed = subprocess.run(["docker", "buildx", "history", "ls", "--format", "json"], env=env, capture_output=True,
                            text=True, check=True, timeout=60).stdout
    records = {}
    for line in listed.splitlines():
        ref = json.loads(line)["ref"].rsplit("/", 1)[-1]
        inspect = subprocess.run(["docker", "buildx", "history", "inspect", ref, "--format", "json"], env=env,
                                 capture_output=True, text=True, check=False, timeout=60)
        logs = subprocess.run(["docker", "buildx", "history", "logs", ref], env=env, capture_output=True, text=True,
                              check=False, timeout=60)
        records[ref] = inspect.stdout + inspect.stderr + logs.stdout + logs.stderr
    return records


def saved_contents(client: Any, ref: str) -> Iterator[bytes]:
    """Every file of `docker save REF`, decompressed (the containerd store saves gzip or zstd layer blobs)."""
    data = b"".join(client.images.get(ref).save(named=True))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if not member.isfile():
                continue
            blob = tar.extractfile(member).read()  # type: ignore[union-attr]
            if blob[:2] == b"\x1f\x8b":
                blob = gzip.decompress(blob)
            elif blob[:4] == b"\x28\xb5\x2f\xfd":
                blob = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
            yield blob


def assert_secret_free(project: Project, *texts: str | bytes) -> None:
    for text in texts:
        data = text if isinstance(text, bytes) else text.encode()
        for secret in project.secrets:
            assert secret not in data


@pytest.fixture(scope="module")
def first(testbed: Testbed, project: Project) -> tuple[dict[str, Any], str, dict[str, str]]:
    before = build_records(project.env)
    code, out, err = deploy(project, "-v", "ship", "-p", str(project.playbook), "--json")
    assert code == 0, err
    new = {ref: text for ref, text in build_records(project.env).items() if ref not in before}
    return json.loads(out)[0], out + err, new


def test_cache_mount_secrets_and_heredocs_build_ship_and_run(testbed: Testbed, project: Project,
                                                             first: tuple[dict[str, Any], str, dict[str, str]]) -> None:
    rec, log, _records = first
    assert rec["host"] == HOST and rec["ok"] and rec["verified"] and rec["state"] == "started", rec
    assert "downloading torch" in log and "downloading numpy" in log  # the cache mount started empty
    container = testbed.docker(HOST).containers.get(project.name)
    assert container.wait(timeout=60)["StatusCode"] == 0
    assert container.logs() == b"hello from a heredoc\nsecrets-checked\n"  # both secrets were mounted, as given
    assert testbed.docker("ws").images.get(rec["image"]).id == rec["image_id"]


def test_secrets_are_in_no_layer_log_history_or_build_record(testbed: Testbed, project: Project,
                                                             first: tuple[dict[str, Any], str, dict[str, str]]) -> None:
    rec, log, records = first
    assert_secret_free(project, log)  # deploy -v: the whole BuildKit log and every command line
    assert records, "the build left no BuildKit history record to check"
    assert_secret_free(project, *records.values())
    for host in ("ws", HOST):
        client = testbed.docker(host)
        image = client.images.get(rec["image"])
        assert_secret_free(project, json.dumps(image.attrs), json.dumps(image.history()))
        layers = list(saved_contents(client, rec["image"]))
        assert any(b"hello from a heredoc" in blob for blob in layers)  # the search does see file contents
        assert_secret_free(project, *layers)
    for root, _dirs, files in os.walk(project.root / "cache"):  # deployer's own blob cache
        for name in files:
            assert_secret_free(project, (Path(root) / name).read_bytes())


def test_rebuild_after_a_requirements_change_reuses_the_cache_mount(
        testbed: Testbed, project: Project, first: tuple[dict[str, Any], str, dict[str, str]]) -> None:
    (project.root / "app" / "requirements.txt").write_text("torch\nnumpy\ntransformers\n")
    code, out, err = deploy(project, "-v", "ship", "-p", str(project.playbook), "--json")
    assert code == 0, err
    rec = json.loads(out)[0]
    assert rec["ok"] and rec["image"].endswith("-dirty") and rec["state"] == "started"
    assert "reused torch" in err and "reused numpy" in err and "downloading transformers" in err
    assert "downloading torch" not in err
    assert_secret_free(project, out, err)
    container = testbed.docker(HOST).containers.get(project.name)
    assert container.wait(timeout=60)["StatusCode"] == 0
    image = testbed.docker(HOST).images.get(rec["image"])
    assert image.id == rec["host_image_id"]


def test_a_missing_secret_is_refused_before_building(testbed: Testbed, project: Project) -> None:
    env = {k: v for k, v in project.env.items() if k != "DEPLOYER_TEST_HF_TOKEN"}
    proc = subprocess.run([*_deploy_argv(), "build", "-p", str(project.playbook)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=str(project.root), check=False)
    assert proc.returncode == 1
    assert "error: build secret hf_token: the environment variable DEPLOYER_TEST_HF_TOKEN is not set" in proc.stderr
    assert "[1/" not in proc.stderr  # nothing was built


def test_cache_to_and_from_the_playbooks_registry(testbed: Testbed, tmp_path: Path) -> None:
    """cache_to/cache_from as registry refs (the playbook's ship.registry): exported and imported on the containerd
    image store; the default builder on the classic store cannot export one, and says what to do."""
    name = f"bkcache-{uuid.uuid4().hex[:8]}"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text(f"FROM deployer-testbed/busybox:latest\nRUN echo {name} > /id\n")
    book = tmp_path / "job.yml"
    book.write_text(f"name: {name}\nimage:\n  build:\n    context: app\n    cache_from: {name}:buildcache\n"
                    f"    cache_to: {name}:buildcache\nship: {{registry: '{testbed.registry}'}}\n")
    env = {**testbed.env(), "DEPLOYER_CACHE_DIR": str(tmp_path / "cache")}
    try:
        proc = subprocess.run([*_deploy_argv(), "-v", "build", "-p", str(book)], capture_output=True, text=True,
                              timeout=300, env=env, cwd=str(tmp_path), check=False)
        cache_ref = f"{testbed.registry}/{name}:buildcache"
        assert f"--cache-to type=registry,ref={cache_ref},mode=max" in proc.stderr  # -v logs the argv
        if testbed.ws_store == "overlay2":
            assert proc.returncode == 1
            assert "Cache export is not supported for the docker driver" in proc.stderr
            assert "turn on the containerd image store" in proc.stderr and "docker-container" in proc.stderr
            return
        assert proc.returncode == 0, proc.stderr
        import urllib.request

        request = urllib.request.Request(f"http://{testbed.registry}/v2/{name}/manifests/buildcache", method="HEAD",
                                         # buildx 0.29 writes the cache as an OCI image manifest (image-manifest=true),
                                         # older ones as an index
                                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                            "application/vnd.oci.image.index.v1+json"})
        with urllib.request.urlopen(request, timeout=10) as answer:  # the exported cache is in the registry
            assert answer.status == 200
        again = subprocess.run([*_deploy_argv(), "-v", "build", "-p", str(book)], capture_output=True, text=True,
                               timeout=300, env=env, cwd=str(tmp_path), check=False)
        assert again.returncode == 0, again.stderr
        assert f"importing cache manifest from {cache_ref}" in again.stderr
    finally:
        ws = testbed.docker("ws")
        for image in ws.images.list(name=name):
            ws.images.remove(image.id, force=True)


def test_ssh_forwards_the_agent_only_when_asked(testbed: Testbed, tmp_path: Path) -> None:
    """image.build.ssh: true gives RUN --mount=type=ssh the workstation's ssh-agent (here a fresh, empty one)."""
    name = f"bkssh-{uuid.uuid4().hex[:8]}"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text(
        "FROM deployer-testbed/busybox:latest\n"
        f"RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo agent-at-$SSH_AUTH_SOCK && echo {name} > /id\n")
    book = tmp_path / "job.yml"
    book.write_text(f"name: {name}\nimage:\n  build:\n    context: app\n    ssh: true\n")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    env = {**testbed.env(), "SSH_AUTH_SOCK": str(sock), "DEPLOYER_CACHE_DIR": str(tmp_path / "cache")}
    try:
        for _ in range(100):
            if sock.exists():
                break
            agent.poll()
            time.sleep(0.05)
        proc = subprocess.run([*_deploy_argv(), "-v", "build", "-p", str(book)], capture_output=True, text=True,
                              timeout=300, env=env, cwd=str(tmp_path), check=False)
        assert proc.returncode == 0, proc.stderr
        assert "agent-at-/run/buildkit/ssh_agent.0" in proc.stderr and "--ssh default" in proc.stderr
        # not asked for: the same RUN finds no agent, and the build fails at that step
        book.write_text(f"name: {name}\nimage:\n  build:\n    context: app\n")
        (tmp_path / "app" / "Dockerfile").write_text(
            "FROM deployer-testbed/busybox:latest\nRUN test -S \"${SSH_AUTH_SOCK:-/none}\" && echo agent-found-$((6 * 7))\n")
        proc = subprocess.run([*_deploy_argv(), "-v", "build", "-p", str(book)], capture_output=True, text=True,
                              timeout=300, env=env, cwd=str(tmp_path), check=False)
        assert proc.returncode == 1 and "--ssh" not in proc.stderr and "agent-found-42" not in proc.stderr
        assert "image build failed at [2/2] RUN test -S" in proc.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        ws = testbed.docker("ws")
        for image in ws.images.list(name=name):
            ws.images.remove(image.id, force=True)
