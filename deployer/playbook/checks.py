"""Value checks for run options: the same rules `deploy run` applies to its flags (pure)."""
from __future__ import annotations

import re
from typing import Iterator

from deployer.playbook.model import RunOptions
from deployer.playbook.templating import is_template

SIZE_RE = re.compile(r"^\d+(\.\d+)? ?[kKmMgGtTpP]?[iI]?[bB]?$")  # docker's RAMInBytes
RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
IPC_RE = re.compile(r"^(none|private|shareable|host|container:[A-Za-z0-9][A-Za-z0-9_.-]*)$")
CONTAINER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# A reference: [registry[:port]/]path[:tag][@digest], path components lowercase.
REF_RE = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::\d+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def image_ref_problem(ref: str) -> str | None:
    if not REF_RE.match(ref):
        return f"{ref!r} is not a valid image reference (lowercase name, optional registry/ and :tag)"
    return None


def run_problems(opts: RunOptions, *, only_static: bool = False) -> Iterator[tuple[str, str]]:
    """(key path, message) for every invalid value; with only_static, templated values are skipped."""

    def skip(value: str | None) -> bool:
        return value is None or (only_static and is_template(value))

    if not skip(opts.gpus):
        problem = gpus_problem(str(opts.gpus))
        if problem:
            yield "run.gpus", problem
    for i, volume in enumerate(opts.volumes):
        if not skip(volume):
            problem = volume_problem(volume)
            if problem:
                yield f"run.volumes[{i}]", problem
    for key, text in (("shm_size", opts.shm_size), ("memory", opts.memory)):
        if not skip(text) and text and not SIZE_RE.match(text):
            yield f"run.{key}", f"{text!r} is not a size (e.g. 16g, 512m, 1073741824)"
    if not skip(opts.restart) and opts.restart and not RESTART_RE.match(opts.restart):
        yield "run.restart", f"{opts.restart!r} is not a restart policy (no, always, unless-stopped, on-failure[:N])"
    if not skip(opts.ipc) and opts.ipc and not IPC_RE.match(opts.ipc):
        yield "run.ipc", f"{opts.ipc!r} is not an IPC mode (host, private, shareable, none, container:NAME)"
    if not skip(opts.workdir) and opts.workdir and not opts.workdir.startswith("/"):
        yield "run.workdir", f"{opts.workdir!r} must be an absolute path inside the container"
    if not skip(opts.name) and opts.name and not CONTAINER_NAME_RE.match(opts.name):
        yield "run.name", f"{opts.name!r} is not a valid container name (letters, digits, '_', '.', '-')"
    for key, value in opts.env:
        if only_static and is_template(value):
            continue
        if "\n" in value:
            yield f"run.env.{key}", "values cannot contain newlines (docker env files are line based)"


def gpus_problem(spec: str) -> str | None:
    """Why `spec` is not what `docker run --gpus` accepts, or None."""
    try:
        _parse_gpus(spec)
    except ValueError as exc:
        return str(exc)
    return None


def _parse_gpus(spec: str) -> None:
    try:
        from deployer.commands.run import parse_gpus  # the RUN helper's parser: the one source of truth
    except ImportError:
        parse_gpus = None
    if parse_gpus is not None:
        try:
            parse_gpus(spec)
        except Exception as exc:  # SpecError or ValueError, both mean "bad value"
            raise ValueError(getattr(exc, "message", None) or str(exc)) from exc
        return
    _fallback_gpus(spec)


def _fallback_gpus(spec: str) -> None:
    """docker/cli opts/gpus.go: `all`, a count, or CSV of count=/device=/capabilities=/driver=/options=."""
    text = spec.strip()
    if text.startswith('"') and text.endswith('"') and len(text) > 1:
        text = text[1:-1]
    if text == "all" or text.isdigit():
        return
    for field in _csv(text):
        key, eq, value = field.partition("=")
        if not eq:
            raise ValueError(f"invalid --gpus value {spec!r}: expected all, a count, or device=0,2")
        if key == "count":
            if value != "all" and not value.isdigit():
                raise ValueError(f"invalid --gpus count {value!r}: a number or all")
        elif key == "device":
            if not value or any(not d for d in value.split(",")):
                raise ValueError(f"invalid --gpus device list {value!r}")
        elif key not in ("capabilities", "driver", "options"):
            raise ValueError(f"unexpected key {key!r} in --gpus {spec!r}")


def _csv(text: str) -> list[str]:
    import csv

    return next(csv.reader([text]), [])


def volume_problem(spec: str) -> str | None:
    """Why `spec` is not SRC:DST[:ro|rw] with an absolute SRC path (or a named volume), or None."""
    try:
        from deployer.commands.run import parse_volume  # the RUN helper's parser, when present
    except ImportError:
        parse_volume = None
    if parse_volume is not None:
        try:
            parse_volume(spec)
        except Exception as exc:
            return getattr(exc, "message", None) or str(exc)
        return None
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        return f"{spec!r} is not SRC:DST[:ro]"
    src, dst = parts[0], parts[1]
    if len(parts) == 3 and parts[2] not in ("ro", "rw"):
        return f"mode {parts[2]!r} in {spec!r} must be ro or rw"
    if not dst.startswith("/"):
        return f"container path {dst!r} in {spec!r} must be absolute"
    if not src.startswith("/") and ("/" in src or src.startswith(".") or src.startswith("~")):
        return f"host path {src!r} in {spec!r} must be absolute (the path on the server, e.g. {{{{ data_root }}}}/x)"
    return None
