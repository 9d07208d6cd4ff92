"""YAML (and JSON) inventories: `all`/group -> `hosts`, `vars`, `children`, nested.

The walk follows Ansible's yaml inventory plugin step by step (what it skips with a warning,
what it refuses); values come from deployer.inventory.yamlload, which types them as Ansible's
loader does, and every error carries file:line and a key path.
"""
from __future__ import annotations

from typing import Any

from deployer.errors import InventoryError
from deployer.inventory.builder import InventoryBuilder, Where
from deployer.inventory.hostnames import RangeError, expand, split_port
from deployer.inventory.values import var_name
from deployer.inventory.yamlload import Document, load

SECTIONS = ("vars", "children", "hosts")


class NotYaml(Exception):
    """The YAML stage refused the text before reading any group (so it may be another format).

    `mapping` tells whether the text was a YAML mapping all the same (a plugin configuration).
    """

    def __init__(self, error: InventoryError, mapping: bool = False, parsed: bool = True) -> None:
        super().__init__(str(error))
        self.error = error
        self.mapping = mapping
        self.parsed = parsed  # False: not even valid YAML


def compose(text: str, file: str) -> Document:
    """The YAML document of a YAML inventory; NotYaml when the text is no YAML inventory."""
    try:
        doc = load(text, file)
    except InventoryError as exc:
        raise NotYaml(exc, parsed=False) from None
    data = doc.data
    if not data:
        raise NotYaml(InventoryError("the YAML inventory is empty", file=file, line=1))
    if not isinstance(data, dict):
        raise NotYaml(
            InventoryError(
                f"a YAML inventory must be a mapping of group names (usually `all:`), got a {type(data).__name__}",
                file=file,
                line=1,
            )
        )
    if data.get("plugin"):
        plugin = str(data["plugin"])
        # Ansible skips a configuration of a plugin it lacks (a collection's), but runs its built-in ones.
        builtin = plugin.removeprefix("ansible.builtin.") in ("constructed", "generator")
        raise NotYaml(
            InventoryError(
                f"this configures the inventory plugin {plugin!r}; deployer reads only static inventories "
                "(inventory plugin configurations are not supported)"
                + (", so the groups and hosts Ansible's built-in plugin would add are missing" if builtin else ""),
                file=file,
                line=doc.line_of(data, "plugin"),
            ),
            mapping=True,
        )
    return doc


def parse(text: str, file: str, label: str, builder: InventoryBuilder, warnings: list[str]) -> None:
    """Add the groups, hosts and vars of one YAML inventory file to `builder`."""
    doc = compose(text, file)
    warnings.extend(doc.warnings)
    walker = _Walker(doc, file, label, builder, warnings)
    for name, data in doc.data.items():
        walker.group(name, data, doc.data, "")


class _Walker:
    def __init__(self, doc: Document, file: str, label: str, builder: InventoryBuilder, warnings: list[str]):
        self.doc, self.file, self.label, self.b, self.warnings = doc, file, label, builder, warnings

    def where(self, mapping: Any, key: Any, key_path: str, label: str | None = None, value: bool = False) -> Where:
        return Where(self.file, label or self.label, self.doc.line_of(mapping, key, value), key_path)

    def warn(self, mapping: Any, key: Any, key_path: str, message: str) -> None:
        line = self.doc.line_of(mapping, key)
        self.warnings.append(f"{self.file}:{line}: {key_path}: {message}" if line else f"{self.file}: {key_path}: {message}")

    def group(self, name: Any, data: Any, parent: Any, path: str) -> Any:
        key_path = f"{path}.{name}" if path else str(name)
        if not isinstance(data, (dict, type(None))):
            self.warn(parent, name, key_path, "skipped: a group must be a mapping with hosts, vars or children")
            return name
        at = self.where(parent, name, key_path)
        if not isinstance(name, str):
            kind = "a number" if isinstance(name, (int, float)) and not isinstance(name, bool) else f"YAML {name!r}"
            raise at.error(
                f"group name {name!r} is {kind}, not a string; Ansible refuses it too",
                hint=f"quote it: '{name}':",
            )
        if not name:
            raise at.error("empty group name")
        self.b.add_group(name, at)
        if data is None:
            return name
        for section in SECTIONS:
            value = data.get(section)
            if isinstance(value, str):
                data[section] = {value: None}
                self.doc.lines[id(data[section])] = {value: self.doc.line_of(data, section) or 0}
                self.doc._keep.append(data[section])
            elif not isinstance(value, (dict, type(None))):
                raise self.where(data, section, f"{key_path}.{section}", value=True).error(
                    f"'{section}' must be a mapping, got a {type(value).__name__}",
                    hint="write `hosts:` / `children:` entries as `name:` keys (with `:` even when empty), not as a `- list`",
                )
        label = f"inventory group {name} ({self.label})"
        for key, value in data.items():
            sub_path = f"{key_path}.{key}"
            if not isinstance(value, (dict, type(None))):
                self.warn(data, key, sub_path, f"skipped: {key!r} is not a mapping")
                continue
            if value is None:
                continue
            if key == "vars":
                for var, var_value in value.items():
                    at = self.where(value, var, f"{sub_path}.{var}", label)
                    self.b.set_group_var(name, var_name(var), var_value, at)
            elif key == "children":
                for child, child_data in value.items():
                    at = self.where(value, child, f"{sub_path}.{child}")
                    child = self.group(child, child_data, value, sub_path)
                    if child not in self.b.groups:
                        raise at.error(f"child group {child!r} must be a mapping with hosts, vars or children")
                    self.b.add_child(name, child, at)
            elif key == "hosts":
                for pattern, host_data in value.items():
                    self.hosts(name, pattern, host_data, value, f"{sub_path}.{pattern}")
            else:
                self.warn(data, key, sub_path, "skipped: only 'hosts', 'vars' and 'children' are valid in a group")
        return name

    def hosts(self, group: str, pattern: Any, data: Any, parent: Any, key_path: str) -> None:
        at = self.where(parent, pattern, key_path)
        value_at = self.where(parent, pattern, key_path, value=True)
        if not isinstance(pattern, str):
            raise at.error(f"host name {pattern!r} must be a string", hint="quote numeric host names")
        entry, port = split_port(pattern)
        try:
            names = expand(entry)
        except RangeError as exc:
            raise at.error(f"bad host range: {exc}") from None
        if not names:
            self.warn(parent, pattern, key_path, "the range is empty (its begin is past its end): no host added")
        data = data or {}
        if not isinstance(data, dict):
            raise value_at.error(f"host vars must be a mapping, got a {type(data).__name__}")
        label = f"inventory host ({self.label})"
        for name in names:
            self.b.add_host(name, Where(self.file, label, at.line, key_path), group=group, port=port)
            for k, v in data.items():
                self.b.set_host_var(name, var_name(k), v, Where(self.file, label, at.line, f"{key_path}.{k}"))
