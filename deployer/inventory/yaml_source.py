"""YAML (and JSON) inventories: `all`/group -> `hosts`, `vars`, `children`, nested.

Walks PyYAML's node tree so every error carries file:line and a key path; values are
constructed by PyYAML's safe constructor, as Ansible's loader would type them.
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from deployer.errors import InventoryError
from deployer.inventory.builder import InventoryBuilder, Where
from deployer.inventory.hostnames import RangeError, expand, split_port

SECTIONS = ("vars", "children", "hosts")


class NotYaml(Exception):
    """The text is not a YAML mapping (so it may be another format)."""

    def __init__(self, error: InventoryError) -> None:
        super().__init__(str(error))
        self.error = error


def compose(text: str, file: str) -> tuple[yaml.SafeLoader, Node]:
    """Parse text to a node tree; NotYaml (wrapping a located InventoryError) when it is not a mapping."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise NotYaml(
            InventoryError(f"malformed YAML: {exc.problem or exc}", file=file, line=mark.line + 1 if mark else None)
        ) from exc
    except yaml.YAMLError as exc:
        raise NotYaml(InventoryError(f"malformed YAML: {exc}", file=file)) from exc
    if node is None or (isinstance(node, MappingNode) and not node.value):
        raise NotYaml(InventoryError("the inventory is empty", file=file, line=1))
    if not isinstance(node, MappingNode):
        raise NotYaml(
            InventoryError(
                "a YAML inventory must be a mapping of group names (usually `all:`)",
                file=file,
                line=node.start_mark.line + 1,
            )
        )
    return loader, node


def parse(text: str, file: str, label: str, builder: InventoryBuilder, warnings: list[str]) -> None:
    """Add the groups, hosts and vars of one YAML inventory file to `builder`."""
    loader, root = compose(text, file)
    parser = _Parser(loader, file, label, builder, warnings)
    for key_node, _ in root.value:
        if _scalar(key_node) == "plugin":
            raise InventoryError(
                "inventory plugin configurations are not supported; use a static inventory",
                file=file,
                line=key_node.start_mark.line + 1,
            )
    for key_node, value_node in root.value:
        parser.group(str(_scalar(key_node)), value_node, "")


def _scalar(node: Node) -> Any:
    return node.value if isinstance(node, ScalarNode) else None


class _Parser:
    def __init__(self, loader: yaml.SafeLoader, file: str, label: str, builder: InventoryBuilder, warnings: list[str]):
        self.loader, self.file, self.label, self.b, self.warnings = loader, file, label, builder, warnings

    def where(self, node: Node, key_path: str) -> Where:
        return Where(self.file, self.label, node.start_mark.line + 1, key_path)

    def value(self, node: Node) -> Any:
        return self.loader.construct_object(node, deep=True)

    def warn(self, node: Node, key_path: str, message: str) -> None:
        self.warnings.append(f"{self.file}:{node.start_mark.line + 1}: {key_path}: {message}")

    def group(self, name: str, node: Node, path: str) -> str:
        key_path = f"{path}.{name}" if path else name
        data = self.value(node) if not isinstance(node, MappingNode) else None
        if not isinstance(node, MappingNode) and data is not None:
            self.warn(node, key_path, "skipped: a group must be a mapping with hosts, vars or children")
            return name
        self.b.add_group(name)
        if not isinstance(node, MappingNode):
            return name
        label = f"inventory group {name} ({self.label})"
        self.loader.flatten_mapping(node)
        for key_node, section in node.value:
            key = str(_scalar(key_node))
            sub_path = f"{key_path}.{key}"
            if key not in SECTIONS:
                self.warn(key_node, sub_path, "skipped: only 'hosts', 'vars' and 'children' are valid in a group")
                continue
            entries = self.section(section, sub_path, key)
            if key == "vars":
                for var_key, var_node, var_key_node in entries:
                    at = Where(self.file, label, var_key_node.start_mark.line + 1, f"{sub_path}.{var_key}")
                    self.b.set_group_var(name, var_key, self.value(var_node) if var_node else None, at)
            elif key == "children":
                for child, child_node, child_key in entries:
                    at = self.where(child_key, f"{sub_path}.{child}")
                    if child_node is None:
                        self.b.add_group(child)
                    else:
                        self.group(child, child_node, sub_path)
                    if child not in self.b.groups:
                        raise at.error(f"child group {child!r} must be a mapping with hosts, vars or children")
                    self.b.add_child(name, child, at)
            else:
                for pattern, host_node, host_key in entries:
                    self.hosts(name, pattern, host_node, self.where(host_key, sub_path), f"{sub_path}.{pattern}")
        return name

    def section(self, node: Node, key_path: str, key: str) -> list[tuple[str, Node | None, Node]]:
        """The (name, node) entries of a hosts/vars/children section; a bare string is one name."""
        if isinstance(node, ScalarNode):
            value = self.value(node)
            if value is None:
                return []
            if isinstance(value, str):
                return [(value, None, node)]
        if not isinstance(node, MappingNode):
            raise self.where(node, key_path).error(
                f"'{key}' must be a mapping, got a {type(self.value(node)).__name__}",
                hint="write `hosts:` / `children:` entries as `name:` keys (with `:` even when empty), not as a `- list`",
            )
        out: list[tuple[str, Node | None, Node]] = []
        self.loader.flatten_mapping(node)
        for k, v in node.value:
            name = self.value(k)
            if key == "hosts" and not isinstance(name, str):
                raise self.where(k, f"{key_path}.{name}").error(
                    f"host name {name!r} must be a string", hint="quote numeric host names"
                )
            out.append((str(name), v, k))
        return out

    def hosts(self, group: str, pattern: str, node: Node | None, where: Where, key_path: str) -> None:
        at = Where(self.file, self.label, where.line, key_path)
        entry, port = split_port(pattern)
        try:
            names = expand(entry)
        except RangeError as exc:
            raise at.error(f"bad host range: {exc}") from None
        data = self.value(node) if node is not None else None
        if not data:
            data = {}
        if not isinstance(data, dict):
            raise at.error(f"host vars must be a mapping, got a {type(data).__name__}")
        label = f"inventory host ({self.label})"
        for name in names:
            self.b.add_host(name, Where(self.file, label, at.line, key_path), group=group, port=port)
            for k, v in data.items():
                self.b.set_host_var(name, str(k), v, Where(self.file, label, at.line, f"{key_path}.{k}"))
