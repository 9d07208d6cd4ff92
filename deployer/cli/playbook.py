"""`deploy build`, `deploy init` and `deploy playbook check` (wiring only)."""
from __future__ import annotations

import os
from typing import Any

import click

from deployer.cli import output
from deployer.cli.app import cli
from deployer.cli.context import AppContext
from deployer.errors import InventoryError, UsageError

PLAYBOOK_HELP = "Playbook file. Default: $DEPLOY_PLAYBOOK, playbooks/default.yml, or the only file in playbooks/."


def playbook_option(fn: Any) -> Any:
    return click.option("-p", "--playbook", "playbook_path", envvar="DEPLOY_PLAYBOOK", type=click.Path(),
                        default=None, help=PLAYBOOK_HELP)(fn)


def _line_printer() -> Any:
    """Build output to stderr: one line per Dockerfile step (and a live line on a terminal); all of it with -v."""
    from deployer.cli.buildview import BuildView

    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(AppContext) if ctx is not None else None
    return BuildView(verbose=bool(app is not None and app.verbose))


def _build_platform(app: AppContext, playbook: Any, pattern: str | None, client: Any) -> Any:
    """The PlatformChoice for `deploy build`: image.build.platform, else the hosts' architecture (--host, else
    the playbook's hosts: when the inventory has them), else the workstation's."""
    from deployer.local.build import workstation_arch
    from deployer.oneshot.platform import decide

    hosts: list[Any] = []
    if pattern or (playbook.hosts and not playbook.image.build.platform):
        try:
            hosts = app.select(pattern or playbook.hosts)
        except InventoryError as exc:
            if pattern:
                raise
            output.warn(f"building for this workstation's platform: the playbook's hosts are unknown ({exc.reason})")
    return decide(playbook.image.build.platform, hosts, workstation_arch(client))


@cli.command("build", epilog="""\b
Examples:
  deploy build                              # the default playbook
  deploy build -p playbooks/sample.yml
  IMAGE=$(deploy build -q)                  # the built reference on stdout
  deploy build --json
""")
@playbook_option
@click.option("--host", "pattern", default=None,
              help="Build for these hosts' architecture (default: the playbook's hosts).")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the build's progress.")
@click.option("--json", "as_json", is_flag=True, help="Print {ref, image_id, refs, revision, dirty} as JSON.")
@click.pass_obj
def build_cmd(app: AppContext, playbook_path: str | None, pattern: str | None, quiet: bool, as_json: bool) -> None:
    """Build the playbook's image with the local Docker.

    Builds with BuildKit (`docker buildx build`; the legacy builder only when the
    buildx plugin is missing) for image.build.platform, else for the architecture
    of the playbook's hosts (asked over SSH). Tags it <tag or name>:<git revision>
    (with -dirty when the build context has uncommitted changes) and :latest, and
    labels it with the revision. Prints the reference to ship on stdout.
    """
    from deployer.local.build import LEGACY, build
    from deployer.local.client import docker_client
    from deployer.playbook import load_default

    playbook = load_default(playbook_path)
    spec = playbook.image.build
    if spec is None:
        output.info(f"{playbook.file}: nothing to build, the playbook uses the prebuilt image {playbook.image.ref}")
        if as_json:
            output.emit_json({"ref": playbook.image.ref, "image_id": None, "refs": [playbook.image.ref],
                              "revision": None, "dirty": None, "built": False})
        else:
            click.echo(playbook.image.ref)
        return
    client = docker_client()
    target = _build_platform(app, playbook, pattern, client)
    output.info(f"building {spec.tag} from {os.path.relpath(spec.context)} ({playbook.file}) {target.reason}")
    for warning in target.warnings:
        output.warn(warning)
    view = (lambda _line: None) if quiet else _line_printer()
    try:
        result = build(spec, on_line=view, client=client, platforms=target.platforms)
    finally:
        getattr(view, "close", lambda: None)()
    if result.builder == LEGACY:
        output.warn("docker buildx is not installed: built with Docker's legacy builder (no BuildKit features)")
    rev = result.revision
    if rev is None:
        output.warn(f"{spec.context} is not in a git work tree: tagged by image id instead of a revision")
    elif rev.dirty:
        output.warn(f"uncommitted changes in {os.path.relpath(spec.context)}: tagged {rev.tag}")
    output.info(f"built {', '.join(result.refs)} ({result.image_id[:19]})")
    if as_json:
        output.emit_json({"ref": result.ref, "image_id": result.image_id, "refs": list(result.refs),
                          "revision": rev.commit if rev else None, "dirty": rev.dirty if rev else None,
                          "built": True})
    else:
        click.echo(result.ref)


@cli.command("init", epilog="""\b
Examples:
  deploy init                               # in the current folder
  deploy init my-finetune && cd my-finetune
  deploy init --force                       # overwrite the starter files
""")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init_cmd(directory: str, force: bool) -> None:
    """Write a starter project for a PyTorch fine-tuning job.

    Creates inventories/hosts.yml, playbooks/train.yml, a Dockerfile on NVIDIA's
    PyTorch container, train.py and requirements.txt. Never overwrites a file
    unless --force is given.
    """
    from deployer.playbook.starter import files

    todo = {os.path.join(directory, rel): text for rel, text in files().items()}
    existing = [p for p in todo if os.path.exists(p)]
    if existing and not force:
        raise UsageError(f"refusing to overwrite {', '.join(existing)}",
                         hint="pass --force to overwrite them, or choose another folder: deploy init DIR")
    for path, text in todo.items():
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        output.info(("overwrote " if path in existing else "wrote ") + path)
    where = "" if os.path.abspath(directory) == os.getcwd() else f"cd {directory} && "
    output.info(f"""
next steps:
  1. put your servers in {os.path.join(directory, 'inventories/hosts.yml')} (address, user, data_root)
  2. {where}deploy inventory check --host gpus
  3. {where}deploy ship --host gpu01      # build, ship and start training
  4. deploy logs train --host gpu01 -f""")


@cli.group("playbook")
def playbook_group() -> None:
    """Inspect playbooks: validate them and see what they render to on each host."""


@playbook_group.command("check", epilog="""\b
Examples:
  deploy playbook check                                # validate the default playbook
  deploy playbook check -p playbooks/sample.yml --host gpus
  deploy playbook check --host gpu01 --json            # the rendered run options per host
""")
@playbook_option
@click.option("--host", "pattern", default=None, help="Also render for these hosts (default: the playbook's hosts).")
@click.option("--no-hosts", is_flag=True, help="Validate the file only; do not read the inventory.")
@click.option("--json", "as_json", is_flag=True, help="Print the rendered values per host as JSON.")
@click.pass_obj
def check_cmd(app: AppContext, playbook_path: str | None, pattern: str | None, no_hosts: bool, as_json: bool) -> None:
    """Validate a playbook and render it for each host (strict: undefined variables are errors)."""
    from deployer.playbook import load_default, render

    playbook = load_default(playbook_path)
    rendered = []
    if not no_hosts:
        try:
            app.inventory()
        except InventoryError as exc:
            if pattern:
                raise
            output.warn(f"not rendered for any host: {exc.reason}")
        else:
            rendered = [render(playbook, host) for host in app.select(pattern or playbook.hosts or "all")]
    if as_json:
        output.emit_json({"file": playbook.file, "name": playbook.name, "hosts": playbook.hosts,
                          "image": _image_json(playbook), "hosts_rendered": [_rendered_json(r) for r in rendered]})
        return
    output.info(f"{playbook.file}: ok ({playbook.name})")
    if rendered:
        output.table(["host", "gpus", "volumes", "command"],
                     [[r.host, (r.run.gpus if r.run else None) or "-", " ".join(r.run.volumes) if r.run else "",
                       " ".join(r.command)] for r in rendered])


def _image_json(playbook: Any) -> dict[str, Any]:
    build = playbook.image.build
    if build is None:
        return {"ref": playbook.image.ref}
    return {"build": {"context": build.context, "dockerfile": build.dockerfile, "args": dict(build.args),
                      "target": build.target, "tag": build.tag, "platform": list(build.platform),
                      "secrets": {s.id: {s.source: s.value} for s in build.secrets}, "ssh": build.ssh,
                      "cache_from": list(build.cache_from), "cache_to": list(build.cache_to)}}


def _rendered_json(r: Any) -> dict[str, Any]:
    run = r.run
    if run is None:
        return {"host": r.host, "run": None}
    return {"host": r.host, "run": {
        "name": run.name or r.name, "gpus": run.gpus, "volumes": list(run.volumes), "env": dict(run.env),
        "env_file": run.env_file, "shm_size": run.shm_size, "ipc": run.ipc, "memory": run.memory,
        "restart": run.restart, "workdir": run.workdir, "command": list(r.command),
        "labels": dict(run.labels), "mkdirs": run.mkdirs, "replace": run.replace, "network": run.network,
        "nodes": run.nodes, "master_port": run.master_port, "on_node_failure": run.on_node_failure}}
