"""The BuildKit keys of `image.build`: platform, secrets, ssh, cache_from, cache_to (validation, pure)."""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import yaml

from deployer.playbook.model import SECRET_SOURCES, BuildSecret
from deployer.playbook.yamlsrc import join
from deployer.refs import has_registry

if TYPE_CHECKING:
    from deployer.playbook.validate import Validator

Static = Callable[[str, str | None], str | None]  # render a host-independent value with the playbook's vars
PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _strings(v: Validator, node: yaml.Node, path: str, static: Static) -> tuple[str, ...]:
    """One string or a list of strings, each rendered with the playbook's vars."""
    if isinstance(node, yaml.SequenceNode):
        raw = v.string_list(node, path)
        return tuple(static(f"{path}[{i}]", text) or "" for i, text in enumerate(raw))
    return (static(path, v.string(node, path)) or "",)


def platforms(v: Validator, node: yaml.Node, static: Static) -> tuple[str, ...]:
    """`platform: linux/arm64`, `linux/amd64,linux/arm64` or a list; os/arch[/variant] each."""
    path = "image.build.platform"
    out: list[str] = []
    for text in _strings(v, node, path, static):
        for item in (part.strip() for part in text.split(",")):
            if not PLATFORM_RE.match(item):
                v.fail(node, path, f"{item!r} is not a platform: write os/arch[/variant], e.g. linux/amd64 or linux/arm64")
            if item not in out:
                out.append(item)
    if not out:
        v.fail(node, path, "is empty: give a platform such as linux/amd64, or leave the key out to build for the hosts")
    return tuple(out)


def secrets(v: Validator, node: yaml.Node, base_dir: str, static: Static) -> tuple[BuildSecret, ...]:
    """`secrets: {ID: {file: PATH}}` or `{ID: {env: NAME}}`: only where the value lives is kept."""
    out: list[BuildSecret] = []
    for sid, spec in v.mapping(node, "image.build.secrets", None).items():
        path = f"image.build.secrets.{sid}"
        if not SECRET_ID_RE.match(sid):
            v.fail(spec, path, f"invalid secret id {sid!r}: use letters, digits, '_', '.' or '-'")
        keys = v.mapping(spec, path, SECRET_SOURCES)
        if len(keys) != 1:
            v.fail(spec, path, "give exactly one of 'file' (a local file) or 'env' (an environment variable)",
                   hint=f"e.g. {sid}: {{env: {sid.upper().replace('-', '_').replace('.', '_')}}}")
        source, value_node = next(iter(keys.items()))
        value = static(join(path, source), v.string(value_node, join(path, source))) or ""
        if source == "env" and not ENV_NAME_RE.match(value):
            v.fail(value_node, join(path, source), f"{value!r} is not an environment variable name")
        if source == "file":
            if not value:
                v.fail(value_node, join(path, source), "is empty: give the path of the file that holds the secret")
            value = os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
        out.append(BuildSecret(id=sid, source=source, value=value))
    return tuple(out)


def ssh(v: Validator, nodes: dict[str, yaml.Node]) -> bool:
    return v.boolean(nodes, "ssh", "image.build")


def cache_specs(v: Validator, node: yaml.Node, key: str, registry: str | None, static: Static) -> tuple[str, ...]:
    """cache_from / cache_to: buildx specs (`type=...,ref=...`) as written, or registry refs. A ref without a
    registry host goes to the playbook's ship.registry; cache_to exports every layer (mode=max)."""
    path = f"image.build.{key}"
    out: list[str] = []
    for text in _strings(v, node, path, static):
        text = text.strip()
        if "=" in text:
            out.append(text)  # a buildx cache spec (type=registry|local|inline|gha|s3...,...), as buildx reads it
            continue
        if not text:
            v.fail(node, path, "is empty: give a registry reference such as registry.example:5000/team/job:cache")
        if not has_registry(text):
            if not registry:
                v.fail(node, path, f"{text!r} names no registry, and the playbook has no ship.registry",
                       hint="write registry.example:5000/REPO:TAG, set ship.registry, or give a buildx spec (type=...)")
            text = f"{registry.rstrip('/')}/{text}"
        out.append(f"type=registry,ref={text}" + (",mode=max" if key == "cache_to" else ""))
    return tuple(out)
