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


def head(log: Callable[[str], None], rev: str = "HEAD") -> Path:
    """Extract deployer/ at git REV into a temp dir and return the dir (for PYTHONPATH)."""
    out = Path(tempfile.mkdtemp(prefix="deployer-bench-src-"))
    done = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "deployer"], capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"scripts/bench: no deployer/ at {rev!r}: {done.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=done.stdout, check=True)
    if rev != "HEAD":
        log(f"benchmarking deployer/ as committed at {rev}")
    elif dirty():
        log("note: deployer/ has uncommitted changes; benchmarking git HEAD (--worktree for the tree)")
    return out


def dirty() -> bool:
    """Whether deployer/ differs from HEAD in the working tree."""
    done = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "deployer"],
                          capture_output=True, text=True, check=False)
    return bool(done.stdout.strip())
