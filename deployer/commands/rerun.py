"""Pure helpers for running a recorded run again (`deploy rollback`): read back the `docker run`
argv deployer built (as the history log records it), a container's environment, image ids by ref."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deployer.commands.run import Docker

_VALUE_FLAGS = {"--name": "name", "--label": "labels", "--gpus": "gpus", "--volume": "volumes",
                "--env-file": "env_file", "--shm-size": "shm_size", "--ipc": "ipc", "--memory": "memory",
                "--restart": "restart", "--workdir": "workdir", "--network": "network"}


def parse_run_argv(argv: Sequence[str]) -> dict[str, Any]:
    """The options of a `docker run` argv that run_argv built (as history records it), by RunSpec
    field: name, labels (pairs), gpus, volumes, env_file, shm_size, ipc, memory, restart, workdir,
    image, command. ValueError for an argv run_argv would not build."""
    args = list(argv)
    try:
        i = args.index("run") + 1
    except ValueError:
        raise ValueError("not a docker run command") from None
    out: dict[str, Any] = {"labels": [], "volumes": []}
    while i < len(args) and args[i].startswith("--"):
        flag = args[i]
        if flag == "--detach":
            i += 1
            continue
        if flag not in _VALUE_FLAGS or i + 1 >= len(args):
            raise ValueError(f"unexpected docker run option {flag}")
        key, value = _VALUE_FLAGS[flag], args[i + 1]
        if key == "labels":
            k, _, v = value.partition("=")
            out["labels"].append((k, v))
        elif key == "volumes":
            out["volumes"].append(value)
        else:
            out[key] = value
        i += 2
    if i >= len(args):
        raise ValueError("docker run command without an image")
    out["image"], out["command"] = args[i], tuple(args[i + 1:])
    out["labels"], out["volumes"] = tuple(out["labels"]), tuple(out["volumes"])
    return out


_IMAGE_IDS = ('refs=; while [ "$1" != -- ]; do refs="$refs $1"; shift; done; shift\n'
              'for r in $refs; do "$@" image inspect --format "{{.Id}}" -- "$r" 2>/dev/null || echo -; done')


def image_ids_argv(docker: Docker, refs: Sequence[str]) -> tuple[str, ...]:
    """Each ref's image id on the host, one per line, `-` for a ref the host does not have."""
    for ref in refs:
        if not ref or ref == "--" or any(c.isspace() for c in ref):
            raise ValueError(f"not an image reference: {ref!r}")
    return ("sh", "-c", _IMAGE_IDS, "sh", *refs, "--", *docker)
