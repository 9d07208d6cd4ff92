"""Error messages a person can read: a failed remote command is named by a short label, with its exit
code and the tail of its stderr; the whole command line only with -v."""
from __future__ import annotations

from typing import Any, NoReturn

import pytest

import deployer.cli as cli_module
from deployer.errors import CommandError
from deployer.transport.result import Result, label

SCRIPT = "\n".join(f'if [ -e /var/lib/thing{i} ]; then echo "step {i}" >&2; fi' for i in range(40))


def test_a_long_script_is_named_by_its_first_words() -> None:
    assert len(SCRIPT) > 1500
    assert label(["sh", "-c", SCRIPT, "sh", "arg"]) == "sh -c …"
    assert label(["docker", "load"]) == "docker load"
    assert label(["docker", "run", "--detach", "--name", "x" * 80]) == "docker run --detach …"


def test_a_failed_script_fits_in_a_few_lines() -> None:
    stderr = "".join(f"noise {i}\n" for i in range(50)) + "docker: " + "x" * 500 + "\nno space left on device\n"
    err = CommandError("gpu01", Result.of(["sh", "-c", SCRIPT, "sh"], 3, "", stderr), what="installing the image")
    text = str(err)
    assert text.splitlines()[0] == "gpu01: installing the image: `sh -c …` exited 3"
    assert "no space left on device" in text and SCRIPT not in text and "thing7" not in text
    assert len(text.splitlines()) <= 6 and len(text) < 700
    assert err.detail == f"command: {err.result.command}" and SCRIPT.splitlines()[5] in err.detail


def test_a_short_command_is_shown_whole() -> None:
    err = CommandError("gpu02", Result.of(["docker", "load"], 1, "", "open /var/lib: no space left\n"))
    assert str(err) == "gpu02: `docker load` exited 1\n  stderr: open /var/lib: no space left"


def _failing(**_: Any) -> NoReturn:
    raise CommandError("gpu01", Result.of(["sh", "-c", SCRIPT], 2, "", "boom\n"), what="probing the host failed")


@pytest.mark.parametrize("verbose", [False, True])
def test_the_full_command_only_with_v(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      verbose: bool) -> None:
    monkeypatch.setattr(cli_module.cli, "main", _failing)
    code = cli_module.main(["-v", "inventory", "check"] if verbose else ["inventory", "check"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: gpu01: probing the host failed: `sh -c …` exited 2\n  stderr: boom" in err
    assert ("thing39" in err) is verbose


def test_a_long_stderr_line_keeps_its_end_where_docker_puts_the_cause() -> None:
    from deployer.transport.result import LINE_MAX, Result

    line = "Error response from daemon: pull access denied for x" + "y" * 300 + ": no basic auth credentials"
    tail = Result.of(("docker", "pull", "x"), 1, stderr=line).stderr_tail()
    assert tail.startswith("Error response from daemon") and tail.endswith("no basic auth credentials")
    assert "…" in tail and len(tail) <= LINE_MAX


def test_a_json_record_names_the_error_and_what_to_do_apart() -> None:
    """Every command's --json record has the same `error` (no host or file prefix: the record names
    the host) and `hint` (what to do, if deployer knows), whatever kind of error it is."""
    from deployer.errors import LocalError, LockError, PlaybookError, error_fields

    assert error_fields(None) == {"error": None, "hint": None}
    assert error_fields(LockError("gpu01", "another deploy is in progress", hint="wait")) == {
        "error": "another deploy is in progress", "hint": "wait"}
    assert error_fields(LocalError("pushing r/t:v1 failed: denied", hint="docker login r")) == {
        "error": "pushing r/t:v1 failed: denied", "hint": "docker login r"}
    assert error_fields(PlaybookError("unknown key", file="p.yml", line=3, key_path="run.gpu")) == {
        "error": "unknown key", "hint": None}
    assert error_fields(RuntimeError("a bug")) == {"error": "a bug", "hint": None}


def test_run_prune_and_rollback_records_carry_the_error_as_ship_does() -> None:
    from deployer.errors import PreflightError
    from deployer.fleet import Outcome
    from deployer.inventory.host import Host
    from deployer.runs import prune, rollback, start

    bad = Outcome(Host("gpu01"), error=PreflightError("gpu01", "2 GPUs asked, 1 free", hint="free a GPU"))
    want = {"host": "gpu01", "ok": False, "error": "2 GPUs asked, 1 free", "hint": "free a GPU"}
    for to_json in (start.to_json, rollback.to_json):
        assert to_json([bad]) == [want]
    [pruned] = prune.to_json([bad])
    assert {k: pruned[k] for k in want} == want and pruned["removed"] == [] and pruned["bytes_freed"] == 0


def test_an_error_on_a_line_that_names_the_host_shows_its_hint_below_it() -> None:
    from deployer.errors import LockError, error_shown

    held = LockError("gpu01", "another deploy is in progress", hint="wait, or --break-lock")
    assert str(held) == "gpu01: another deploy is in progress\n  hint: wait, or --break-lock"
    assert error_shown(held) == "another deploy is in progress\n  hint: wait, or --break-lock"
    assert error_shown(RuntimeError("a bug")) == "a bug"
