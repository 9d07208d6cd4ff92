"""Playbooks: a deployment described once (build, ship, run, where), validated with file:line: key.path.

    load(path) -> Playbook              parse and validate (PlaybookError, exit code 2)
    find_default(cwd) -> path           the playbook meant when none is given
    render(playbook, host) -> RenderedPlaybook   per-host values with strict undefined variables
    run_spec(rendered, image) -> RunSpec         what `deploy run` would get from its flags
"""
from __future__ import annotations

from deployer.errors import PlaybookError
from deployer.playbook.discover import find_default
from deployer.playbook.model import (
    BuildSpec,
    ImageSpec,
    Playbook,
    RenderedPlaybook,
    ShipSpec,
)
from deployer.playbook.render import render, run_spec
from deployer.playbook.validate import build_playbook
from deployer.playbook.yamlsrc import Source, compose

__all__ = [
    "BuildSpec", "ImageSpec", "Playbook", "RenderedPlaybook", "ShipSpec",
    "find_default", "load", "load_default", "loads", "render", "run_spec",
]


def load(path: str) -> Playbook:
    """Read and validate a playbook file."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise PlaybookError("no such playbook file", file=path, hint="see `deploy init`, or pass -p FILE") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError(f"cannot read the playbook: {exc}", file=path) from exc
    return loads(text, path)


def load_default(path: str | None, cwd: str = ".") -> Playbook:
    """The playbook at `path`, or the default one (find_default) when path is None."""
    return load(path if path else find_default(cwd))


def loads(text: str, file: str = "<playbook>") -> Playbook:
    """Validate playbook text; `file` is used in messages and to resolve relative paths."""
    source = Source(file)
    return build_playbook(compose(text, source), source)
