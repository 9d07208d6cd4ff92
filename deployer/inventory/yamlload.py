"""YAML as Ansible's loader reads it: PyYAML's safe types plus `!unsafe` and `!vault`, last duplicate wins.

One loader for inventory files and group_vars/host_vars files. Every failure is an InventoryError
with file:line; duplicate keys are warnings (the last value is kept, as Ansible does). The line of
each mapping key is recorded so that the walk over the data can still say where a problem is.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.resolver import Resolver

from deployer.errors import InventoryError
from deployer.inventory.values import Encrypted, Unsafe


@dataclass
class Document:
    """A loaded YAML document, where each mapping's keys are (`line_of`), and the loader's warnings."""

    data: Any
    lines: dict[int, dict[Any, int]] = field(default_factory=dict)
    value_lines: dict[int, dict[Any, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # The mappings whose ids key `lines`: kept alive so that no id is reused.
    _keep: list[Any] = field(default_factory=list, repr=False)

    def line_of(self, mapping: Any, key: Any = None, value: bool = False) -> int | None:
        """The line of `key` in `mapping` (of its value with value=True); without a key, the mapping's first."""
        lines = (self.value_lines if value else self.lines).get(id(mapping))
        if not lines:
            return None
        if key is None:
            return min(lines.values())
        return lines.get(key)


try:  # libyaml's parser makes the events 5x faster than PyYAML's own; the nodes are composed here
    from yaml._yaml import CParser as _Parser
except ImportError:  # PyYAML built without libyaml
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _PyParser.__init__(self)


class _Loader(Composer, SafeConstructor, Resolver, _Parser):
    def __init__(self, text: str, file: str) -> None:
        _Parser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.file = file
        self.doc = Document(None)
        self._unsafe = 0
        self._node_lines: dict[int, tuple[dict[Any, int], dict[Any, int]]] = {}
        self._open_anchors: list[str] = []

    def compose_node(self, parent: Node | None, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open_anchors:
                # A value that contains itself: Ansible refuses it, and it has no JSON form.
                raise InventoryError(f"recursive alias *{event.anchor}: it refers to a value that contains it",
                                     file=self.file, line=event.start_mark.line + 1)
        return super().compose_node(parent, index)

    def compose_sequence_node(self, anchor: str | None) -> Any:
        return self._composing(anchor, super().compose_sequence_node)

    def compose_mapping_node(self, anchor: str | None) -> Any:
        return self._composing(anchor, super().compose_mapping_node)

    def _composing(self, anchor: str | None, compose: Any) -> Any:
        if anchor is None:
            return compose(anchor)
        self._open_anchors.append(anchor)
        try:
            return compose(anchor)
        finally:
            self._open_anchors.pop()

    def error(self, message: str, node: Node | None) -> InventoryError:
        return InventoryError(message, file=self.file, line=node.start_mark.line + 1 if node is not None else None)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (InventoryError, yaml.YAMLError):
            raise
        except Exception as exc:  # PyYAML's own constructors fail with AttributeError, ValueError, ...
            kind = node.tag.rsplit(":", 1)[-1]
            raise self.error(f"malformed YAML: {node.value!r} is not a valid !!{kind} value ({exc})", node) from exc

    def construct_yaml_timestamp(self, node: Any, values: Any = None) -> Any:
        if not self.timestamp_regexp.match(str(node.value)):
            raise self.error(
                f"malformed YAML: {node.value!r} is not a valid !!timestamp value (e.g. 2001-12-14 or 2001-12-14T21:59:43Z)",
                node,
            )
        return super().construct_yaml_timestamp(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep)
        # Like Ansible: keys seen twice (after merge keys are flattened) warn, and the last value wins.
        seen: set[Any] = set()
        lines: dict[Any, int] = {}
        value_lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                self.doc.warnings.append(
                    f"{self.file}:{key_node.start_mark.line + 1}: duplicate key {key!r}: "
                    "using the last value only (as Ansible does)"
                )
            seen.add(key)
            lines[key] = key_node.start_mark.line + 1
            value_lines[key] = value_node.start_mark.line + 1
        self._node_lines[id(node)] = (lines, value_lines)
        return mapping

    def construct_yaml_map(self, node: MappingNode) -> Any:
        data: dict[Any, Any] = {}
        yield data
        data.update(self.construct_mapping(node))
        self.doc.lines[id(data)], self.doc.value_lines[id(data)] = self._node_lines.pop(id(node), ({}, {}))
        self.doc._keep.append(data)

    def construct_yaml_str(self, node: Any) -> str:
        value = super().construct_yaml_str(node)
        return Unsafe(value) if self._unsafe else value

    def construct_yaml_set(self, node: MappingNode) -> Any:
        # Ansible lists a set as a list (in no set order); keep the order written.
        data: list[Any] = []
        yield data
        data.extend(self.construct_mapping(node))

    def construct_yaml_omap(self, node: Node) -> Any:
        data: list[Any] = []
        yield data
        data.extend([k, v] for k, v in _drained(super().construct_yaml_omap(node)))

    def construct_yaml_pairs(self, node: Node) -> Any:
        data: list[Any] = []
        yield data
        data.extend([k, v] for k, v in _drained(super().construct_yaml_pairs(node)))

    def construct_yaml_binary(self, node: Node) -> Any:
        # Ansible 2.19 loads it but cannot list it (ansible-inventory --list fails): refuse it here.
        raise self.error("binary (!!binary) values are not supported in an inventory", node)

    def _retagged(self, node: Node) -> Any:
        again = copy.copy(node)
        again.tag = self.resolve(type(node), node.value, (True, False))
        return self.construct_object(again, deep=True)

    def construct_unsafe(self, node: Node) -> Any:
        self._unsafe += 1
        try:
            return self._retagged(node)
        finally:
            self._unsafe -= 1

    def construct_vault(self, node: Node) -> Any:
        text = self._retagged(node)
        if not isinstance(text, str) or isinstance(node, (MappingNode, SequenceNode)):
            raise self.error(f"the {node.tag!r} tag requires a string value (the vault ciphertext)", node)
        return Encrypted(text)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_yaml_str)
_Loader.add_constructor("tag:yaml.org,2002:set", _Loader.construct_yaml_set)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
_Loader.add_constructor("tag:yaml.org,2002:omap", _Loader.construct_yaml_omap)
_Loader.add_constructor("tag:yaml.org,2002:pairs", _Loader.construct_yaml_pairs)
_Loader.add_constructor("tag:yaml.org,2002:binary", _Loader.construct_yaml_binary)
_Loader.add_constructor("!unsafe", _Loader.construct_unsafe)
_Loader.add_constructor("!vault", _Loader.construct_vault)
_Loader.add_constructor("!vault-encrypted", _Loader.construct_vault)


def _drained(constructor: Any) -> Any:
    """The object a two-step PyYAML constructor yields, after running its second step (which fills it)."""
    made = next(constructor)
    for _ in constructor:
        pass
    return made


def decode(raw: bytes, file: str) -> str:
    """UTF-8 text; an InventoryError naming the line of the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InventoryError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded", file=file, line=line,
            hint="save the file as UTF-8",
        ) from None


def _unacceptable(exc: yaml.reader.ReaderError, text: str, file: str) -> InventoryError:
    line = text[: exc.position].count("\n") + 1 if isinstance(exc.position, int) else None
    char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
    return InventoryError(f"malformed YAML: unacceptable character {char}: {exc.reason}", file=file, line=line)


def load(text: str, file: str) -> Document:
    """Load one YAML document; InventoryError (with file:line) when it is not valid YAML."""
    try:
        loader = _Loader(text, file)  # PyYAML's reader refuses control characters here already
    except yaml.reader.ReaderError as exc:
        raise _unacceptable(exc, text, file) from exc
    try:
        loader.doc.data = loader.get_single_data()
    except yaml.reader.ReaderError as exc:  # libyaml's, as it reads
        raise _unacceptable(exc, text, file) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc)
        if exc.context and exc.problem:
            problem = f"{exc.context}, {exc.problem}"
        raise InventoryError(f"malformed YAML: {problem}", file=file, line=mark.line + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise InventoryError(f"malformed YAML: {exc}", file=file) from exc
    finally:
        loader.dispose()
    # Nested mappings are built first: show the warnings in the order of the file.
    loader.doc.warnings.sort(key=lambda w: int(w[len(file) + 1 :].split(":", 1)[0]))
    return loader.doc
