"""`deploy inventory` commands (wiring only): list, show, add, remove.

`check` and `trust` are attached to the same group by deployer.cli.check.
`host_option` is the one `--host/-H PATTERN` definition every command uses.
"""
from __future__ import annotations

import json
from typing import Any

import click

from deployer import factcache
from deployer.cli import output
from deployer.cli.app import LazyGroup, cli
from deployer.cli.context import AppContext
from deployer.errors import InventoryError
from deployer.inventory import report

PATTERN_HELP = (
    "Hosts to act on, as an Ansible host pattern: a name, a group, a glob (gpu*), "
    "a:b or a,b (union), a:&b (intersection), a:!b (exclusion), ~regex, group[0] / group[0:2]."
)


def host_pattern_option(*, default: str | None = "all", required: bool = False, note: str = "") -> Any:
    """The one `--host/-H PATTERN` option every command uses (default, requiredness and a note vary)."""
    return click.option(
        "--host", "-H", "pattern", default=None if required else default, required=required,
        show_default=default is not None and not required, metavar="PATTERN",
        help=PATTERN_HELP + (f" {note}" if note else ""),
    )


host_option = host_pattern_option()


def _ctx() -> AppContext:
    return click.get_current_context().find_object(AppContext) or AppContext()


def _warn_inventory(ctx: AppContext) -> None:
    for message in ctx.inventory().warnings:
        output.warn(message)


@cli.group(
    cls=LazyGroup,
    # check and trust live in deployer.cli.check, which loads SSH: only when they are run
    lazy={"check": ("deployer.cli.check",
                    "Probe hosts: SSH, host key, Docker, storage, GPU runtime, GPUs, disk, registry."),
          "trust": ("deployer.cli.check",
                    "Fetch a host's SSH key, show its fingerprint, record it in known_hosts.")},
    epilog="""\b
Examples:
  deploy inventory list                       # every host
  deploy inventory list 'gpus:!airgapped'     # a host pattern
  deploy -i inventories/prod.yml inventory show gpu01
  deploy inventory add gpu05 --address 10.0.0.15 --group gpus --var deploy_via=tarball
  deploy inventory remove gpu05
""",
)
def inventory() -> None:
    """Inspect and edit the Ansible inventory (YAML or INI, file or directory).

    The inventory comes from -i PATH, else $DEPLOY_INVENTORY, else the first of
    inventories/hosts.yml, inventories/hosts.yaml, inventories/hosts.ini,
    inventories/hosts in the current directory.
    """


@inventory.command("list")
@click.argument("pattern_arg", metavar="[PATTERN]", required=False)
@host_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of {name, address, port, user, groups, vars}.")
def list_cmd(pattern_arg: str | None, pattern: str, as_json: bool) -> None:
    """List hosts with address, user, groups, transfer route, GPUs and last check.

    PATTERN (or --host) selects hosts; the default is all. GPUs and the last
    check come from the most recent `deploy inventory check`.

    \b
    Examples:
      deploy inventory list
      deploy inventory list gpus --json
      deploy inventory list 'gpu*:&connected'
    """
    ctx = _ctx()
    wanted = pattern_arg or pattern
    # An empty inventory lists nothing (as ansible-inventory does) instead of failing the pattern 'all'.
    hosts = [] if wanted == "all" and not ctx.inventory().hosts else ctx.select(wanted)
    _warn_inventory(ctx)
    for message in report.password_warnings(hosts) + report.connection_warnings(hosts):
        output.warn(message)
    if as_json:
        output.emit_json([report.host_json(h) for h in hosts])
        return
    facts = factcache.load()
    output.table(
        ["NAME", "ADDRESS", "USER", "GROUPS", "VIA", "GPUS", "LAST CHECK"],
        [
            [
                h.name,
                report.address_cell(h),
                report.shown(h, "user") or "",
                ",".join(h.groups),
                h.via,
                report.gpus_cell(facts.get(h.machine)),
                report.check_cell(facts.get(h.machine)),
            ]
            for h in hosts
        ],
    )


@inventory.command("show")
@click.argument("name", metavar="HOST")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: vars, origins, settings.")
def show_cmd(name: str, as_json: bool) -> None:
    """Show one host: its merged vars, where each came from, and deployer's settings.

    Secrets (passwords, tokens) are shown as [REDACTED].

    \b
    Examples:
      deploy inventory show gpu01
      deploy inventory show gpu01 --json
    """
    ctx = _ctx()
    inv = ctx.inventory()
    if name not in inv.hosts and name in inv.groups:
        raise InventoryError(
            f"{name} is a group, not a host", hint=f"list its hosts with `deploy inventory list {name}`"
        )
    host = inv.host(name)
    _warn_inventory(ctx)
    for message in report.password_warnings([host]) + report.connection_warnings([host]):
        output.warn(message)
    data = report.show_json(host)
    if as_json:
        output.emit_json(data)
        return
    click.echo(f"{host.name}  {report.address_cell(host)}  user={report.shown(host, 'user') or '(ssh default)'}")
    click.echo(f"groups: {', '.join(host.groups) or '(none)'}")
    for key, value in data["settings"].items():
        click.echo(f"{key + ':':13} {_cell(value)}")
    click.echo("")
    output.table(
        ["VAR", "VALUE", "FROM"],
        [[k, _cell(v), data["origins"][k]] for k, v in sorted(data["vars"].items())],
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return json.dumps(value, default=str)


@inventory.command("add")
@click.argument("name", metavar="HOST")
@click.option("--address", required=True, help="Address to SSH to (becomes ansible_host).")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port (ansible_port).")
@click.option("--user", help="SSH user (ansible_user).")
@click.option("--group", "groups", multiple=True, metavar="GROUP", help="Group to put the host in; repeatable. Created if missing.")
@click.option("--var", "variables", multiple=True, metavar="K=V", help="A host variable; repeatable. V is typed like YAML (5, true, text).")
def add_cmd(name: str, address: str, port: int | None, user: str | None, groups: tuple[str, ...], variables: tuple[str, ...]) -> None:
    """Add a host to a YAML inventory, keeping its comments, order and layout.

    Without --group the host goes under `all`. INI inventories and directories of
    several files are refused (edit those by hand, or pass the one file with -i).

    \b
    Examples:
      deploy inventory add gpu05 --address 10.0.0.15 --group gpus
      deploy inventory add gpu06 --address gpu06.dc1 --port 2222 --user ml \\
          --group gpus --group connected --var deploy_via=registry
    """
    from deployer.inventory import edit  # ruamel.yaml: only the commands that edit load it

    ctx = _ctx()
    new = edit.NewHost(
        name=name,
        address=address,
        port=port,
        user=user,
        groups=groups,
        vars=tuple(edit.parse_var(v) for v in variables),
    )
    path = edit.add(_source(ctx), new)
    output.info(f"added {name} ({address}) to {path}" + (f" in {', '.join(groups)}" if groups else ""))


@inventory.command("remove")
@click.argument("name", metavar="HOST")
def remove_cmd(name: str) -> None:
    """Remove a host from every group of a YAML inventory, keeping the rest of the file as it is.

    \b
    Examples:
      deploy inventory remove gpu05
    """
    from deployer.inventory import edit

    ctx = _ctx()
    path, groups = edit.remove(_source(ctx), name)
    output.info(f"removed {name} from {path} (groups: {', '.join(groups)})")


def _source(ctx: AppContext) -> str:
    from deployer.inventory import resolve_path

    return resolve_path(ctx.inventory_path)
