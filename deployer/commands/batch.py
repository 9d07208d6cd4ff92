"""Several remote commands in one round trip (pure builder and parser).

On a real fleet each SSH channel costs a shell start on the host (the login shell reads its rc
files: conda or pyenv init can take 0.1 s), so steps that would be separate round trips go
into one `sh`, which runs them in turn and marks where each one's output ends:

    argv = batch_argv([lock_argv, probe_argv, ...], nonce)
    parts = split_batch(result.stdout, result.stderr, len(steps), nonce)  # (exit, out, err) per step

Each step keeps its own argv (passed as positional arguments, never pasted into the script),
its own exit code, stdout and stderr; at most one step reads the batch's stdin. With
stop_on_failure, a step runs only if every step before it exited 0; the steps that did not run
come back with exit code SKIPPED. With parallel, they all run at once (for independent reads),
their outputs still apart and in order; with lead, the first step (say, taking a lock) ends
before the others start.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

SKIPPED = -2  # the exit code of a step that did not run or finish (stop_on_failure, or the batch died)

# Each step is its argc then its args. A subshell keeps the first C of the remaining arguments
# (POSIX sh has no arrays: the loop appends them, then the original ones are shifted away).
_TAKE = '( n=$#; j=0; for a in "$@"; do j=$((j + 1)); [ "$j" -le "$c" ] && set -- "$@" "$a"; done; shift "$n"; '
_MARK = 'printf "\\n@@%s %s %s\\n" "$nonce" "$1" "$2"'
_SEQUENTIAL = (
    'nonce=$1; stop=$2; input=$3; shift 3; k=0; failed=0\n'
    'mark() { ' + _MARK + '; ' + _MARK + ' >&2; }\n'
    'while [ $# -gt 0 ]; do\n'
    '  c=$1; shift\n'
    '  if [ "$failed" = 1 ]; then rc=-2\n'
    '  elif [ "$k" = "$input" ]; then ' + _TAKE + 'exec "$@" ); rc=$?\n'
    '  else ' + _TAKE + 'exec "$@" ) </dev/null; rc=$?; fi\n'
    '  mark "$k" "$rc"\n'
    '  [ "$rc" = 0 ] || [ "$stop" = 0 ] || failed=1\n'
    '  shift "$c"; k=$((k + 1))\n'
    'done\n'
)
# All steps at once (with lead=1, the first one alone before the others), each into its own
# files, its end mark too (a step that wrote none did not finish); then all the outputs in
# order, stdout in one `cat` and stderr in another (a process per file made the batch 10 ms slower).
_PARALLEL = (
    'nonce=$1; lead=$2; shift 3; k=0\n'
    'd=$(mktemp -d) || exit 97\n'
    "trap 'rm -rf -- \"$d\"' EXIT\n"
    'while [ $# -gt 0 ]; do\n'
    '  c=$1; shift\n'
    '  if [ "$k" = 0 ] && [ "$lead" = 1 ]; then\n'
    '    ' + _TAKE + '"$@" >"$d/$k.out" 2>"$d/$k.err" </dev/null; set -- "$k" "$?"; ' + _MARK + ' >"$d/$k.m" )\n'
    '  else\n'
    '    ' + _TAKE + '"$@" >"$d/$k.out" 2>"$d/$k.err" </dev/null; set -- "$k" "$?"; ' + _MARK + ' >"$d/$k.m" ) &\n'
    '  fi\n'
    '  shift "$c"; k=$((k + 1))\n'
    'done\n'
    'wait\n'
    'i=0; set --\n'
    'while [ "$i" -lt "$k" ]; do\n'
    '  [ -s "$d/$i.m" ] || printf "\\n@@%s %s %s\\n" "$nonce" "$i" -2 >"$d/$i.m"\n'
    '  set -- "$@" "$d/$i.out" "$d/$i.m"; i=$((i + 1))\n'
    'done\n'
    'cat -- "$@" 2>/dev/null\n'
    'i=0; set --\n'
    'while [ "$i" -lt "$k" ]; do set -- "$@" "$d/$i.err" "$d/$i.m"; i=$((i + 1)); done\n'
    'cat -- "$@" >&2\n'
)
_NONCE = re.compile(r"^[0-9a-f]{8,64}$")


def batch_argv(steps: Sequence[Sequence[str]], nonce: str, *, stop_on_failure: bool = False,
               parallel: bool = False, lead: bool = False, stdin_step: int | None = None) -> tuple[str, ...]:
    """One `sh -c` running STEPS in turn, or all at once (PARALLEL; with LEAD the first one
    alone, then the others at once). The batch's stdin goes to step STDIN_STEP (in turn only),
    no other step reads it. NONCE marks the output's parts."""
    if stdin_step is not None and (parallel or not 0 <= stdin_step < len(steps)):
        raise ValueError(f"stdin cannot go to step {stdin_step} of {len(steps)}{' at once' if parallel else ''}")
    if parallel and stop_on_failure:
        raise ValueError("parallel steps cannot stop at the first failure")
    if lead and not parallel:
        raise ValueError("lead only applies to parallel steps (in turn, the first one always leads)")
    if not _NONCE.match(nonce):
        raise ValueError(f"a batch nonce is 8 to 64 hex digits, not {nonce!r}")
    if not steps or any(not step for step in steps):
        raise ValueError("a batch needs at least one step, and no empty one")
    args: list[str] = []
    for step in steps:
        args += [str(len(step)), *step]
    flag = lead if parallel else stop_on_failure
    return ("sh", "-c", _PARALLEL if parallel else _SEQUENTIAL, "sh", nonce, "1" if flag else "0",
            "" if stdin_step is None else str(stdin_step), *args)


def _parts(text: str, count: int, nonce: str) -> tuple[list[str], list[int]]:
    """Each step's text and exit code; a step whose end marker is missing gets SKIPPED."""
    marker = re.compile(r"\n@@" + nonce + r" (\d+) (-?\d+)\n")
    texts: list[str] = []
    codes: list[int] = []
    start = 0
    for match in marker.finditer(text):
        if int(match.group(1)) != len(texts):
            break
        texts.append(text[start:match.start()])
        codes.append(int(match.group(2)))
        start = match.end()
        if len(texts) == count:
            break
    if len(texts) < count:  # the batch died in this step: what it printed so far
        texts.append(text[start:])
        codes.append(SKIPPED)
    while len(texts) < count:  # ... and never reached these
        texts.append("")
        codes.append(SKIPPED)
    return texts, codes


def split_batch(stdout: str, stderr: str, count: int, nonce: str) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each of the batch's COUNT steps, from the batch's output."""
    outs, codes = _parts(stdout, count, nonce)
    errs, _ = _parts(stderr, count, nonce)
    return list(zip(codes, outs, errs))
