"""Image reference arithmetic (pure): split name and tag, re-home a name on a registry."""
from __future__ import annotations

from deployer.errors import SpecError


def split_ref(ref: str) -> tuple[str, str]:
    """('repo/name', 'tag') of a reference; the tag defaults to latest. Digests are refused."""
    if not ref or ref.strip() != ref:
        raise SpecError(f"invalid image reference {ref!r}")
    if "@" in ref or ref.startswith("sha256:"):
        raise SpecError(f"{ref}: ship a tagged name (repo:tag), not a digest or image id",
                        hint="tag it locally first: docker tag IMAGE name:tag")
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    else:
        name, tag = ref, "latest"
    return name, tag


def has_registry(name: str) -> bool:
    """Whether a name begins with a registry host (docker's rule: its first part has '.' or ':' or
    is localhost)."""
    first, sep, _rest = name.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def strip_domain(name: str) -> str:
    """Drop a registry domain (see has_registry)."""
    return name.partition("/")[2] if has_registry(name) else name


def qualified(tag: str) -> str:
    """A `name:tag` as the containerd image store names it (`app:1` -> `docker.io/library/app:1`)."""
    if has_registry(tag):
        return tag
    return f"docker.io/{tag}" if "/" in tag else f"docker.io/library/{tag}"


def normalize(ref: str) -> str:
    """A reference with its tag made explicit (`trainer` -> `trainer:latest`)."""
    name, tag = split_ref(ref)
    return f"{name}:{tag}"


def registry_ref(registry: str, ref: str) -> str:
    """The name REF gets on REGISTRY: `10.0.0.5:5000/team/trainer:v3` for `ghcr.io/team/trainer:v3`."""
    name, tag = split_ref(ref)
    return f"{registry.rstrip('/')}/{strip_domain(name)}:{tag}"
