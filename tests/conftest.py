"""Shared pytest wiring: the session-scoped `testbed` fixture (a real simulated fleet), `cli_env`,
`deploy_cli`, and the `integration` marker applied to everything under tests/integration/."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.testbed import bed
from tests.testbed.fixture import TbHost, Testbed, start_or_reuse

__all__ = ["TbHost", "Testbed"]
INTEGRATION_DIR = REPO / "tests" / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    """The running testbed (brought up if needed), its workstation daemon on the image store that
    DEPLOYER_TESTBED_WS_STORE names (overlay2 or containerd; default overlay2; `testbed.ws_store`). Torn down
    at the end only if this session started it from nothing, and not when DEPLOYER_KEEP_TESTBED=1."""
    if os.geteuid() != 0:
        pytest.skip("the testbed needs root (network namespaces, dockerd)")
    tb, started = start_or_reuse()
    try:
        yield tb
    finally:
        if started and os.environ.get("DEPLOYER_KEEP_TESTBED") != "1":
            bed.down(tb.paths)


@pytest.fixture
def cli_env(testbed: Testbed) -> dict[str, str]:
    """Environment for running `deploy` against the testbed: DOCKER_HOST=ws daemon, DEPLOY_INVENTORY."""
    return testbed.env()


DeployRunner = Callable[..., "tuple[int, str, str]"]


def _deploy_argv() -> list[str]:
    script = Path(sys.executable).parent / "deploy"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from deployer.cli import main; sys.exit(main())"]


@pytest.fixture
def deploy_cli(cli_env: dict[str, str]) -> DeployRunner:
    """run(*args, input=None, timeout=120, env=None) -> (exit code, stdout, stderr) of the real `deploy`
    CLI in a subprocess, pointed at the testbed."""
    def run(*args: str, input: str | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> tuple[int, str, str]:
        proc = subprocess.run([*_deploy_argv(), *args], check=False, capture_output=True, text=True, input=input,
                              timeout=timeout, env={**cli_env, **(env or {})}, cwd=str(REPO))
        return proc.returncode, proc.stdout, proc.stderr

    return run
