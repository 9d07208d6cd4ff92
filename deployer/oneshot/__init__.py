"""The one-command path, `deploy ship -p PLAYBOOK`: render, build, ship, run, report; and its dry run.

    prepare(playbook, hosts, options) -> Prepared   everything checked before any work
    deploy(prepared, say=..., on_line=...)          build -> ship -> start -> [HostReport]
    preview(prepared) -> Preview                    the dry run: plans and exact commands, changes nothing
"""
from __future__ import annotations

from deployer.oneshot.pipeline import OneShotOptions, Prepared, deploy, prepare
from deployer.oneshot.preview import Preview, preview
from deployer.oneshot.report import HostReport

__all__ = ["HostReport", "OneShotOptions", "Prepared", "Preview", "deploy", "prepare", "preview"]
