"""The remote commands that start a container on a host, as one list of labelled steps (pure).

runs.start executes this list and `deploy ship -p --dry-run` prints it: the start sequence is
described once. Before preflight has looked at a host (a dry run) the steps that depend on what
it finds are listed with their condition.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from deployer.commands import run as cmd
from deployer.commands.step import Step
from deployer.inventory.host import Host
from deployer.runs.spec import RunSpec, Volume, env_file_text


@dataclass(frozen=True)
class LaunchSteps:
    """A start on one host, in the order it happens."""

    before: tuple[Step, ...]  # remove the container being replaced, create volume sources, write the env file
    run: Step  # docker run
    on_failure: Step  # clears the "created" container a failed docker run leaves holding the name
    cleanup: tuple[Step, ...]  # remove the env file, whether or not the run worked

    def __iter__(self) -> Iterator[Step]:
        yield from self.before
        yield self.run
        yield self.on_failure
        yield from self.cleanup


def env_path_for(host: Host, name: str, token: str) -> str:
    """Where the container's env file lives on the host while `docker run` reads it."""
    return f"{host.staging_dir.rstrip('/')}/run-env.{name}.{token}"


def launch_steps(host: Host, spec: RunSpec, *, name: str, volumes: Sequence[Volume], env: Sequence[tuple[str, str]],
                 labels: Sequence[tuple[str, str]], token: str, replacing: bool | None = None,
                 missing_dirs: Sequence[str] | None = None, create: bool = False,
                 extra: Sequence[str] = ()) -> LaunchSteps:
    """The steps that start spec as name on host.

    `replacing` (a deployer container of that name exists) and `missing_dirs` are what preflight
    found; None (not looked yet) lists the step with the condition under which it runs. CREATE
    (a rank of a multi-node job): `docker create`, started later with the other ranks; EXTRA: more
    docker options (the job's environment, InfiniBand devices).
    """
    before: list[Step] = []
    if replacing or (replacing is None and spec.replace):
        before.append(Step(f"remove the old container {name}", cmd.rm_argv(host.docker, name, force=True),
                           None if replacing else f"only if a deployer container {name} exists"))
    if missing_dirs is None:
        binds = tuple(v.source for v in volumes if v.bind) if spec.mkdirs else ()
        if binds:
            before.append(Step("create volume sources", cmd.mkdirs_argv(binds), "only the volume sources that are missing"))
    elif missing_dirs:
        before.append(Step("create volume sources", cmd.mkdirs_argv(missing_dirs)))
    env_path = env_path_for(host, name, token) if env else None
    cleanup: tuple[Step, ...] = ()
    if env_path:
        # Values go through stdin into a 0600 file: never on a command line, in ps, or in logs.
        before.append(Step("write the env file", cmd.write_file_argv(env_path),
                           f"env values ({', '.join(k for k, _ in env)}) on stdin", env_file_text(env).encode()))
        cleanup = (Step("remove the env file", cmd.remove_file_argv(env_path)),)
    run = Step(f"docker {'create' if create else 'run'} {name}",
               cmd.run_argv(host.docker, spec, name=name, labels=labels, volumes=volumes, env_file=env_path,
                            create=create, extra=extra))
    failed = Step(f"remove the failed container {name}", cmd.rm_argv(host.docker, name, force=True),
                  f"only if docker {'create' if create else 'run'} fails")
    return LaunchSteps(tuple(before), run, failed, cleanup)
