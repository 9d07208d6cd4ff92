"""The root `deploy` group and its global options; commands load lazily."""
from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping

import click

from deployer import __version__, lazy
from deployer.cli.context import AppContext

# command -> (the module that defines it, the first paragraph of its help). `deploy --help` lists
# commands from this table and running one imports only its module, so the docker SDK, paramiko and
# zstandard load only for commands that use them (issue 12: --help in well under 0.3 s).
# A new command goes in this table too; tests/unit/test_cli_startup.py checks it against their help.
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("deployer.cli.playbook", "Build the playbook's image with the local Docker."),
    "bundle": ("deployer.cli.bundle", "Write a local image as one compressed file that `docker load` takes on a "
               "server no network reaches (sneakernet): the full image, or only the layers HOST lacks."),
    "history": ("deployer.cli.runs", "What was shipped, run, stopped and removed on the hosts, newest first."),
    "init": ("deployer.cli.playbook", "Write a starter project for a PyTorch fine-tuning job."),
    "inventory": ("deployer.cli.inventory",
                  "Inspect and edit the Ansible inventory (YAML or INI, file or directory)."),
    "logs": ("deployer.cli.runs", "Stream a container's output (stdout and stderr)."),
    "playbook": ("deployer.cli.playbook",
                 "Inspect playbooks: validate them and see what they render to on each host."),
    "prune": ("deployer.cli.versions",
              "Free disk on hosts: old image versions, old exited containers, unfinished ships' leftovers."),
    "rm": ("deployer.cli.runs", "Remove a deployer container on every selected host that has it."),
    "rollback": ("deployer.cli.versions", "Restart a container with the image it ran before, with the same options."),
    "run": ("deployer.cli.runs", "Start a container on every selected host, with GPUs, volumes and environment."),
    "ship": ("deployer.cli.ship",
             "Build, ship and run a playbook, or ship a local image, on hosts; verified by image id."),
    "status": ("deployer.cli.runs",
               "Show what runs where: containers, state, exit codes, OOM kills, GPUs, per host."),
    "stop": ("deployer.cli.runs", "Stop a deployer container on every selected host that has it."),
}

SOME_HOST_FAILED = 1  # README: exit codes 0 ok, 1 a failure (on any host), 2 bad input


def finish(failed: bool | Collection[object]) -> None:
    """End a command that acted on hosts: exit 1 if any failed (a flag, or the failures themselves).

    The one place that decides "some hosts failed"; the CLI has printed each failure already.
    """
    if failed:
        raise click.exceptions.Exit(SOME_HOST_FAILED)


def _inventory_here(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """-i/--inventory after the command's name: as if given before it (and over it)."""
    if value is not None:
        ctx.ensure_object(AppContext).inventory_path = value


def _verbose_here(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """--verbose after the command's name: as -v before it."""
    app = ctx.ensure_object(AppContext)
    if value and not app.verbose:
        app.verbose = True
        _debug_logging()


def global_options() -> list[click.Parameter]:
    """The root's -i/--inventory and --verbose, for a command's own options: `deploy ship -i X`
    as ansible-playbook's users type it. Not -v there: `run -v` is a volume, as in `docker run`."""
    return [
        click.Option(["-i", "--inventory", "inventory_path"], type=click.Path(), is_eager=True, expose_value=False,
                     callback=_inventory_here, help="Inventory file or directory (as `deploy -i PATH COMMAND`)."),
        click.Option(["--verbose"], is_flag=True, is_eager=True, expose_value=False, callback=_verbose_here,
                     help="Show debug logging and tracebacks (as `deploy -v COMMAND`)."),
    ]


def _debug_logging() -> None:
    import logging

    logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("paramiko").setLevel(logging.WARNING)


class LazyGroup(click.Group):
    """A group whose commands are registered by modules imported on first use (`lazy`: name ->
    (module, short help)); its help lists them without importing any. Each command registered on
    it takes the global options too (global_options); its subgroups are LazyGroups."""

    group_class = type  # `@group.group(...)` makes a LazyGroup too

    def __init__(self, *args: object, lazy: Mapping[str, tuple[str, str]] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy or {})

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not isinstance(cmd, click.Group):
            cmd.params.extend(global_options())
        super().add_command(cmd, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            lazy.defer("invoke")  # paramiko's (and so docker's) import of it, deferred to a `Match exec`
            importlib.import_module(self.lazy[cmd_name][0])  # its decorators register it on this group
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [n for n in self.list_commands(ctx) if n in self.lazy or not self.commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        # a stand-in Command shortens the table's text exactly as the real one would its help
        rows = [(n, (self.commands.get(n) or click.Command(n, help=self.lazy[n][1])).get_short_help_str(limit))
                for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  deploy inventory list                     # hosts in the default inventory
  deploy inventory check --host gpus        # reachability, Docker, GPUs, disk
  deploy ship --host gpu01                  # build, ship and run the default playbook
  deploy ship --host 'gpus:!gpu03' --image trainer:v3 --no-run
  deploy status --host all                  # what runs where, fleet-wide
  deploy logs train-1 --host gpu01 -f
""",
)
@click.version_option(__version__, "--version", prog_name="deploy")
@click.option(
    "-i",
    "--inventory",
    "inventory_path",
    envvar="DEPLOY_INVENTORY",
    type=click.Path(),
    default=None,
    help="Inventory file or directory (Ansible format). Default: $DEPLOY_INVENTORY, else inventories/hosts.yml.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging and tracebacks.")
@click.pass_context
def cli(ctx: click.Context, inventory_path: str | None, verbose: bool) -> None:
    """deployer: ship containerized ML work to GPU servers over SSH.

    Builds images locally, sends them to each host through a registry or as
    layer-aware tarballs (only the layers a host lacks, resumable and verified),
    starts them with GPUs and data volumes, and shows what runs where.

    From the second command on, commands start in a warm background process
    that has deployer imported already (DEPLOY_WARM=0 turns it off).
    """
    ctx.obj = AppContext(inventory_path=inventory_path, verbose=verbose)
    if verbose:
        _debug_logging()
