"""deployer.commands.batch: several remote commands in one round trip, run here with the real `sh`."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deployer.commands.batch import SKIPPED, batch_argv, split_batch
from deployer.transport.result import Result

NONCE = "0123abcd"


def run_batch(steps: list[tuple[str, ...]], *, stop: bool = False, parallel: bool = False, lead: bool = False,
              stdin_step: int | None = None, data: bytes = b"") -> list[Result]:
    argv = batch_argv(steps, NONCE, stop_on_failure=stop, parallel=parallel, lead=lead, stdin_step=stdin_step)
    done = subprocess.run(argv, input=data, capture_output=True, check=False)
    parts = split_batch(done.stdout.decode(), done.stderr.decode(), len(steps), NONCE)
    return [Result.of(step, code, out, err, "h1") for step, (code, out, err) in zip(steps, parts)]


@pytest.mark.parametrize("parallel", [False, True])
def test_each_step_keeps_its_own_output_exit_code_and_argv(parallel: bool) -> None:
    steps = [("sh", "-c", "echo one; echo err1 >&2"), ("sh", "-c", "printf 'no newline'; exit 3"),
             ("printf", "%s\\n", "two", "lines"), ("true",)]
    out = run_batch(steps, parallel=parallel)
    assert [r.exited for r in out] == [0, 3, 0, 0]
    assert [r.stdout for r in out] == ["one\n", "no newline", "two\nlines\n", ""]
    assert [r.stderr for r in out] == ["err1\n", "", "", ""]
    assert [r.argv for r in out] == steps
    assert all(r.host == "h1" for r in out)


@pytest.mark.parametrize("parallel", [False, True])
def test_arguments_pass_through_verbatim_never_as_shell_code(parallel: bool) -> None:
    tricky = ("$(touch /tmp/pwned)", "a b", "'", '"', "*", "", "--", "\n;rm -rf /")
    out = run_batch([("printf", "[%s]\\n", *tricky), ("sh", "-c", 'echo "$#"', "sh", *tricky)], parallel=parallel)
    assert out[0].stdout == "".join(f"[{a}]\n" for a in tricky)
    assert out[1].stdout == f"{len(tricky)}\n"


@pytest.mark.parametrize("parallel", [False, True])
def test_steps_do_not_read_the_batch_stdin(parallel: bool) -> None:
    out = run_batch([("cat",), ("sh", "-c", "cat; echo done")], data=b"secret input", parallel=parallel)
    assert [r.stdout for r in out] == ["", "done\n"]


def test_a_failed_step_does_not_stop_the_others_unless_asked() -> None:
    steps = [("true",), ("false",), ("echo", "after")]
    assert [r.exited for r in run_batch(steps)] == [0, 1, 0]
    stopped = run_batch(steps, stop=True)
    assert [r.exited for r in stopped] == [0, 1, SKIPPED]
    assert stopped[2].stdout == ""


@pytest.mark.parametrize("parallel", [False, True])
def test_a_step_that_cannot_start_fails_alone(parallel: bool) -> None:
    out = run_batch([("no-such-command-here",), ("echo", "ok")], parallel=parallel)
    assert out[0].exited == 127 and out[1].stdout == "ok\n"


@pytest.mark.parametrize("parallel", [False, True])
def test_output_that_looks_like_a_marker_with_another_nonce_stays_output(parallel: bool) -> None:
    fake = "\n@@ffffffff 0 0\n"
    out = run_batch([("printf", "%s", fake), ("echo", "x")], parallel=parallel)
    assert out[0].stdout == fake and out[1].stdout == "x\n"


def test_a_batch_cut_short_reports_what_it_got() -> None:
    steps = [("echo", "a"), ("echo", "b"), ("echo", "c")]
    out = split_batch("a\n\n@@0123abcd 0 0\nb partial", "", len(steps), NONCE)
    assert out == [(0, "a\n", ""), (SKIPPED, "b partial", ""), (SKIPPED, "", "")]


@pytest.mark.parametrize("nonce", ["", "xyz12345", "0123", "0123abcd; rm"])
def test_bad_nonces_are_refused(nonce: str) -> None:
    with pytest.raises(ValueError):
        batch_argv([("true",)], nonce)


def test_empty_batches_and_steps_are_refused() -> None:
    with pytest.raises(ValueError):
        batch_argv([], NONCE)
    with pytest.raises(ValueError):
        batch_argv([("true",), ()], NONCE)


def test_parallel_steps_run_at_once(tmp_path: Path) -> None:
    # each step waits for the other's file: in turn they would deadlock (the timeout ends them)
    wait = 'touch "$1/$2"; i=0; while [ ! -e "$1/$3" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; [ -e "$1/$3" ] && echo "$2"'
    steps = [("sh", "-c", wait, "sh", str(tmp_path), "A", "B"), ("sh", "-c", wait, "sh", str(tmp_path), "B", "A")]
    out = run_batch(steps, parallel=True)
    assert [(r.exited, r.stdout) for r in out] == [(0, "A\n"), (0, "B\n")]


def test_a_parallel_step_that_dies_unfinished_is_skipped_and_the_others_keep_theirs() -> None:
    # the step's subshell is killed: no exit code was recorded for it, what it printed stays its own
    steps = [("sh", "-c", "echo one; echo e1 >&2; exit 4"), ("sh", "-c", "echo half; echo e2 >&2; kill -9 $PPID"),
             ("echo", "three")]
    out = run_batch(steps, parallel=True)
    assert [(r.exited, r.stdout, r.stderr) for r in out] == [(4, "one\n", "e1\n"), (SKIPPED, "half\n", "e2\n"),
                                                              (0, "three\n", "")]


def test_parallel_and_stop_on_failure_do_not_mix() -> None:
    with pytest.raises(ValueError):
        batch_argv([("true",)], NONCE, stop_on_failure=True, parallel=True)


def test_a_lead_step_ends_before_the_others_start(tmp_path: Path) -> None:
    flag = tmp_path / "lock"
    steps = [("sh", "-c", f"sleep 0.3; mkdir {flag}"), ("test", "-d", str(flag)), ("test", "-d", str(flag))]
    assert [r.exited for r in run_batch(steps, parallel=True, lead=True)] == [0, 0, 0]
    flag.rmdir()
    assert [r.exited for r in run_batch(steps, parallel=True)] == [0, 1, 1]  # without lead: all at once


def test_lead_needs_parallel() -> None:
    with pytest.raises(ValueError):
        batch_argv([("true",)], NONCE, lead=True)


def test_one_step_may_read_the_batch_stdin() -> None:
    steps = [("cat",), ("sh", "-c", "cat; echo second")]
    out = run_batch(steps, stdin_step=0, data=b"head bytes")
    assert [r.stdout for r in out] == ["head bytes", "second\n"]
    out = run_batch(steps, stdin_step=1, data=b"head bytes")
    assert [r.stdout for r in out] == ["", "head bytes" + "second\n"]


@pytest.mark.parametrize(("stdin_step", "parallel"), [(2, False), (-1, False), (0, True)])
def test_stdin_goes_to_one_existing_step_in_turn_only(stdin_step: int, parallel: bool) -> None:
    with pytest.raises(ValueError):
        batch_argv([("true",), ("true",)], NONCE, stdin_step=stdin_step, parallel=parallel)
