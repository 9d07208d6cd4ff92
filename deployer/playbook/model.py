"""The playbook as validated data: frozen dataclasses, template strings not yet rendered per host."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.runs.spec import OPTION_KEYS, RunSpec

# Keys of each section, in documentation order; validation refuses anything else.
TOP_KEYS = ("name", "hosts", "image", "ship", "run", "vars")
IMAGE_KEYS = ("build", "ref")
BUILD_KEYS = ("context", "dockerfile", "args", "target", "tag", "platform", "secrets", "ssh", "cache_from", "cache_to")
SECRET_SOURCES = ("file", "env")
SHIP_KEYS = ("via", "registry", "level", "origin_pull", "codec")
RUN_KEYS = OPTION_KEYS  # the fields of RunSpec, the one run-options model


@dataclass(frozen=True)
class BuildSecret:
    """A build secret (`RUN --mount=type=secret,id=ID`): read from a local file or environment variable at
    build time by BuildKit, never written into a layer. Only the file's path or the variable's name is kept."""

    id: str
    source: str  # "file" (value: an absolute path) or "env" (value: a variable name)
    value: str


@dataclass(frozen=True)
class BuildSpec:
    """How to build the image locally. Paths are absolute (resolved against the playbook's folder)."""

    context: str
    dockerfile: str = "Dockerfile"
    args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    tag: str | None = None  # repository (optionally :tag); the loader defaults it to the playbook name
    platform: tuple[str, ...] = ()  # os/arch[/variant]; empty: the selected hosts' architecture
    secrets: tuple[BuildSecret, ...] = ()
    ssh: bool = False  # forward the local ssh-agent (RUN --mount=type=ssh)
    cache_from: tuple[str, ...] = ()  # buildx --cache-from specs (type=registry,ref=... for a plain ref)
    cache_to: tuple[str, ...] = ()  # buildx --cache-to specs


@dataclass(frozen=True)
class ImageSpec:
    """Exactly one of build / ref is set."""

    build: BuildSpec | None = None
    ref: str | None = None


@dataclass(frozen=True)
class ShipSpec:
    via: str | None = None  # None: the inventory's deploy_via, else auto
    registry: str | None = None  # None: the inventory's deploy_registry
    level: int | None = None  # zstd level; None: the shipper's default
    origin_pull: str | None = None  # auto | never; None: the inventory's deploy_origin_pull, else auto
    codec: str | None = None  # zstd | gzip (gzip: an image any Docker pulls); None: zstd where the hosts read it


@dataclass(frozen=True)
class Playbook:
    """A loaded, validated playbook. `lines` maps key paths (run.volumes[0]) to 1-based lines."""

    file: str
    name: str
    hosts: str | None = None
    image: ImageSpec = field(default_factory=ImageSpec)
    ship: ShipSpec = field(default_factory=ShipSpec)
    run: RunSpec | None = None  # the `run:` section, image empty; command empty if command_line is set
    command_line: str | None = None  # run.command written as one string: rendered per host, then split
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    base_dir: str = ""  # absolute folder of the file: relative paths in the playbook start here

    def line(self, key_path: str) -> int | None:
        """Line of a key path, or of its closest ancestor that has one."""
        return line_for(self.lines, key_path)


def line_for(lines: Mapping[str, int], key_path: str) -> int | None:
    """Line of a key path, or of its closest ancestor that has one."""
    path = key_path
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


@dataclass(frozen=True)
class RenderedPlaybook:
    """A playbook rendered for one host: every template resolved, every value validated."""

    playbook: Playbook
    host: str
    run: RunSpec | None  # image still empty: the shipped ref is known only after the build
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.playbook.name

    @property
    def command(self) -> tuple[str, ...]:
        """The rendered command as argv (empty: the image's default CMD)."""
        return self.run.command if self.run else ()
