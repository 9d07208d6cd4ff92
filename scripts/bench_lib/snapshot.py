"""A frozen copy of deployer as committed, so that a long run measures one version of it.

Other people commit while a benchmark runs; a run that imports a half-edited working tree would
measure (or crash on) code that never existed as a whole.
"""
from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .config import ROOT


def head(log: Callable[[str], None]) -> Path:
    """Extract deployer/ at git HEAD into a temp dir and return the dir (for PYTHONPATH)."""
    out = Path(tempfile.mkdtemp(prefix="deployer-bench-src-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "deployer"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    if dirty():
        log("note: deployer/ has uncommitted changes; benchmarking git HEAD (--worktree for the tree)")
    return out


def dirty() -> bool:
    """Whether deployer/ differs from HEAD in the working tree."""
    done = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "deployer"],
                          capture_output=True, text=True, check=False)
    return bool(done.stdout.strip())
