"""Running and observing containers on hosts: start, status, logs, stop/rm, history.

    spec.RunSpec                    what to run: the one model of `deploy run` flags and a playbook's `run:`
    spec.validate(spec)             SpecError (exit 2) for malformed flags, before any host is touched
    steps.launch_steps(...)         the remote commands a start runs; a dry run prints the same list
    start.start(hosts, spec, ...)   preflight every host, then start everywhere or nowhere
    status.gather / logs.show / manage.stop / manage.rm / journal.collect

Nothing is imported here, so a playbook can use spec.RunSpec without loading SSH.
"""
