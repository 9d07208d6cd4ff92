"""Render a playbook for one host: inventory vars into every run value, strictly, then validate."""
from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from typing import Any

from deployer.errors import PlaybookError
from deployer.playbook import checks, templating
from deployer.playbook.model import Playbook, RenderedPlaybook
from deployer.runs.spec import RunSpec

# Unset when rendered empty, so `gpus: "{{ 'all' if 'gpus' in group_names else '' }}"` means "no GPUs".
_OPTIONAL = ("gpus", "env_file", "shm_size", "ipc", "memory", "restart", "workdir", "name", "place", "network",
             "on_node_failure")


def host_context(host: Any) -> tuple[str, dict[str, Any]]:
    """(host name, variables) from a deployer Host, or from a plain mapping of variables."""
    if hasattr(host, "vars") and hasattr(host, "name"):
        variables = dict(host.vars)
        variables.setdefault("inventory_hostname", host.name)
        variables.setdefault("group_names", list(getattr(host, "groups", ())))
        return str(host.name), variables
    variables = dict(host)
    return str(variables.get("inventory_hostname", "?")), variables


def render(playbook: Playbook, host_vars: Any) -> RenderedPlaybook:
    """The playbook rendered for one host (a Host, or a mapping of its inventory variables).

    Precedence: the host's inventory variables override the playbook's `vars` (which act as
    defaults), so one playbook serves hosts whose data lives in different places.
    """
    host, base = host_context(host_vars)
    context, failed = templating.resolve_vars(playbook.vars, base)

    def text(path: str, value: str) -> str:
        try:
            return templating.render(value, context, failed)
        except templating.TemplateProblem as exc:
            hint = None
            if exc.missing:
                names = ", ".join(exc.missing)
                hint = f"define {names} for {host} in the inventory (host or group vars) or in the playbook's vars"
            raise PlaybookError(f"{exc} for host {host}", file=playbook.file, line=playbook.line(path),
                                key_path=path, hint=hint) from exc

    run = playbook.run
    if run is not None:
        run = _render_run(playbook, run, text, host)
    rendered_vars = {k: v for k, v in context.items() if k in playbook.vars and k not in failed}
    return RenderedPlaybook(playbook=playbook, host=host, run=run, vars=rendered_vars)


def _render_run(playbook: Playbook, run: RunSpec, text: Any, host: str) -> RunSpec:
    values: dict[str, Any] = {}
    for key in _OPTIONAL:
        raw = getattr(run, key)
        values[key] = (text(f"run.{key}", raw).strip() or None) if raw is not None else None
    values["volumes"] = tuple(text(f"run.volumes[{i}]", v).strip() for i, v in enumerate(run.volumes))
    values["env"] = tuple((k, text(f"run.env.{k}", v)) for k, v in run.env)
    values["labels"] = tuple((k, text(f"run.labels.{k}", v)) for k, v in run.labels)
    if playbook.command_line is not None:
        line = text("run.command", playbook.command_line)
        try:
            values["command"] = tuple(shlex.split(line))
        except ValueError as exc:
            raise _error(playbook, "run.command", f"cannot split {line!r} into arguments ({exc}) for host {host}",
                         hint="check the quotes, or write the command as a list") from exc
    else:
        values["command"] = tuple(text(f"run.command[{i}]", a) for i, a in enumerate(run.command))
    if values["env_file"]:
        path = os.path.join(playbook.base_dir, os.path.expanduser(values["env_file"]))
        if not os.path.isfile(path):
            raise _error(playbook, "run.env_file", f"no such file: {path} (host {host})",
                         hint="env_file is a file on this machine, relative to the playbook's folder")
        values["env_file"] = path
    rendered = dataclasses.replace(run, **values)
    for path, message, hint in checks.run_problems(rendered):
        raise _error(playbook, path, f"{message} (host {host})", hint=hint)
    return rendered


def _error(playbook: Playbook, path: str, message: str, hint: str | None = None) -> PlaybookError:
    return PlaybookError(message, file=playbook.file, line=playbook.line(path), key_path=path, hint=hint)


def run_spec(
    rendered: RenderedPlaybook,
    image: str,
    *,
    labels: Mapping[str, str] | None = None,
    replace: bool | None = None,
) -> RunSpec:
    """The RunSpec to start on this host: the rendered `run:` section with the shipped image, the
    playbook's name as the default container name, and the deployer.playbook label."""
    run = rendered.run or RunSpec()
    all_labels = dict(run.labels)
    all_labels["deployer.playbook"] = rendered.name
    all_labels.update(labels or {})
    return dataclasses.replace(
        run,
        image=image,
        name=run.name or rendered.name,
        labels=tuple(all_labels.items()),
        replace=run.replace if replace is None else replace,
    )
