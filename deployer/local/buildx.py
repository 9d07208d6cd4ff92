"""BuildKit builds through the `docker buildx build` CLI plugin, as users run them.

Why the CLI plugin and not the docker SDK: the SDK speaks only the legacy builder API. BuildKit's
secrets, ssh forwarding and the build context are served by the *client* over a session that only
buildx implements; buildx also honours the user's builder choice (`docker buildx use`), contexts and
credential helpers. deployer passes argv (never a shell string); secrets travel as a file path or an
environment variable name, never as values on the command line.
"""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from deployer.errors import LocalError

LineSink = Callable[[str], None]
VERSION_TIMEOUT_S = 30.0


class Secret(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def source(self) -> str: ...  # "file" | "env"
    @property
    def value(self) -> str: ...  # absolute path, or variable name


class BuildxSpec(Protocol):
    """What a BuildKit build reads of a playbook's build section (deployer.playbook.model.BuildSpec)."""

    @property
    def context(self) -> str: ...
    @property
    def dockerfile(self) -> str: ...
    @property
    def args(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def target(self) -> str | None: ...
    @property
    def secrets(self) -> tuple[Secret, ...]: ...
    @property
    def ssh(self) -> bool: ...
    @property
    def cache_from(self) -> tuple[str, ...]: ...
    @property
    def cache_to(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Buildx:
    """The buildx plugin the local docker CLI runs."""

    version: str  # e.g. "0.29.1"


@cache
def find() -> Buildx | None:
    """The docker CLI's buildx plugin (found under $DOCKER_CONFIG/cli-plugins, ~/.docker/cli-plugins or the
    system's plugin dirs), or None when there is no docker CLI or no plugin."""
    try:
        done = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True,
                              timeout=VERSION_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    m = re.search(r"\bv?(\d+\.\d+\.\d+)", done.stdout)
    return Buildx(m.group(1) if m else "unknown")


def secret_flag(secret: Secret) -> str:
    """`id=ID,src=PATH` or `id=ID,env=NAME`: where buildx reads the value; the value itself never appears."""
    return f"id={secret.id},{'src' if secret.source == 'file' else 'env'}={secret.value}"


def build_argv(spec: BuildxSpec, *, tags: tuple[str, ...], labels: Mapping[str, str],
               platforms: tuple[str, ...], metadata_file: str = "") -> tuple[str, ...]:
    """The exact `docker buildx build` command (pure). `--load` puts the result in the local image store
    whatever the builder; `--provenance=false` keeps the image a plain one, as the legacy builder made it
    (no attestation manifest to ship to every host). METADATA_FILE: where buildx writes the build's
    result and provenance (the base images it used: deployer.local.declared), even so."""
    argv = ["docker", "buildx", "build", "--progress=plain", "--load", "--provenance=false"]
    if metadata_file:
        argv += ["--metadata-file", metadata_file]
    argv += ["--file", os.path.join(spec.context, spec.dockerfile)]
    for key, value in spec.args:
        argv += ["--build-arg", f"{key}={value}"]
    if spec.target:
        argv += ["--target", spec.target]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    for tag in tags:
        argv += ["--tag", tag]
    if platforms:
        argv += ["--platform", ",".join(platforms)]
    for secret in spec.secrets:
        argv += ["--secret", secret_flag(secret)]
    if spec.ssh:
        argv += ["--ssh", "default"]
    for entry in spec.cache_from:
        argv += ["--cache-from", entry]
    for entry in spec.cache_to:
        argv += ["--cache-to", entry]
    return (*argv, spec.context)


def preflight(spec: BuildxSpec, environ: Mapping[str, str]) -> None:
    """Refuse before building when a secret's file or variable, or the ssh agent, is missing."""
    for secret in spec.secrets:
        if secret.source == "file" and not os.path.isfile(secret.value):
            raise LocalError(f"build secret {secret.id}: no such file: {secret.value}",
                             hint="create it, or change image.build.secrets in the playbook (paths are relative "
                                  "to the playbook's folder)")
        if secret.source == "env" and secret.value not in environ:
            raise LocalError(f"build secret {secret.id}: the environment variable {secret.value} is not set",
                             hint=f"export {secret.value}=... before building (its value is read at build time, "
                                  "never stored)")
    if spec.ssh and not environ.get("SSH_AUTH_SOCK"):
        raise LocalError("image.build.ssh forwards your ssh-agent to the build, but SSH_AUTH_SOCK is not set",
                         hint='start an agent and add your key: eval "$(ssh-agent)"; ssh-add')


def run(argv: tuple[str, ...], on_line: LineSink, environ: Mapping[str, str] | None = None) -> int:
    """Run buildx, each output line to on_line as it comes; its exit code. The build is cancelled (buildx
    stops its session on SIGTERM) when deployer is interrupted."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=dict(environ) if environ is not None else None)
    except OSError as exc:
        raise LocalError(f"cannot run docker buildx: {exc}", hint="check that the docker CLI is installed") from exc
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            on_line(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
