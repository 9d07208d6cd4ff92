"""Run several remote commands in one round trip (the I/O half of deployer.commands.batch)."""
from __future__ import annotations

import secrets
from collections.abc import Sequence

from deployer.commands.batch import batch_argv, split_batch
from deployer.transport.result import Result
from deployer.transport.session import Session


class Batch:
    """STEPS as one command (`argv`, with a fresh nonce); `split` gives one Result per step."""

    def __init__(self, steps: Sequence[Sequence[str]], *, stop_on_failure: bool = False, parallel: bool = False,
                 lead: bool = False, stdin_step: int | None = None) -> None:
        self.steps = [tuple(step) for step in steps]
        self.nonce = secrets.token_hex(8)
        self.argv = batch_argv(self.steps, self.nonce, stop_on_failure=stop_on_failure, parallel=parallel,
                               lead=lead, stdin_step=stdin_step)

    def split(self, whole: Result) -> list[Result]:
        """One Result per step (its argv, exit code, stdout, stderr) out of the batch's WHOLE result."""
        parts = split_batch(whole.stdout, whole.stderr, len(self.steps), self.nonce)
        return [Result.of(step, code, out, err, whole.host) for step, (code, out, err) in zip(self.steps, parts)]


def run_batch(session: Session, steps: Sequence[Sequence[str]], *, timeout: float | None = None,
              parallel: bool = False, lead: bool = False) -> list[Result]:
    """STEPS in one round trip: one Result per step, never raising for a step's exit code (each
    caller checks its own)."""
    batch = Batch(steps, parallel=parallel, lead=lead)
    return batch.split(session.run(batch.argv, check=False, timeout=timeout))
