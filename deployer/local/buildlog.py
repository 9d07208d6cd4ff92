"""Read a build's output as steps (pure): BuildKit's `--progress=plain` lines, or the legacy builder's.

Both the live view (which steps run, which finished, cached or not) and the failure message (the failed
step's command, BuildKit's error, the tail of that step's output) come from here.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

TAIL_LINES = 15
_HEADER = re.compile(r"^#(\d+) (.+)$")
_LOG = re.compile(r"^#(\d+) \d+\.\d+ ?(.*)$")  # "#7 0.135 text": a step's own output, after its clock
_DONE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s$")
_CACHED = re.compile(r"^#(\d+) CACHED$")
_ERROR = re.compile(r"^#(\d+) ERROR: ?(.*)$")
_CANCELED = re.compile(r"^#(\d+) CANCELED$")  # stopped because another step failed
_USER_STEP = re.compile(r"^\[(?:(\S+) )?(\d+)/(\d+)\] (.*)$", re.S)  # [stage 2/4] RUN ...: a Dockerfile step
_LEGACY_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_LEGACY_NOISE = re.compile(r"^( ---> |Removing intermediate container )")
_LOCATION = re.compile(r"^(\S*Dockerfile\S*):(\d+)$")  # "Dockerfile:5" above BuildKit's excerpt of the file
_FINAL = re.compile(r"^ERROR: (.*)$")


@dataclass
class Step:
    """One step of a build: a Dockerfile instruction (`user`) or BuildKit's own work (load, export...)."""

    id: str
    name: str
    user: bool = False
    index: str = ""  # "2/4" of a Dockerfile step
    done: bool = False
    cached: bool = False
    seconds: float | None = None
    error: str | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    @property
    def command(self) -> str:
        """The Dockerfile instruction (without the [stage i/n] prefix)."""
        m = _USER_STEP.match(self.name)
        return m.group(4) if m else self.name

    @property
    def label(self) -> str:
        """`[2/4] RUN pip install ...` (the stage is named only when not the default one)."""
        m = _USER_STEP.match(self.name)
        if not m:
            return self.name
        stage = f"{m.group(1)} " if m.group(1) and m.group(1) != "stage-0" else ""
        return f"[{stage}{m.group(2)}/{m.group(3)}] {m.group(4)}"


@dataclass(frozen=True)
class Event:
    """What a line meant: a step started, logged, finished (done, cached) or failed."""

    kind: str  # "start" | "log" | "done" | "error"
    step: Step
    text: str = ""


class BuildLog:
    """Consumes output lines one at a time; `feed` returns the events each line makes."""

    def __init__(self) -> None:
        self.steps: dict[str, Step] = {}
        self.order: list[str] = []
        self.failed: Step | None = None
        self.final_error: str | None = None  # BuildKit's last "ERROR: failed to build: ..." line
        self.location: str | None = None  # "Dockerfile:5": where BuildKit says the failed step is
        self.image_id: str | None = None  # the legacy builder's "Successfully built ID"
        self._legacy: Step | None = None

    def feed(self, line: str) -> list[Event]:
        line = line.rstrip("\r\n")
        if line.startswith("#"):
            return self._buildkit(line)
        return self._other(line)

    def _buildkit(self, line: str) -> list[Event]:
        header = _HEADER.match(line)
        if not header:
            return []
        sid = header.group(1)
        if sid == "0":
            return []  # "#0 building with "default" instance using docker driver": not a step
        step = self.steps.get(sid)
        if step is None:  # a step's first line is its name
            step = self._add(sid, header.group(2))
            return [Event("start", step)]
        if m := _DONE.match(line):
            step.done, step.seconds = True, float(m.group(2))
            return [Event("done", step)]
        if _CACHED.match(line):
            step.done = step.cached = True
            return [Event("done", step)]
        if m := _ERROR.match(line):
            step.error = m.group(2).strip() or "failed"
            self.failed = self.failed or step
            return [Event("error", step, step.error)]
        if _CANCELED.match(line):
            step.done = True
            return [Event("error", step, "canceled")]
        if header.group(2) == step.name:
            return []  # the name again, when the log switches back to this step
        m = _LOG.match(line)
        text = m.group(2) if m else header.group(2)
        if m:
            step.tail.append(text)
        return [Event("log", step, text)]

    def _add(self, sid: str, name: str) -> Step:
        m = _USER_STEP.match(name)
        step = Step(sid, name, user=bool(m), index=f"{m.group(2)}/{m.group(3)}" if m else "")
        self.steps[sid] = step
        self.order.append(sid)
        return step

    def _other(self, line: str) -> list[Event]:
        if m := _LOCATION.match(line.strip()):
            self.location = self.location or f"{m.group(1).rsplit('/', 1)[-1]}:{m.group(2)}"
        if m := _FINAL.match(line):
            self.final_error = m.group(1).strip()
        elif self.final_error is not None and line.strip():  # buildx explains on the lines after its ERROR
            self.final_error += " " + line.strip()
        if m := _LEGACY_STEP.match(line):  # the legacy builder: "Step 2/5 : RUN ..."
            events = []
            if self._legacy is not None and not self._legacy.done:
                self._legacy.done = True
                events.append(Event("done", self._legacy))
            self._legacy = self._add(f"legacy-{m.group(1)}", f"[{m.group(1)}/{m.group(2)}] {m.group(3)}")
            return [*events, Event("start", self._legacy)]
        if m := re.match(r"^Successfully built ([0-9a-f]{12,64})$", line):
            self.image_id = m.group(1)
            if self._legacy is not None and not self._legacy.done:
                self._legacy.done = True
                return [Event("done", self._legacy)]
            return []
        if self._legacy is not None and line.strip() and not _LEGACY_NOISE.match(line):
            self._legacy.tail.append(line)
            return [Event("log", self._legacy, line)]
        return []

    def current(self) -> Step | None:
        """The step a failure belongs to: the failed one, else the legacy builder's last step."""
        return self.failed or self._legacy

    def failure_text(self, message: str | None = None) -> str:
        """`image build failed at [3/4] RUN x (Dockerfile:5): why`, then the step's last output lines."""
        step = self.current()
        why = message or (step.error if step is not None else None) or self.final_error or "unknown error"
        where = ""
        if step is not None:
            where = f" at {step.label}" + (f" ({self.location})" if self.location else "")
        elif self.location:
            where = f" at {self.location}"
        text = f"image build failed{where}: {why}"
        tail = [line for line in (step.tail if step is not None else ()) if line.strip()]
        if tail:
            text += "\n  output (last lines):\n" + "\n".join(f"    {line}" for line in tail)
        return text

    def summary(self) -> tuple[int, int]:
        """(Dockerfile steps finished, of which cached)."""
        user = [self.steps[s] for s in self.order if self.steps[s].user and self.steps[s].done]
        return len(user), sum(1 for s in user if s.cached)
