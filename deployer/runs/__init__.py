"""Running and observing containers on hosts: start, status, logs, stop/rm, history.

    RunSpec                         what to run (shared with playbooks' `run:` section)
    validate(spec)                  SpecError (exit 2) for malformed flags, before any host is touched
    start(hosts, spec, ...)         preflight every host, then start everywhere or nowhere
    status.gather / logs.show / manage.stop / manage.rm / journal.collect
"""
from __future__ import annotations

from deployer.runs.spec import RunSpec, validate
from deployer.runs.start import Started, start

__all__ = ["RunSpec", "Started", "start", "validate"]
