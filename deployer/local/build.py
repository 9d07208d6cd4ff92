"""Build an image locally through the docker SDK, streaming every output line, tagged by git revision."""
from __future__ import annotations

import os
import re
import subprocess
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from deployer.errors import LocalError

LineSink = Callable[[str], None]
STEP_RE = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[.*\].*)$")  # legacy builder / BuildKit step lines
NOISE_RE = re.compile(r"^( ---> |Removing intermediate container )")  # builder bookkeeping, not output
TAIL_LINES = 15


class BuildSpec(Protocol):
    """What a build reads of a playbook's build section (deployer.playbook.model.BuildSpec)."""

    @property
    def context(self) -> str: ...
    @property
    def dockerfile(self) -> str: ...
    @property
    def args(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def target(self) -> str | None: ...
    @property
    def tag(self) -> str | None: ...


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


def build(spec: BuildSpec, *, on_line: LineSink = lambda _line: None, client: Any = None) -> BuildResult:
    """Build spec.context with the local Docker, streaming each output line to on_line."""
    from deployer.local.client import docker_client, translated

    if not spec.tag:
        raise LocalError("no image name to tag the build with", hint="set image.build.tag or the playbook's name")
    dockerfile = os.path.join(spec.context, spec.dockerfile)
    outside = () if os.path.abspath(dockerfile).startswith(spec.context + os.sep) else (os.path.abspath(dockerfile),)
    revision = git_revision(spec.context, outside)
    client = client or docker_client()
    reader = StreamReader(on_line)
    with translated(f"building {spec.context}", hint="check that the local Docker daemon is running (`docker info`)"):
        stream = client.api.build(
            path=spec.context, dockerfile=spec.dockerfile, buildargs=dict(spec.args) or None,
            target=spec.target, labels=build_labels(revision) or None, rm=True, forcerm=True,
            decode=True,
        )
        for chunk in stream:
            reader.feed(chunk)
        image_id = reader.finish()
        image_id = str(client.api.inspect_image(image_id)["Id"])
        refs = image_refs(spec.tag, revision, image_id)
        for ref in refs:
            ref_repo, ref_tag = split_ref(ref)
            client.api.tag(image_id, ref_repo, ref_tag, force=True)
    return BuildResult(ref=refs[0], image_id=image_id, refs=refs, revision=revision)
