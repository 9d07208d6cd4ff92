"""Unit tests for FakeSession (the recording double other unit tests rely on)."""
from __future__ import annotations

import pytest

from deployer.errors import CommandError, ConnectError
from deployer.transport.fake import FakeSession
from deployer.transport.result import Result
from deployer.transport.session import Session, remote_command


def test_exact_beats_prefix_and_longest_prefix_wins() -> None:
    fake = (FakeSession("gpu01")
            .on(["docker"], prefix=True, stdout="any docker")
            .on(["docker", "image"], prefix=True, stdout="image cmd")
            .on(["docker", "image", "ls"], stdout="exact"))
    assert fake.run(["docker", "image", "ls"]).stdout == "exact"
    assert fake.run(["docker", "image", "rm", "x"]).stdout == "image cmd"
    assert fake.run(["docker", "ps"]).stdout == "any docker"
    assert fake.argvs() == [("docker", "image", "ls"), ("docker", "image", "rm", "x"), ("docker", "ps")]


def test_later_scripts_override_and_times_limits() -> None:
    fake = FakeSession().on(["x"], stdout="old").on(["x"], stdout="new", times=1)
    assert fake.run(["x"]).stdout == "new"
    assert fake.run(["x"]).stdout == "old"


def test_check_raises_command_error_with_result() -> None:
    fake = FakeSession("gpu01").on(["false"], exited=1, stderr="boom")
    with pytest.raises(CommandError) as err:
        fake.run(["false"])
    assert err.value.result.exited == 1 and err.value.host == "gpu01" and "boom" in str(err.value)
    assert fake.run(["false"], check=False).exited == 1


def test_unscripted_commands_fail_loudly_unless_lenient() -> None:
    with pytest.raises(AssertionError, match="unscripted command: echo 'a b'"):
        FakeSession().run(["echo", "a b"])
    assert FakeSession(strict=False).run(["echo"]).ok


def test_send_records_bytes_and_handler_sees_them() -> None:
    fake = FakeSession().on(["sha"], handler=lambda call: Result.of(call.argv, 0, str(len(call.sent))))
    assert fake.send(["sha"], [b"ab", b"cde"]).stdout == "5"
    fake.on(["cat"], stdout="")
    fake.run(["cat"], input=b"xyz")
    assert fake.sent_bytes() == b"abcdexyz"
    assert [c.kind for c in fake.calls] == ["send", "run"]


def test_stream_yields_chunks_and_raises_at_end_on_failure() -> None:
    fake = FakeSession().on(["logs"], chunks=[b"a\n", b"b\n"]).on(["bad"], stdout="partial", exited=2)
    assert list(fake.stream(["logs"])) == [b"a\n", b"b\n"]
    gen = fake.stream(["bad"])
    assert next(gen) == b"partial"
    with pytest.raises(CommandError):
        next(gen)


def test_raises_scripted_errors() -> None:
    fake = FakeSession("gpu01").on(["x"], raises=ConnectError("gpu01", "link down"))
    with pytest.raises(ConnectError):
        fake.run(["x"])


def test_closed_session_refuses_and_context_manager_closes() -> None:
    with FakeSession(strict=False) as fake:
        fake.run(["a"])
    assert fake.closed
    with pytest.raises(AssertionError, match="closed session"):
        fake.run(["a"])


def test_commands_use_the_single_quoting_point() -> None:
    fake = FakeSession(strict=False)
    fake.run(["echo", "it's $HOME; ls"])
    assert fake.commands() == [remote_command(["echo", "it's $HOME; ls"])]


def test_satisfies_the_session_protocol() -> None:
    session: Session = FakeSession()
    assert session.host == "fake"
