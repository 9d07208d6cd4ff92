"""Unit tests never read or write the user's cache: each test gets its own $XDG_CACHE_HOME (tests
that want a particular one set it themselves). Nor do they see the caller's deployer settings: a
shell that ran `eval "$(scripts/testbed env)"` (DEPLOY_INVENTORY, DEPLOY_PLAYBOOK) or set
DEPLOYER_RETRY_BUDGET runs them as a clean one does."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_cache_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _no_deployer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DEPLOY_", "DEPLOYER_")):
            monkeypatch.delenv(name)
