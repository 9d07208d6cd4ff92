"""The root `deploy` group and its global options."""
from __future__ import annotations

import click

from deployer import __version__
from deployer.cli.context import AppContext


@click.group(
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
    """
    ctx.obj = AppContext(inventory_path=inventory_path, verbose=verbose)
    if verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("paramiko").setLevel(logging.WARNING)
