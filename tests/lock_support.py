"""Shared by the lock tests (unit and integration): the identity of a deploy that was killed."""
from __future__ import annotations

import dataclasses
import subprocess

from deployer import lock as locks


def dead_deploy() -> locks.Owner:
    """The identity a deploy on this workstation had before it was killed (its pid is gone)."""
    proc = subprocess.Popen(["sleep", "30"])
    started = locks.process_start(proc.pid)
    proc.kill()
    proc.wait()
    return dataclasses.replace(locks.identity(), pid=proc.pid, started=started)
