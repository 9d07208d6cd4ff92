"""One room per concern (DESIGN.md, "Layers"): the import graph of deployer's packages, read from
the source with ast, goes one way only; the docker SDK stays in local/; the pure builders in
commands/ load without docker, zstandard or paramiko."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import deployer

PACKAGE = Path(deployer.__file__).parent

# A unit (a subpackage, or a module at the top of deployer/) imports only units of its own layer or
# of a layer below, and no import cycle runs through a layer. Highest first:
LAYERS: tuple[tuple[str, ...], ...] = (
    ("warm",),                     # the `deploy` executable: a warm (pre-imported) process runs the CLI
    ("cli",),                      # click wiring: parse, call one function below, render
    ("oneshot",),                  # build -> ship -> run for a playbook
    ("ship", "playbook"),          # routes and plans; the playbook (renders into runs' RunSpec)
    ("runs",),                     # start, status, logs, stop of containers
    ("facts", "probe", "history", "fleet", "factcache", "layercache", "lock"),  # per-host I/O helpers over transport
    ("transport", "local"),        # the side effects: SSH sessions; the local Docker (docker SDK)
    ("commands",),                 # pure builders of remote argv and parsers of their output
    ("inventory", "chain", "codec", "errors", "platforms", "refs", "sizes", "stores", "tarfmt",
     "lazy", "interrupt", "cachefile", "background"),  # pure data and rules (lazy: a deferred import, no
    # I/O; interrupt: Ctrl-C's flag; cachefile: read and replace a small JSON file whole, the one file
    # I/O down here; background: one call on a thread of its own, its result in a Future)
)
RANK = {unit: len(LAYERS) - i for i, layer in enumerate(LAYERS) for unit in layer}
# Edges the layers alone would allow: local/ works on the workstation only (it knows no hosts and
# opens no SSH session), and transport/ moves bytes without knowing the local Docker.
APART = {("local", "inventory"), ("local", "transport"), ("transport", "local")}
SDK_ROOM = "local"  # the only unit that may import docker
LIGHT = ("commands",)  # importable without these:
HEAVY = {"docker", "zstandard", "paramiko"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str | None:
    """The unit a deployer module belongs to (None for deployer itself and for other packages)."""
    parts = module.split(".")
    if parts[0] != "deployer" or len(parts) < 2:
        return None
    if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file():
        return parts[1]
    return None


def _imports(path: Path, *, type_checking: bool = False) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file, at module level or inside functions;
    the body of `if TYPE_CHECKING:` only when type_checking (annotations are no runtime edge)."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    if not type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test).split(".")[-1] == "TYPE_CHECKING":
                skip.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..ship import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base, node.lineno
            yield from ((f"{base}.{alias.name}", node.lineno) for alias in node.names)


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _edges() -> dict[tuple[str, str], list[str]]:
    """(from unit, to unit) -> where: 'deployer/x/y.py:12' for each import making that edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in _sources():
        src = _unit(_module_name(path))
        for module, line in _imports(path):
            dst = _unit(module)
            if src and dst and src != dst:
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                if where not in edges.setdefault((src, dst), []):
                    edges[(src, dst)].append(where)
    return edges


def _cycle(edges: dict[tuple[str, str], list[str]]) -> list[str] | None:
    """One cycle of units (first unit repeated at the end), or None."""
    graph: dict[str, list[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, []).append(dst)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = 1
        path.append(unit)
        for nxt in sorted(graph.get(unit, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[unit] = 2
        return None

    for unit in sorted(graph):
        if unit not in state and (found := visit(unit)):
            return found
    return None


def test_every_unit_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in _sources()} - {None}
    assert units - set(RANK) == set(), "a new package or top-level module: place it in LAYERS"


def test_no_package_cycles() -> None:
    edges = _edges()
    cycle = _cycle(edges)
    assert cycle is None, "import cycle " + " -> ".join(cycle or []) + ": " + "; ".join(
        f"{a} -> {b} at {', '.join(edges[(a, b)])}" for a, b in zip(cycle or [], (cycle or [])[1:]))


def test_imports_go_down_the_layers() -> None:
    upward = [f"{src} -> {dst} at {', '.join(where)}" for (src, dst), where in sorted(_edges().items())
              if RANK.get(src, 0) < RANK.get(dst, 0)]
    assert upward == [], "imports against the layers (see LAYERS):\n" + "\n".join(upward)


def test_local_and_transport_keep_apart() -> None:
    edges = _edges()
    crossing = [f"{src} -> {dst} at {', '.join(edges[(src, dst)])}" for src, dst in sorted(APART & set(edges))]
    assert crossing == [], "see APART:\n" + "\n".join(crossing)


def test_the_docker_sdk_is_imported_only_in_local() -> None:
    outside = [f"{path.relative_to(PACKAGE.parent)}:{line}" for path in _sources()
               if _unit(_module_name(path)) != SDK_ROOM
               for module, line in _imports(path, type_checking=True) if module.split(".")[0] == "docker"]
    assert outside == [], "the docker SDK outside deployer/local/: " + ", ".join(outside)


def test_the_graph_reader_sees_what_it_must() -> None:
    # the reader itself: function-level imports count, TYPE_CHECKING ones do not
    edges = _edges()
    assert ("cli", "ship") in edges and ("ship", "local") in edges
    assert ("errors", "transport") not in edges  # errors.py imports transport.result for typing only


def test_commands_import_without_docker_zstandard_or_paramiko() -> None:
    modules = sorted(_module_name(p) for unit in LIGHT for p in (PACKAGE / unit).glob("*.py"))
    code = (f"import {', '.join(modules)}; import sys; "
            f"loaded = sorted({set(HEAVY)!r} & {{m.split('.')[0] for m in sys.modules}}); "
            "assert not loaded, loaded")
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "deployer.commands.load" in modules and "deployer.commands.layers" in modules


def test_every_test_module_has_its_own_basename() -> None:
    """The test dirs are not packages: pytest imports each module by its basename, and refuses to
    collect a second module of the same name (which would stop the whole suite)."""
    tests = Path(__file__).resolve().parents[1]
    seen: dict[str, list[str]] = {}
    for path in tests.rglob("test_*.py"):
        seen.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
