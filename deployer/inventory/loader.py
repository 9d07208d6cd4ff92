"""Load an inventory file or directory into an Inventory, merging vars the way Ansible does.

Precedence, lowest first (Ansible's defaults): `all` vars in the inventory < other groups'
inventory vars < group_vars/all < group_vars/<group> < the host's inventory vars <
host_vars/<host>. Groups are applied by (depth, ansible_group_priority, name).
"""
from __future__ import annotations

import copy
import os
import re
from typing import Any

from deployer.errors import InventoryError
from deployer.inventory import ini_source, varsfiles, yaml_source, yamlload
from deployer.inventory.builder import ALL, InventoryBuilder
from deployer.inventory.host import Host
from deployer.inventory.model import Group, Inventory

# Names of play and task keywords: ansible-inventory warns about a variable so named
# (ansible.vars.reserved.get_reserved_names() of ansible-core 2.19).
RESERVED_NAMES = frozenset("""
action always any_errors_fatal args async async_val become become_exe become_flags become_method become_user
block changed_when check_mode collections connection cycler debugger delay delegate_facts delegate_to dict diff
environment fact_path failed_when force_handlers gather_facts gather_timeout handlers hosts ignore_errors
ignore_unreachable joiner lipsum local_action lookup loop loop_control loop_with max_fail_percentage
module_defaults name namespace no_log notify now omit order poll port post_tasks pre_tasks q query range
register remote_user rescue retries roles run_once serial strategy tags tasks throttle timeout undef until
vars vars_files vars_prompt when with_
""".split())
# Tried in order when neither -i nor $DEPLOY_INVENTORY is given (relative to the cwd).
DEFAULT_CANDIDATES = ("inventories/hosts.yml", "inventories/hosts.yaml", "inventories/hosts.ini", "inventories/hosts")
YAML_EXTENSIONS = (".yml", ".yaml", ".json")
# Files Ansible skips inside an inventory directory.
_IGNORED = re.compile(
    r"^\.|^host_vars$|^group_vars$|^vars_plugins$|"
    + "|".join(re.escape(e) + "$" for e in (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry"))
)


def resolve_path(path: str | None) -> str:
    """The inventory to use: `path` (from -i or $DEPLOY_INVENTORY), else the first default that exists."""
    hint = "pass -i PATH (an inventory file or directory) or set DEPLOY_INVENTORY=PATH"
    if path:
        full = os.path.expanduser(path)
        if not os.path.exists(full):
            raise InventoryError(f"inventory {path} does not exist", hint=hint)
        return full
    for candidate in DEFAULT_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    raise InventoryError(
        "no inventory given and no default found (tried " + ", ".join(DEFAULT_CANDIDATES) + f" in {os.getcwd()})",
        hint=hint,
    )


def load(path: str) -> Inventory:
    """Load an Ansible inventory (YAML or INI file, or a directory of them) with its group_vars/host_vars."""
    if not os.path.exists(path):
        raise InventoryError(f"inventory {path} does not exist", hint="pass -i PATH or set DEPLOY_INVENTORY")
    builder = InventoryBuilder()
    warnings: list[str] = []
    if os.path.isdir(path):
        base = path
        files = _dir_files(path)
        parsed = 0
        for f in files:
            # As ansible-inventory does by default: a file no format can read is skipped with a
            # warning, and the rest of the directory is read.
            try:
                builder, found = _parse_file(f, os.path.relpath(f, path), builder)
            except InventoryError as exc:
                at = f"{exc.file or f}:{exc.line}" if exc.line else (exc.file or f)
                warnings.append(f"{at}: skipped this file, no inventory format reads it ({exc.reason}); "
                                "the rest of the directory is read, as Ansible does")
                continue
            warnings.extend(found)
            parsed += 1
        if not parsed:
            raise InventoryError(
                f"inventory directory {path} holds no inventory file that can be read"
                + (f" ({len(files)} skipped)" if files else ""),
                file=path,
            )
    else:
        base = os.path.dirname(path) or "."
        builder, found = _parse_file(path, os.path.basename(path), builder)
        warnings.extend(found)
    builder.finish()
    return _assemble(path, base, builder, warnings)


def _dir_files(path: str) -> list[str]:
    out: list[str] = []
    for name in sorted(os.listdir(path)):
        if _IGNORED.search(name):
            continue
        full = os.path.join(path, name)
        out.extend(_dir_files(full) if os.path.isdir(full) else [full])
    return out


def _parse_file(path: str, label: str, builder: InventoryBuilder) -> tuple[InventoryBuilder, list[str]]:
    """Read one file the way Ansible's plugin chain does: YAML first (by extension), then INI.

    Each attempt works on a copy of `builder`, so a failed attempt leaves nothing behind; returns
    the builder of the attempt that worked and its warnings. When none works: the InventoryError
    of the format the file was meant to be in.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InventoryError(f"cannot read inventory file: {exc.strerror or exc}", file=path) from exc
    ext = os.path.splitext(path)[1].lower()
    if ext == ".toml":
        raise InventoryError("TOML inventories are not supported; use YAML or INI", file=path)
    yaml_failure: InventoryError | None = None
    yaml_meant = ext in YAML_EXTENSIONS
    ini_hint = False  # say why INI failed too: only when the file is valid YAML but no inventory
    if ext in ("",) + YAML_EXTENSIONS:
        trial = copy.deepcopy(builder)
        warnings: list[str] = []
        try:
            try:
                text = yamlload.decode(raw, path)
            except InventoryError as exc:
                # Not UTF-8, so no YAML; but say so (not what INI makes of it) if it is YAML otherwise.
                raise yaml_source.NotYaml(exc, mapping=_is_yaml(raw.decode("utf-8", "replace"), path),
                                          parsed=False) from None
            yaml_source.parse(text, path, label, trial, warnings)
        except yaml_source.NotYaml as exc:
            yaml_failure = exc.error
            yaml_meant = yaml_meant or exc.mapping
            ini_hint = exc.parsed and not exc.mapping
        except InventoryError as exc:
            yaml_failure, yaml_meant = exc, True
        else:
            return trial, [*warnings, *trial.warnings[len(builder.warnings):]]
    trial = copy.deepcopy(builder)
    try:
        # Like Ansible's ini plugin: bytes that are not UTF-8 are kept (a Latin-1 comment is fine).
        ini_source.parse(raw.decode("utf-8", errors="surrogateescape"), path, label, trial)
    except InventoryError as exc:
        # Without an extension, the format that read further is the one the file was written in.
        if yaml_failure is not None and not yaml_meant and (yaml_failure.line or 0) > (exc.line or 0):
            yaml_meant, ini_hint = True, False
        if yaml_failure is not None and yaml_meant:
            if ini_hint and not yaml_failure.hint:
                at = f"line {exc.line}: " if exc.line else ""
                yaml_failure.hint = f"read as INI (as Ansible tries next) it fails too: {at}{exc.reason}"
            raise yaml_failure from None
        raise exc from None
    return trial, trial.warnings[len(builder.warnings):]


def _is_yaml(text: str, path: str) -> bool:
    try:
        yaml_source.compose(text, path)
    except yaml_source.NotYaml as exc:
        return exc.mapping
    return True


def _assemble(source: str, base: str, b: InventoryBuilder, warnings: list[str]) -> Inventory:
    depths = b.depths()

    def ordered(names: set[str]) -> list[str]:
        return sorted(names, key=lambda g: (depths[g], b.groups[g].priority, g))

    file_cache: dict[tuple[str, str], list[varsfiles.VarsFile]] = {}

    def files(subdir: str, name: str) -> list[varsfiles.VarsFile]:
        if (subdir, name) not in file_cache:
            file_cache[subdir, name] = varsfiles.load(base, subdir, name)
            for vf in file_cache[subdir, name]:
                warnings.extend(vf.warnings)
        return file_cache[subdir, name]

    hosts: dict[str, Host] = {}
    reserved_seen: set[str] = set()
    for name, h in b.hosts.items():
        groups: set[str] = set()
        for g in h.groups:
            groups.add(g)
            groups |= b.ancestors(g)
        groups.discard(ALL)
        merged: dict[str, Any] = {}
        origins: dict[str, str] = {}
        _apply(merged, origins, b.groups[ALL].vars, b.groups[ALL].origins)
        for g in ordered(groups):
            _apply(merged, origins, b.groups[g].vars, b.groups[g].origins)
        for g in [ALL, *ordered(groups)]:
            for vf in files("group_vars", g):
                _apply(merged, origins, vf.vars, vf.label)
        _apply(merged, origins, h.vars, h.origins)
        for vf in files("host_vars", name):
            _apply(merged, origins, vf.vars, vf.label)
        visible = tuple(sorted(groups - {"ungrouped"}))
        hosts[name] = Host(name, merged, visible, origins=origins)
        for key in sorted(RESERVED_NAMES.intersection(merged)):
            if key not in reserved_seen:
                reserved_seen.add(key)
                warnings.append(f"{origins[key]}: variable {key!r} has a name Ansible reserves for plays and tasks "
                                "(Ansible warns about it too)")

    groups_out = {
        name: Group(
            name=name,
            vars=dict(g.vars),
            hosts=tuple(g.hosts),
            children=tuple(g.children),
            parents=tuple(g.parents),
            depth=depths[name],
            priority=g.priority,
        )
        for name, g in b.groups.items()
    }
    return Inventory(source=source, hosts=hosts, groups=groups_out, warnings=tuple(warnings))


def _apply(merged: dict[str, Any], origins: dict[str, str], values: dict[str, Any], where: dict[str, str] | str) -> None:
    """Top-level keys replace earlier ones (Ansible's default hash_behaviour=replace)."""
    for k, v in values.items():
        merged[k] = v
        origins[k] = where if isinstance(where, str) else where[k]
