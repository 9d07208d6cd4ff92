"""Turn a YAML node tree into a Playbook, refusing unknown keys and wrong types with file:line: key.path."""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import yaml

from deployer.codec import CODECS
from deployer.errors import PlaybookError
from deployer.inventory.host import ORIGIN_MODES, VIA_CHOICES
from deployer.playbook import buildopts, checks, templating
from deployer.playbook.model import (
    BUILD_KEYS,
    IMAGE_KEYS,
    RUN_KEYS,
    SHIP_KEYS,
    TOP_KEYS,
    BuildSpec,
    ImageSpec,
    Playbook,
    ShipSpec,
    line_for,
)
from deployer.playbook.yamlsrc import Source, join, line_of, scalar
from deployer.runs.spec import RunSpec

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,127}$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_KEY_RE = re.compile(r"^[^=\s]+$")


class Validator:
    """Reads typed values out of nodes; every error names the file, line and key path."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.lines: dict[str, int] = {}

    def fail(self, node: yaml.Node | None, path: str, message: str, hint: str | None = None) -> NoReturn:
        raise self.source.error(node, path, message, hint=hint)

    def mark(self, node: yaml.Node, path: str) -> None:
        line = line_of(node)
        if line is not None and path:
            self.lines.setdefault(path, line)

    def mapping(self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None) -> dict[str, yaml.Node]:
        """A mapping's values by key; with `allowed`, unknown keys are errors with a suggestion."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"must be a mapping (key: value), got {_kind(node)}")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.fail(key_node, path, f"keys must be strings, got {_kind(key_node)}")
            child = join(path, key)
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else None
                self.fail(key_node, child, f"unknown key '{key}' (allowed: {', '.join(allowed)})", hint)
            self.mark(key_node, child)
            out[key] = value_node
        return out

    def string(self, node: yaml.Node, path: str, *, numbers: bool = False) -> str:
        """A string; with `numbers`, ints and floats are accepted and turned into strings."""
        value = scalar(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
            self.fail(node, path, f"must be a string, got {_kind(node)}")
        if not isinstance(value, str):
            if not numbers:
                self.fail(node, path, f"must be a string, got {_kind(node)}", hint="quote the value")
            value = str(value)
        self.template(node, path, value)
        return value

    def optional_string(self, nodes: dict[str, yaml.Node], key: str, path: str, *, numbers: bool = False) -> str | None:
        node = nodes.get(key)
        if node is None or _is_null(node):
            return None
        return self.string(node, join(path, key), numbers=numbers)

    def boolean(self, nodes: dict[str, yaml.Node], key: str, path: str) -> bool:
        node = nodes.get(key)
        if node is None or _is_null(node):
            return False
        value = scalar(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, bool):
            self.fail(node, join(path, key), f"must be true or false, got {_kind(node)}")
        return bool(value)

    def string_list(self, node: yaml.Node, path: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, f"must be a list of strings, got {_kind(node)}")
        items = []
        for i, item in enumerate(node.value):
            self.mark(item, f"{path}[{i}]")
            items.append(self.string(item, f"{path}[{i}]", numbers=True))
        return tuple(items)

    def pairs(self, node: yaml.Node, path: str, key_re: re.Pattern[str]) -> tuple[tuple[str, str], ...]:
        """KEY: value mapping, or a list of "KEY=value" strings (as docker compose accepts)."""
        out: list[tuple[str, str]] = []
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                text = self.string(item, f"{path}[{i}]")
                key, eq, text_value = text.partition("=")
                if not eq or not key_re.match(key):
                    self.fail(item, f"{path}[{i}]", f"must look like KEY=value, got {text!r}")
                self.mark(item, f"{path}.{key}")
                out.append((key, text_value))
            return tuple(out)
        for key, value_node in self.mapping(node, path, None).items():
            child = join(path, key)
            if not key_re.match(key):
                self.fail(value_node, child, f"invalid name {key!r}")
            value = scalar(value_node) if isinstance(value_node, yaml.ScalarNode) else None
            if value is None:
                self.fail(value_node, child, f"must have a string value, got {_kind(value_node)}",
                          hint="write an empty value as ''")
            if isinstance(value, bool):
                value = "true" if value else "false"  # YAML yes/true both mean the word "true" here
            text = str(value)
            self.template(value_node, child, text)
            out.append((key, text))
        return tuple(out)

    def template(self, node: yaml.Node, path: str, text: str) -> None:
        problem = templating.syntax_error(text)
        if problem:
            self.fail(node, path, f"template error: {problem}")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and scalar(node) is None


def _kind(node: yaml.Node | None) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node is None:
        return "nothing"
    value = scalar(node)
    if value is None:
        return "an empty value"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(type(value), type(value).__name__) + f" ({node.value!r})"


def build_playbook(root: yaml.Node | None, source: Source) -> Playbook:
    """Validate the whole document and return the Playbook."""
    v = Validator(source)
    if root is None or _is_null(root):
        v.fail(root, "", "the playbook is empty", hint="start from `deploy init` or see playbooks/sample.yml")
    if isinstance(root, yaml.SequenceNode):
        v.fail(root, "", "a playbook is one mapping (name, hosts, image, ship, run, vars), not a list",
               hint="this looks like an Ansible playbook; deployer playbooks are documented in the README")
    top = v.mapping(root, "", TOP_KEYS)
    if "name" not in top:
        v.fail(root, "name", "missing (every playbook needs a name; it names the image and the container)")
    vars_ = _vars(v, top.get("vars"))
    name = v.string(top["name"], "name")
    name = _render_static(v, top["name"], "name", name, vars_)
    if not NAME_RE.match(name):
        v.fail(top["name"], "name", f"{name!r} is not a valid name: use 2 to 128 lowercase letters, digits, '.', '_' or '-', "
               "starting with a letter or digit")
    hosts = _hosts(v, top.get("hosts"), vars_)
    if "image" not in top:
        v.fail(root, "image", "missing: give image.build (build locally) or image.ref (an existing image)")
    ship = _ship(v, top.get("ship"), vars_)
    image = _image(v, top["image"], source, vars_, name, ship.registry)
    run, command_line = _run(v, top["run"]) if "run" in top and not _is_null(top["run"]) else (None, None)
    return Playbook(file=source.file, name=name, hosts=hosts, image=image, ship=ship, run=run,
                    command_line=command_line, vars=vars_, lines=dict(v.lines), base_dir=os.path.dirname(os.path.abspath(source.file)))


def _vars(v: Validator, node: yaml.Node | None) -> dict[str, Any]:
    if node is None or _is_null(node):
        return {}
    out: dict[str, Any] = {}
    for key, value_node in v.mapping(node, "vars", None).items():
        if not VAR_RE.match(key):
            v.fail(value_node, f"vars.{key}", "variable names are letters, digits and '_' (not starting with a digit)")
        value = yaml.constructor.SafeConstructor().construct_object(value_node, deep=True)
        for text in templating.strings_in(value):
            v.template(value_node, f"vars.{key}", text)
        out[key] = value
    try:
        templating.resolve_vars(out, {})
    except templating.TemplateProblem as exc:
        v.fail(node, "vars", str(exc))
    return out


def _render_static(v: Validator, node: yaml.Node, path: str, text: str, vars_: dict[str, Any]) -> str:
    """Render a host-independent value (name, hosts, image, ship) with the playbook's vars only."""
    try:
        return templating.render_static(text, vars_)
    except templating.TemplateProblem as exc:
        v.fail(node, path, f"{exc} (this value is the same for every host, so only the playbook's vars can be used here)")


def _hosts(v: Validator, node: yaml.Node | None, vars_: dict[str, Any]) -> str | None:
    if node is None or _is_null(node):
        return None
    if isinstance(node, yaml.SequenceNode):
        parts = [_render_static(v, n, f"hosts[{i}]", v.string(n, f"hosts[{i}]"), vars_) for i, n in enumerate(node.value)]
        if not parts:
            v.fail(node, "hosts", "the list is empty")
        return ":".join(parts)  # Ansible's union of patterns
    return _render_static(v, node, "hosts", v.string(node, "hosts"), vars_)


def _image(v: Validator, node: yaml.Node, source: Source, vars_: dict[str, Any], name: str,
           registry: str | None) -> ImageSpec:
    nodes = v.mapping(node, "image", IMAGE_KEYS)
    if ("build" in nodes) == ("ref" in nodes):
        v.fail(node, "image", "give exactly one of 'build' (build locally) or 'ref' (an existing image)")
    static: Callable[[str, str | None], str | None] = (
        lambda path, text: None if text is None else _render_static(v, node, path, text, vars_))
    if "ref" in nodes:
        return ImageSpec(ref=static("image.ref", v.string(nodes["ref"], "image.ref")))
    bnode = nodes["build"]
    if isinstance(bnode, yaml.ScalarNode) and isinstance(scalar(bnode), str):
        b: dict[str, yaml.Node] = {"context": bnode}  # `build: ./dir`, as in docker compose
    else:
        b = v.mapping(bnode, "image.build", BUILD_KEYS)
    base = os.path.dirname(os.path.abspath(source.file))
    context = os.path.normpath(os.path.join(base, static("image.build.context", v.optional_string(b, "context", "image.build")) or "."))
    if not os.path.isdir(context):
        v.fail(b.get("context", bnode), "image.build.context", f"no such directory: {context}",
               hint="relative paths are resolved against the playbook's folder")
    dockerfile = static("image.build.dockerfile", v.optional_string(b, "dockerfile", "image.build")) or "Dockerfile"
    if not os.path.isfile(os.path.join(context, dockerfile)):
        v.fail(b.get("dockerfile", bnode), "image.build.dockerfile",
               f"no such file: {os.path.join(context, dockerfile)}", hint="the dockerfile path is relative to the context")
    args = v.pairs(b["args"], "image.build.args", VAR_RE) if "args" in b else ()
    args = tuple((k, static(f"image.build.args.{k}", val) or "") for k, val in args)
    tag = static("image.build.tag", v.optional_string(b, "tag", "image.build"))
    if tag is not None:
        problem = checks.image_ref_problem(tag)
        if problem:
            v.fail(b["tag"], "image.build.tag", problem)
    target = static("image.build.target", v.optional_string(b, "target", "image.build"))
    given = {k: n for k, n in b.items() if not _is_null(n)}
    return ImageSpec(build=BuildSpec(
        context=context, dockerfile=dockerfile, args=args, target=target, tag=tag or name,
        platform=buildopts.platforms(v, given["platform"], static) if "platform" in given else (),
        secrets=buildopts.secrets(v, given["secrets"], base, static) if "secrets" in given else (),
        ssh=buildopts.ssh(v, b),
        cache_from=buildopts.cache_specs(v, given["cache_from"], "cache_from", registry, static) if "cache_from" in given else (),
        cache_to=buildopts.cache_specs(v, given["cache_to"], "cache_to", registry, static) if "cache_to" in given else (),
    ))


def _ship(v: Validator, node: yaml.Node | None, vars_: dict[str, Any]) -> ShipSpec:
    if node is None or _is_null(node):
        return ShipSpec()
    nodes = v.mapping(node, "ship", SHIP_KEYS)
    via = _static_choice(v, nodes, "via", VIA_CHOICES, vars_)
    registry = v.optional_string(nodes, "registry", "ship")
    if registry is not None:
        registry = _render_static(v, nodes["registry"], "ship.registry", registry, vars_)
    level = None
    if "level" in nodes and not _is_null(nodes["level"]):
        level = scalar(nodes["level"]) if isinstance(nodes["level"], yaml.ScalarNode) else None
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 19:
            v.fail(nodes["level"], "ship.level", f"must be a zstd level from 1 to 19, got {_kind(nodes['level'])}")
    origin_pull = _static_choice(v, nodes, "origin_pull", ORIGIN_MODES, vars_)
    codec = _static_choice(v, nodes, "codec", CODECS, vars_,
                           hint="gzip: the registry route pushes an image any Docker pulls (Docker 20.10 too)")
    return ShipSpec(via=via, registry=registry, level=level, origin_pull=origin_pull, codec=codec)


def _static_choice(v: Validator, nodes: dict[str, yaml.Node], key: str, choices: Sequence[str],
                   vars_: dict[str, Any], hint: str | None = None) -> str | None:
    """ship.KEY, rendered with the playbook's vars, as one of CHOICES (None when absent); a value
    close to one of them is named in the error's hint, else HINT."""
    value = v.optional_string(nodes, key, "ship")
    if value is None:
        return None
    value = _render_static(v, nodes[key], f"ship.{key}", value, vars_)
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        v.fail(nodes[key], f"ship.{key}", f"must be one of {', '.join(choices)}, got {value!r}",
               hint=f"did you mean '{close[0]}'?" if close else hint)
    return value


def _optional_int(v: Validator, nodes: dict[str, yaml.Node], key: str) -> int | None:
    """run.KEY as a whole number (run.nodes, run.master_port), None when absent."""
    node = nodes.get(key)
    if node is None or _is_null(node):
        return None
    value = scalar(node) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, int):
        v.fail(node, f"run.{key}", f"must be a whole number, got {_kind(node)}")
    return value


def _run(v: Validator, node: yaml.Node) -> tuple[RunSpec, str | None]:
    """The `run:` section (image left empty), and run.command when it is one string (split per host)."""
    nodes = v.mapping(node, "run", RUN_KEYS)
    command: tuple[str, ...] = ()
    line = None
    if "command" in nodes and not _is_null(nodes["command"]):
        cnode = nodes["command"]
        if isinstance(cnode, yaml.SequenceNode):
            command = v.string_list(cnode, "run.command")
        else:
            line = v.string(cnode, "run.command")
    opts = RunSpec(
        command=command,
        gpus=v.optional_string(nodes, "gpus", "run", numbers=True),
        volumes=v.string_list(nodes["volumes"], "run.volumes") if "volumes" in nodes and not _is_null(nodes["volumes"]) else (),
        env=v.pairs(nodes["env"], "run.env", ENV_KEY_RE) if "env" in nodes and not _is_null(nodes["env"]) else (),
        env_file=v.optional_string(nodes, "env_file", "run"),
        shm_size=v.optional_string(nodes, "shm_size", "run", numbers=True),
        ipc=v.optional_string(nodes, "ipc", "run"),
        memory=v.optional_string(nodes, "memory", "run", numbers=True),
        restart=v.optional_string(nodes, "restart", "run"),
        workdir=v.optional_string(nodes, "workdir", "run"),
        name=v.optional_string(nodes, "name", "run"),
        labels=v.pairs(nodes["labels"], "run.labels", ENV_KEY_RE) if "labels" in nodes and not _is_null(nodes["labels"]) else (),
        mkdirs=v.boolean(nodes, "mkdirs", "run"),
        replace=v.boolean(nodes, "replace", "run"),
        place=v.optional_string(nodes, "place", "run"),
        network=v.optional_string(nodes, "network", "run"),
        nodes=_optional_int(v, nodes, "nodes"),
        master_port=_optional_int(v, nodes, "master_port"),
        on_node_failure=v.optional_string(nodes, "on_node_failure", "run"),
    )
    # Values without templates are checked now; templated ones when rendered for each host.
    for path, message, hint in checks.run_problems(opts, only_static=True):
        raise PlaybookError(message, file=v.source.file, line=line_for(v.lines, path), key_path=path, hint=hint)
    return opts, line
