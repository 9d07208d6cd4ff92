"""The pure steps of `deploy ship -p`: render for every host, per-host ship settings, per-host RunSpecs.

deployer.oneshot strings them together: render_all -> build -> ship_image(ship_hosts(...)) ->
runs.start(hosts, run_specs(...)) (one RunSpec per host).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deployer.errors import PlaybookError
from deployer.inventory.host import Host
from deployer.playbook.model import Playbook, RenderedPlaybook
from deployer.playbook.render import render, run_spec
from deployer.runs.spec import RunSpec

DEFAULT_LEVEL = 3


def render_all(playbook: Playbook, hosts: Sequence[Host]) -> dict[str, RenderedPlaybook]:
    """The playbook rendered for every host, before anything is built or sent.

    One PlaybookError for the first failing host, naming how many others failed too, so a
    typo in the inventory of host 40 stops the deploy before host 1 is touched.
    """
    rendered: dict[str, RenderedPlaybook] = {}
    errors: list[tuple[str, PlaybookError]] = []
    for host in hosts:
        try:
            rendered[host.name] = render(playbook, host)
        except PlaybookError as exc:
            errors.append((host.name, exc))
    if errors:
        first = errors[0][1]
        if len(errors) > 1:
            others = ", ".join(name for name, _ in errors[1:])
            first.hint = "; ".join(h for h in (first.hint, f"also failing: {others}") if h)
        raise first
    return rendered


def ship_hosts(playbook: Playbook, hosts: Sequence[Host]) -> list[Host]:
    """Hosts with the playbook's ship.via / ship.registry / ship.origin_pull applied over their inventory vars.

    Precedence: `deploy ship --via` > the playbook's ship section > the inventory's deploy_via /
    deploy_registry > auto.
    """
    overrides: dict[str, Any] = {}
    if playbook.ship.via:
        overrides["deploy_via"] = playbook.ship.via
    if playbook.ship.registry:
        overrides["deploy_registry"] = playbook.ship.registry
    if playbook.ship.origin_pull:
        overrides["deploy_origin_pull"] = playbook.ship.origin_pull
    if not overrides:
        return list(hosts)
    return [Host(name=h.name, vars={**h.vars, **overrides}, groups=h.groups) for h in hosts]


def ship_codec(playbook: Playbook, cli_codec: str | None) -> str | None:
    """Layer codec: the --codec flag, else the playbook's ship.codec, else None (zstd where the hosts read it)."""
    return cli_codec or playbook.ship.codec


def ship_level(playbook: Playbook, cli_level: int | None) -> int:
    """zstd level: the --level flag, else the playbook's ship.level, else the default."""
    if cli_level is not None:
        return cli_level
    return playbook.ship.level or DEFAULT_LEVEL


def run_specs(
    rendered: Mapping[str, RenderedPlaybook], image: str, *, git_rev: str | None = None,
) -> dict[str, RunSpec]:
    """host name -> RunSpec for the shipped image (labels carry the playbook and git revision)."""
    labels = {"deployer.git_rev": git_rev} if git_rev else {}
    return {name: run_spec(r, image, labels=labels) for name, r in rendered.items() if r.run is not None}


def group_specs(specs: Mapping[str, Any]) -> list[tuple[Any, list[str]]]:
    """Hosts that get an identical RunSpec, grouped (first-seen order), e.g. to summarise a plan."""
    groups: list[tuple[Any, list[str]]] = []
    for host, spec in specs.items():
        for existing, names in groups:
            if existing == spec:
                names.append(host)
                break
        else:
            groups.append((spec, [host]))
    return groups
