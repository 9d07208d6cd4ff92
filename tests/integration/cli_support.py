"""Running the `deploy` CLI from integration tests, and inventories derived from the testbed's."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO, Testbed, _deploy_argv


def deploy(env: dict[str, str], *args: str, timeout: float = 180) -> tuple[int, Any, str]:
    """Run `deploy ...`; (exit code, parsed JSON or raw stdout, stderr)."""
    proc = subprocess.run([*_deploy_argv(), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(REPO), check=False)
    try:
        out: Any = json.loads(proc.stdout)
    except ValueError:
        out = proc.stdout
    return proc.returncode, out, proc.stderr


def inventory_with(testbed: Testbed, tmp_path: Path, host: str, **vars: str) -> str:
    """A copy of the testbed's inventory with extra vars on one host; returns its path."""
    data = yaml.safe_load(Path(testbed.inventory).read_text())

    def patch(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "hosts" and isinstance(value, dict) and host in value:
                    value[host] = {**(value[host] or {}), **vars}
                else:
                    patch(value)

    patch(data)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)
