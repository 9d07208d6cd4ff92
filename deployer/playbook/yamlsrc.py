"""YAML parsed into nodes that remember their line, so validation errors can point at file:line."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from deployer.errors import PlaybookError


@dataclass(frozen=True)
class Source:
    """Where a playbook came from, for error messages."""

    file: str

    def error(self, node: yaml.Node | None, key_path: str, message: str, *, hint: str | None = None) -> PlaybookError:
        return PlaybookError(message, file=self.file, line=line_of(node), key_path=key_path or None, hint=hint)


def line_of(node: yaml.Node | None) -> int | None:
    """1-based line of a node (PyYAML marks are 0-based)."""
    return node.start_mark.line + 1 if node is not None and node.start_mark is not None else None


def compose(text: str, source: Source) -> yaml.Node | None:
    """Parse one YAML document into a node tree; merge keys (<<) are flattened, duplicates refused."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_tree(loader, root, source, "")
        return root
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise PlaybookError(f"invalid YAML: {problem}", file=source.file, line=line) from exc
    except yaml.YAMLError as exc:
        raise PlaybookError(f"invalid YAML: {exc}", file=source.file) from exc
    finally:
        loader.dispose()


def _check_tree(loader: yaml.SafeLoader, node: yaml.Node, source: Source, path: str) -> None:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        seen: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            child = join(path, str(key))
            if key in seen:
                raise source.error(
                    key_node, child, f"duplicate key (first defined on line {line_of(seen[key])})",
                    hint="YAML keeps only the last value; remove one of them",
                )
            seen[key] = key_node
            _check_tree(loader, value_node, source, child)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_tree(loader, item, source, f"{path}[{i}]")


def scalar(node: yaml.Node) -> Any:
    """The Python value of a scalar node (int, float, bool, None or str), as YAML 1.1 types it."""
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
