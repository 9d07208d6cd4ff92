"""Find the playbook a user means when they give none."""
from __future__ import annotations

import os

from deployer.errors import PlaybookError

DEFAULT_NAMES = ("default.yml", "default.yaml", "deploy.yml", "deploy.yaml")


def find_default(cwd: str = ".") -> str:
    """`playbooks/default.yml` or `playbooks/deploy.yml`, else the only playbook in `playbooks/`."""
    folder = os.path.join(cwd, "playbooks")
    for name in DEFAULT_NAMES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    try:
        found = sorted(n for n in os.listdir(folder) if n.endswith((".yml", ".yaml")) and not n.startswith("."))
    except OSError:
        found = []
    if len(found) == 1:
        return os.path.join(folder, found[0])
    if not found:
        raise PlaybookError(f"no playbook given and none found in {folder}/",
                            hint="pass -p FILE, or create one with `deploy init`")
    listing = ", ".join(os.path.join(folder, n) for n in found)
    raise PlaybookError(
        f"no playbook given and {len(found)} found in {folder}/: {listing}",
        hint="pass -p FILE, set DEPLOY_PLAYBOOK, or name the default playbooks/default.yml",
    )
