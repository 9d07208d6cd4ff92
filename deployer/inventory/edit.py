"""`inventory add` / `remove`: edit a YAML inventory in place, keeping comments, order and layout.

Uses ruamel.yaml round-trip; the edited text is re-parsed before it replaces the file
(atomically), so a failed edit never leaves a broken inventory behind.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from deployer.errors import InventoryError
from deployer.inventory import ini_source, loader, yaml_source
from deployer.inventory.builder import InventoryBuilder
from deployer.inventory.hostnames import RangeError, expand, has_range, split_port


@dataclass(frozen=True)
class NewHost:
    """What `inventory add` writes: the host, its connection vars and its groups."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    groups: tuple[str, ...] = ()
    vars: tuple[tuple[str, Any], ...] = ()

    def host_vars(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ansible_host": self.address}
        if self.port:
            out["ansible_port"] = self.port
        if self.user:
            out["ansible_user"] = self.user
        out.update(self.vars)
        return out


def parse_var(text: str) -> tuple[str, Any]:
    """'K=V' -> (K, V typed as YAML types it: 5 -> int, true -> bool, text -> str)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key.strip()):
        raise InventoryError(f"--var {text!r}: expected KEY=VALUE with KEY a variable name")
    try:
        typed = pyyaml.safe_load(value) if value.strip() else ""
    except pyyaml.YAMLError:
        typed = value
    if isinstance(typed, (dict, list)) or typed is None:
        typed = value
    return key.strip(), typed


def editable_file(source: str) -> str:
    """The single YAML file behind `source`; InventoryError for INI or a directory of several files."""
    path = source
    if os.path.isdir(source):
        files = loader._dir_files(source)
        if len(files) != 1:
            raise InventoryError(
                f"inventory {source} is a directory of {len(files)} files; cannot tell which one to edit",
                hint="pass the file to edit with -i, e.g. -i " + (files[0] if files else os.path.join(source, "hosts.yml")),
            )
        path = files[0]
    ext = os.path.splitext(path)[1].lower()
    text = _read(path)
    # As the loader reads it: YAML when it is a YAML inventory (or blank), else INI, whatever the extension.
    blank = all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())
    is_yaml = ext != ".ini" and blank
    if ext != ".ini" and not blank:
        try:
            yaml_source.compose(text, path)
            is_yaml = True
        except yaml_source.NotYaml:
            is_yaml = not _reads_as_ini(text, path)  # else broken YAML: _load_rt says where
    if not is_yaml:
        raise InventoryError(
            f"{path} is an INI inventory; deployer edits only YAML inventories (comments and layout kept)",
            hint="edit the INI file by hand, or convert it: ansible-inventory -i FILE --list -y",
        )
    return path


def _reads_as_ini(text: str, path: str) -> bool:
    try:
        ini_source.parse(text, path, os.path.basename(path), InventoryBuilder())
    except InventoryError:
        return False
    return True


def add(source: str, new: NewHost) -> str:
    """Add a host to the YAML inventory at `source`; returns the file edited."""
    inventory = loader.load(source)
    if new.name in inventory.hosts:
        raise InventoryError(
            f"host {new.name} already exists in {source}",
            hint=f"remove it first (deploy inventory remove {new.name}) or edit its vars in the file",
        )
    path = editable_file(source)
    rt, data = _load_rt(path)
    targets = list(new.groups) or ["all"]
    for i, group in enumerate(targets):
        hosts = _hosts_map(_group_map(data, group, create=True))
        hosts[new.name] = CommentedMap(new.host_vars()) if i == 0 else None
    _write(path, rt, data)
    return path


def remove(source: str, name: str) -> tuple[str, list[str]]:
    """Remove a host from every group of the YAML inventory; returns (file, groups it was removed from)."""
    inventory = loader.load(source)
    inventory.host(name)  # InventoryError with suggestions if unknown
    path = editable_file(source)
    rt, data = _load_rt(path)
    removed: list[str] = []
    for group, gmap in _all_groups(data):
        hosts = gmap.get("hosts")
        if isinstance(hosts, str) and split_port(hosts)[0] == name:
            del gmap["hosts"]
            removed.append(group)
            continue
        if not isinstance(hosts, dict):
            continue
        for key in list(hosts):
            entry = split_port(str(key))[0]
            if entry == name:
                del hosts[key]
                removed.append(group)
            elif has_range(entry) and name in _safe_expand(entry):
                line = hosts.lc.key(key)[0] + 1 if hasattr(hosts, "lc") else None
                raise InventoryError(
                    f"host {name} comes from the range {key!r} in group {group}; a range cannot lose one host",
                    file=path,
                    line=line,
                    hint="split the range by hand, e.g. gpu[01:03] -> gpu01, gpu03",
                )
        if not hosts and "hosts" in gmap:
            del gmap["hosts"]
    if not removed:
        raise InventoryError(f"host {name} is not listed in {path}", hint="it may come from another inventory file")
    _write(path, rt, data)
    return path, removed


def _safe_expand(entry: str) -> list[str]:
    try:
        return expand(entry)
    except RangeError:
        return []


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise InventoryError(f"cannot read inventory file: {exc}", file=path) from exc


def _load_rt(path: str) -> tuple[YAML, CommentedMap]:
    text = _read(path)
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    indent = _indent_of(text)
    rt.indent(mapping=indent, sequence=indent + 2 if _offset_lists(text) else indent, offset=2 if _offset_lists(text) else 0)
    try:
        data = rt.load(text)
    except YAMLError as exc:
        raise InventoryError(f"malformed YAML: {exc}", file=path) from exc
    if data is None:
        # An empty inventory (nothing, or only comments) is valid: start its mapping, keep its comments.
        data = CommentedMap()
        comments = [line.lstrip()[1:].strip() for line in text.splitlines() if line.lstrip().startswith("#")]
        if comments:
            data.yaml_set_start_comment("\n".join(comments))
    if not isinstance(data, CommentedMap):
        raise InventoryError("a YAML inventory must be a mapping of group names", file=path, line=1)
    return rt, data


def _indent_of(text: str) -> int:
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if stripped and not stripped.startswith("#") and len(stripped) < len(line):
            return len(line) - len(stripped)
    return 2


def _offset_lists(text: str) -> bool:
    """True when block lists are indented under their key (`key:\\n  - a`), the common Ansible style."""
    prev_indent = None
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if stripped.startswith("- ") and prev_indent is not None:
            return indent > prev_indent
        prev_indent = indent
    return True


def _all_groups(data: CommentedMap) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []

    def walk(mapping: Any) -> None:
        for name, gmap in mapping.items():
            if isinstance(gmap, dict):
                out.append((str(name), gmap))
                children = gmap.get("children")
                if isinstance(children, dict):
                    walk(children)

    walk(data)
    return out


def _group_map(data: CommentedMap, group: str, create: bool) -> CommentedMap:
    """The mapping of `group` in the file (first occurrence), created under `all.children` if missing."""

    def find(mapping: Any) -> Any:
        for name in list(mapping):
            value = mapping[name]
            if str(name) == group:
                if not isinstance(value, dict):
                    mapping[name] = value = CommentedMap()
                return value
            if isinstance(value, dict) and isinstance(value.get("children"), dict):
                found = find(value["children"])
                if found is not None:
                    return found
        return None

    found = find(data)
    if found is not None:
        return found
    if group == "all":
        data["all"] = CommentedMap()
        return data["all"]
    parent = data
    if "all" in data and data["all"] is None:  # `all:` alone
        data["all"] = CommentedMap()
    if isinstance(data.get("all"), dict):
        all_map = data["all"]
        if not isinstance(all_map.get("children"), dict):
            all_map["children"] = CommentedMap()
        parent = all_map["children"]
    parent[group] = CommentedMap()
    return parent[group]


def _hosts_map(gmap: CommentedMap) -> CommentedMap:
    hosts = gmap.get("hosts")
    if isinstance(hosts, str):
        hosts = CommentedMap({hosts: None})
        gmap["hosts"] = hosts
    if not isinstance(hosts, dict):
        gmap["hosts"] = hosts = CommentedMap()
    return hosts


def _write(path: str, rt: YAML, data: CommentedMap) -> None:
    buf = io.StringIO()
    rt.dump(data, buf)
    text = buf.getvalue()
    # Re-parse what we are about to write: an edit must never produce an unloadable inventory.
    yaml_source.parse(text, path, os.path.basename(path), InventoryBuilder(), [])
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".deploy-edit.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise InventoryError(f"cannot write inventory file: {exc}", file=path) from exc
