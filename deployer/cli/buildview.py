"""Build output on stderr: one line per finished Dockerfile step (plus a live line for the running step on
a terminal), or every line of the builder's log with -v."""
from __future__ import annotations

import shutil
import sys
from typing import TextIO

from deployer.local.buildlog import BuildLog, Event, Step

WIDTH = 110  # a step line's command is cut here: a long RUN is the Dockerfile's to show, not the log's


def step_line(step: Step) -> str:
    """`  [2/4] RUN pip install -r requirements.txt  3.1s` (or `cached`)."""
    label = step.label if len(step.label) <= WIDTH else step.label[:WIDTH - 1] + "…"
    took = "cached" if step.cached else f"{step.seconds:.1f}s" if step.seconds is not None else "done"
    return f"  {label}  {took}"


class BuildView:
    """Callable with each output line of a build. `verbose`: print every line; else one line per finished
    Dockerfile step, and on a terminal a transient line showing the running step and its latest output."""

    def __init__(self, *, verbose: bool = False, live: bool | None = None, stream: TextIO | None = None,
                 width: int | None = None) -> None:
        self.stream = stream or sys.stderr
        self.width = width  # of the live line; None: the terminal's
        self.verbose = verbose
        self.live = self.stream.isatty() if live is None else live
        self.log = BuildLog()
        self.running: dict[str, Step] = {}
        self._shown = False  # a transient line is on screen

    def __call__(self, line: str) -> None:
        if self.verbose:
            self._print(line)
            return
        for event in self.log.feed(line):
            self._event(event)

    def _event(self, event: Event) -> None:
        step = event.step
        if event.kind == "start":
            self.running[step.id] = step
        elif event.kind in ("done", "error"):
            self.running.pop(step.id, None)
            if event.kind == "done" and step.user:
                self._print(step_line(step))
        if self.live:
            self._live(event)

    def _live(self, event: Event) -> None:
        if not self.running:
            self._clear()
            return
        step = event.step if event.step.id in self.running else next(reversed(self.running.values()))
        text = f"  {step.label}" + (f"  {event.text.strip()}" if event.kind == "log" and event.text.strip() else "")
        width = self.width or shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\x1b[2K" + (text if len(text) <= width else text[:width - 1] + "…"))
        self.stream.flush()
        self._shown = True

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False

    def _print(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Take the live line off the screen (the build ended)."""
        self._clear()

    def __enter__(self) -> BuildView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
