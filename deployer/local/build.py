"""Build an image locally, tagged by git revision: through BuildKit (`docker buildx build`, deployer.local.buildx)
when the docker CLI has the buildx plugin, else through the docker SDK's legacy builder (the documented fallback)."""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from deployer.errors import LocalError
from deployer.local import declared
from deployer.local.buildx import BuildxSpec

LOG = logging.getLogger(__name__)

LineSink = Callable[[str], None]
STEP_RE = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[.*\].*)$")  # legacy builder / BuildKit step lines
NOISE_RE = re.compile(r"^( ---> |Removing intermediate container )")  # builder bookkeeping, not output
TAIL_LINES = 15


class BuildSpec(BuildxSpec, Protocol):
    """What a build reads of a playbook's build section (deployer.playbook.model.BuildSpec): what
    BuildKit reads, and the tag and platforms."""

    @property
    def tag(self) -> str | None: ...
    @property
    def platform(self) -> tuple[str, ...]: ...


BUILDKIT, LEGACY = "buildkit", "legacy"  # BuildResult.builder
LEGACY_HINT = ("install the docker buildx plugin (docker-buildx-plugin, or Debian's docker-buildx), which Docker "
               "Desktop and docker-ce ship: `docker buildx version` must work")


@dataclass(frozen=True)
class GitRevision:
    """The commit the build context is at, and whether the context has uncommitted changes."""

    commit: str
    short: str
    dirty: bool

    @property
    def tag(self) -> str:
        return f"{self.short}-dirty" if self.dirty else self.short


@dataclass(frozen=True)
class BuildResult:
    ref: str  # the reference to ship: repo:<git-rev> (or the explicit tag)
    image_id: str
    refs: tuple[str, ...] = ()  # every tag applied, ref first
    revision: GitRevision | None = None
    builder: str = BUILDKIT  # BUILDKIT (docker buildx) or LEGACY (the SDK's legacy builder: no buildx plugin)
    platforms: tuple[str, ...] = ()  # what --platform was given (empty: the workstation's own)


def git_revision(path: str, extra_paths: Iterable[str] = ()) -> GitRevision | None:
    """HEAD of the git work tree holding `path`; dirty when anything under path (or extra_paths) changed."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", path, *args], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "-q", "HEAD")
    if not commit:
        return None
    # Only what goes into the image counts: edits elsewhere in the repo do not make it dirty.
    status = git("status", "--porcelain", "--untracked-files=normal", "--", ".", *extra_paths)
    return GitRevision(commit=commit, short=commit[:12], dirty=bool(status))


def split_ref(ref: str) -> tuple[str, str | None]:
    """('registry:5000/a/b', 'tag') from a reference; the tag is None when absent."""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, None


def image_refs(tag: str, revision: GitRevision | None, image_id: str | None = None) -> tuple[str, ...]:
    """Tags to apply, the one to ship first: repo:<rev>[-dirty] and repo:latest, or an explicit repo:tag."""
    repo, explicit = split_ref(tag)
    if explicit:
        return (tag,) + ((f"{repo}:{revision.tag}",) if revision else ())
    if revision:
        return (f"{repo}:{revision.tag}", f"{repo}:latest")
    # No git: the content id is the only stable name for this exact build.
    short = (image_id or "").removeprefix("sha256:")[:12] or "latest"
    return (f"{repo}:id-{short}", f"{repo}:latest")


def build_labels(revision: GitRevision | None) -> dict[str, str]:
    if revision is None:
        return {}
    return {
        "org.opencontainers.image.revision": revision.commit,
        "deployer.git_rev": revision.tag,
        "deployer.git_dirty": "true" if revision.dirty else "false",
    }


class StreamReader:
    """Consumes the docker build JSON stream: lines to a sink, the image id, errors with context."""

    def __init__(self, on_line: LineSink) -> None:
        self.on_line = on_line
        self.partial = ""
        self.step: str | None = None
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.image_id: str | None = None

    def feed(self, chunk: Mapping[str, Any]) -> None:
        if "errorDetail" in chunk or "error" in chunk:
            self.flush()
            detail = chunk.get("errorDetail") or {}
            raise self.failure(str(detail.get("message") or chunk.get("error") or "unknown error").strip())
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and aux.get("ID"):
            self.image_id = str(aux["ID"])
        if "stream" in chunk:
            text = self.partial + str(chunk["stream"])
            *lines, self.partial = text.split("\n")
            for line in lines:
                self.line(line.rstrip("\r"))
        elif "status" in chunk:  # base image pulls
            prefix = f"{chunk['id']}: " if chunk.get("id") else ""
            self.line(f"{prefix}{chunk['status']} {chunk.get('progress') or ''}".rstrip())

    def line(self, line: str) -> None:
        if STEP_RE.match(line):
            self.step = line
            self.tail.clear()  # the tail shown on failure is the failing step's own output
        elif not NOISE_RE.match(line):
            self.tail.append(line)
        match = re.match(r"^Successfully built ([0-9a-f]{12,64})$", line)
        if match and not self.image_id:
            self.image_id = match.group(1)
        self.on_line(line)

    def flush(self) -> None:
        if self.partial:
            self.line(self.partial)
            self.partial = ""

    def failure(self, message: str) -> LocalError:
        where = f" at {self.step}" if self.step else ""
        output = "\n".join(f"    {line}" for line in self.tail if line.strip())
        text = f"image build failed{where}: {message}"
        if output:
            text += f"\n  output (last lines):\n{output}"
        return LocalError(text, hint="fix the Dockerfile or the build context, then run `deploy build` again")

    def finish(self) -> str:
        self.flush()
        if not self.image_id:
            raise self.failure("the build ended without producing an image")
        return self.image_id


def workstation_arch(client: Any) -> str | None:
    """The local Docker's architecture (`x86_64`, `aarch64`), as `docker info` shows it; None if unknown."""
    from deployer.local.client import translated

    with translated("reading docker info"):
        arch = client.info().get("Architecture")
    return str(arch) if arch else None


def build(spec: BuildSpec, *, on_line: LineSink = lambda _line: None, client: Any = None,
          platforms: tuple[str, ...] | None = None) -> BuildResult:
    """Build spec.context with the local Docker, streaming each output line to on_line. `platforms`: what to
    build for (default: spec.platform; empty: the workstation's own platform)."""
    from deployer.local import buildx
    from deployer.local.client import docker_client, translated

    if not spec.tag:
        raise LocalError("no image name to tag the build with", hint="set image.build.tag or the playbook's name")
    platforms = spec.platform if platforms is None else platforms
    dockerfile = os.path.join(spec.context, spec.dockerfile)
    outside = () if os.path.abspath(dockerfile).startswith(spec.context + os.sep) else (os.path.abspath(dockerfile),)
    revision = git_revision(spec.context, outside)
    client = client or docker_client()
    if buildx.find() is not None:
        image_id = _buildkit(spec, revision, platforms, on_line, client)
        builder = BUILDKIT
    else:
        image_id = _legacy(spec, revision, platforms, on_line, client)
        builder = LEGACY
    refs = image_refs(spec.tag, revision, image_id)
    with translated(f"tagging {refs[0]}"):
        for ref in refs:
            ref_repo, ref_tag = split_ref(ref)
            client.api.tag(image_id, ref_repo, ref_tag, force=True)
    return BuildResult(ref=refs[0], image_id=image_id, refs=refs, revision=revision, builder=builder,
                       platforms=platforms)


def _buildkit(spec: BuildSpec, revision: GitRevision | None, platforms: tuple[str, ...], on_line: LineSink,
              client: Any) -> str:
    """`docker buildx build --load`; the image id as the SDK sees it (so `docker images` shows the same)."""
    from deployer.local import buildx
    from deployer.local.buildlog import BuildLog
    from deployer.local.client import translated

    assert spec.tag
    buildx.preflight(spec, os.environ)
    # Tags known before the build are given to buildx: an untagged result may be garbage-collected at once
    # on the containerd image store. Without git, the id tag is added afterwards.
    tags = tuple(image_refs(spec.tag, revision)) if revision or split_ref(spec.tag)[1] else (
        f"{split_ref(spec.tag)[0]}:latest",)
    log = BuildLog()

    def line(text: str) -> None:
        log.feed(text)
        on_line(text)

    with tempfile.TemporaryDirectory(prefix="deployer-build-") as tmp:
        metadata = os.path.join(tmp, "metadata.json")
        argv = buildx.build_argv(spec, tags=tags, labels=build_labels(revision), platforms=platforms,
                                 metadata_file=metadata)
        LOG.debug("running %s", shlex.join(argv))
        if buildx.run(argv, line) != 0:
            text = log.failure_text()
            hint = "fix the Dockerfile or the build context, then run `deploy build` again"
            if spec.cache_to and "cache export is not supported" in text.lower():
                hint = ("image.build.cache_to: the default (docker) builder exports a cache only on the containerd "
                        "image store; turn that on, or use a docker-container builder "
                        "(docker buildx create --use --driver docker-container)")
            raise LocalError(text, hint=hint)
        _record_bases(metadata)
    with translated(f"reading the built image {tags[0]}",
                    hint="docker buildx and deployer talk to different Docker daemons: check `docker context ls` "
                         "and DOCKER_HOST"):
        return str(client.api.inspect_image(tags[0])["Id"])


def _record_bases(metadata_file: str) -> None:
    """Remember the base images the build declared (deployer.local.declared), for a later ship's origin
    pull. Best effort: without a metadata file or its provenance, a ship knows only pulled bases."""
    try:
        with open(metadata_file, encoding="utf-8") as fh:
            metadata = json.load(fh)
        config = str(metadata.get("containerimage.config.digest") or "") if isinstance(metadata, dict) else ""
        found = declared.materials(metadata) if config.startswith("sha256:") else ()
        if found:
            declared.record(config, found)
    except (OSError, ValueError) as exc:
        LOG.info("cannot record the build's base images: %s", exc)


def _legacy(spec: BuildSpec, revision: GitRevision | None, platforms: tuple[str, ...], on_line: LineSink,
            client: Any) -> str:
    """The docker SDK's legacy builder, used only when there is no buildx plugin: no BuildKit features."""
    from deployer.local.client import translated

    wanted = [name for name, on in (("secrets", spec.secrets), ("ssh", spec.ssh), ("cache_from", spec.cache_from),
                                    ("cache_to", spec.cache_to), ("a multi-platform build", len(platforms) > 1))
              if on]
    if wanted:
        raise LocalError(f"image.build uses {', '.join(wanted)}, which need BuildKit, and the docker CLI has no buildx "
                         "plugin", hint=LEGACY_HINT)
    reader = StreamReader(on_line)
    with translated(f"building {spec.context}", hint="check that the local Docker daemon is running (`docker info`)"):
        stream = client.api.build(
            path=spec.context, dockerfile=spec.dockerfile, buildargs=dict(spec.args) or None,
            target=spec.target, labels=build_labels(revision) or None, rm=True, forcerm=True,
            decode=True, platform=platforms[0] if platforms else None,
        )
        for chunk in stream:
            reader.feed(chunk)
        image_id = reader.finish()
        return str(client.api.inspect_image(image_id)["Id"])
