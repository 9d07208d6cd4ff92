"""Unit tests for the retry policy: what is retried, for how long, and what is logged."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import paramiko
import pytest

from deployer.errors import (
    AuthError,
    CommandError,
    ConnectError,
    HostKeyError,
    InventoryError,
    LockError,
    PreflightError,
    TransferError,
)
from deployer.transport.result import Result
from deployer.transport.retry import (
    GiveUp,
    budget_seconds,
    is_transient,
    retry_transient,
    retrying,
)


def flaky(failures: Sequence[BaseException], value: str = "done"):
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return value

    return fn, calls


@pytest.mark.parametrize(
    "exc",
    [
        ConnectError("gpu01", "no route"),
        TransferError("gpu01", "link dropped", transient=True),
        TimeoutError("timed out"),
        ConnectionResetError(104, "reset"),
        BrokenPipeError(32, "broken pipe"),
        EOFError(),
        paramiko.SSHException("Channel closed."),
        paramiko.ChannelException(2, "Connect failed"),
    ],
)
def test_transient_errors(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        AuthError("gpu01", "refused"),
        HostKeyError("gpu01", "changed"),
        CommandError("gpu01", Result.of(["false"], 1)),
        PreflightError("gpu01", "disk"),
        LockError("gpu01", "held"),
        TransferError("gpu01", "sha256 mismatch"),
        InventoryError("bad"),
        paramiko.AuthenticationException("nope"),
        paramiko.BadHostKeyException("h", paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()),
        FileNotFoundError("x"),
        ValueError("bug"),
    ],
)
def test_permanent_errors(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_retries_transient_until_success_and_logs_each_retry(caplog: pytest.LogCaptureFixture) -> None:
    fn, calls = flaky([ConnectError("gpu01", "cannot reach 10.0.0.1:22"), TransferError("gpu01", "reset", transient=True)])
    seen: list[int] = []
    with caplog.at_level(logging.WARNING, logger="deployer.retry"):
        assert retrying(fn, what="send blob", host="gpu01", budget_s=5, initial_s=0.01, max_wait_s=0.02,
                        on_retry=lambda n, e: seen.append(n)) == "done"
    assert len(calls) == 3 and seen == [1, 2]
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert msgs[0].startswith("gpu01: send blob failed (attempt 1): cannot reach 10.0.0.1:22; retrying in")


@pytest.mark.parametrize("exc", [AuthError("gpu01", "refused"), HostKeyError("gpu01", "changed"),
                                 CommandError("gpu01", Result.of(["false"], 1)), PreflightError("gpu01", "disk")])
def test_never_retries_permanent_errors(exc: BaseException) -> None:
    fn, calls = flaky([exc, exc])
    with pytest.raises(type(exc)):
        retrying(fn, what="x", host="gpu01", budget_s=5, initial_s=0.01)
    assert len(calls) == 1


def test_gives_up_after_the_budget_with_the_last_error() -> None:
    errors = [ConnectError("gpu01", f"attempt {i}") for i in range(1000)]
    fn, calls = flaky(errors)
    with pytest.raises(ConnectError) as err:
        retrying(fn, what="connect", host="gpu01", budget_s=0.3, initial_s=0.01, max_wait_s=0.05)
    assert 2 <= len(calls) < 100
    assert err.value is errors[len(calls) - 1]


def test_low_level_transient_errors_are_translated_when_giving_up() -> None:
    fn, _ = flaky([ConnectionResetError(104, "Connection reset by peer")] * 100)
    with pytest.raises(ConnectError) as err:
        retrying(fn, what="send", host="gpu01", budget_s=0.05, initial_s=0.01)
    assert err.value.host == "gpu01" and "send failed" in str(err.value)
    assert isinstance(err.value.__cause__, ConnectionResetError)


def test_budget_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEPLOYER_RETRY_BUDGET", raising=False)
    assert budget_seconds() == 120.0
    monkeypatch.setenv("DEPLOYER_RETRY_BUDGET", "7.5")
    assert budget_seconds() == 7.5
    monkeypatch.setenv("DEPLOYER_RETRY_BUDGET", "soon")
    assert budget_seconds() == 120.0


def test_env_budget_bounds_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYER_RETRY_BUDGET", "0")
    fn, calls = flaky([ConnectError("gpu01", "down")] * 10)
    with pytest.raises(ConnectError):
        retrying(fn, what="connect", host="gpu01", initial_s=0.01)
    assert len(calls) == 1


def test_decorator_form() -> None:
    class H:
        name = "gpu02"

    attempts: list[int] = []

    @retry_transient("probe", budget_s=5, initial_s=0.01)
    def probe(host: H) -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectError(host.name, "down")
        return host.name

    assert probe(H()) == "gpu02" and len(attempts) == 2


def test_ctrl_c_ends_the_back_off_and_starts_no_new_attempt() -> None:
    """A host's work in its back-off when Ctrl-C comes (deployer.interrupt): it stops then, with
    Interrupted, instead of waiting out the back-off and trying again."""
    from deployer import interrupt
    from deployer.errors import Interrupted

    fn, calls = flaky([ConnectError("gpu01", "cannot reach 10.0.0.1:22")] * 10)
    caught: list[BaseException] = []

    def host_work() -> None:
        interrupt.begin_work("gpu01")
        try:
            retrying(fn, what="connect", host="gpu01", budget_s=60, initial_s=30, max_wait_s=30)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            caught.append(exc)
        finally:
            interrupt.end_work()

    worker = threading.Thread(target=host_work)
    began = time.monotonic()
    worker.start()
    try:
        time.sleep(0.2)  # the first attempt failed; the back-off is 30 s
        interrupt.request()
        worker.join(timeout=10)
    finally:
        interrupt.reset()
    assert not worker.is_alive() and time.monotonic() - began < 10
    assert len(calls) == 1 and len(caught) == 1 and isinstance(caught[0], Interrupted)



def test_an_unreachable_host_gives_up_after_its_shorter_budget_a_failed_handshake_does_not() -> None:
    refused = [ConnectError("gpu01", "cannot connect to 10.0.0.1:22: Connection refused", unreachable=True)] * 1000
    fn, calls = flaky(refused)
    began = time.monotonic()
    with pytest.raises(ConnectError) as err:
        retrying(fn, what="connect", host="gpu01", budget_s=30, initial_s=0.01, max_wait_s=0.02, give_up=GiveUp(0.2))
    assert time.monotonic() - began < 5 and 2 <= len(calls) and err.value is refused[len(calls) - 1]
    # a failed handshake is no sign of a host that is down (sshd's MaxStartups): the whole budget
    handshakes = [ConnectError("gpu01", "SSH handshake with 10.0.0.1:22 failed: Error reading SSH protocol banner")] * 1000
    fn, calls = flaky(handshakes)
    began = time.monotonic()
    with pytest.raises(ConnectError):
        retrying(fn, what="connect", host="gpu01", budget_s=0.6, initial_s=0.01, max_wait_s=0.02, give_up=GiveUp(0.2))
    assert time.monotonic() - began >= 0.6
    # without UNREACHABLE_S (a host reached before), a refusal gets the whole budget too
    fn, calls = flaky(refused)
    began = time.monotonic()
    with pytest.raises(ConnectError):
        retrying(fn, what="connect", host="gpu01", budget_s=0.6, initial_s=0.01, max_wait_s=0.02)
    assert time.monotonic() - began >= 0.6


def test_only_the_hosts_it_names_give_up_early() -> None:
    """A send through a relay: the relay refusing is given up soon, the host itself refusing is not."""
    def through_relay(refusing: str) -> tuple[float, int]:
        fn, calls = flaky([ConnectError(refusing, "cannot connect to 10.0.0.9:22: Connection refused",
                                        unreachable=True)] * 1000)
        began = time.monotonic()
        with pytest.raises(ConnectError) as err:
            retrying(fn, what="sending blob", host="gpu02", budget_s=0.8, initial_s=0.01, max_wait_s=0.02,
                     give_up=GiveUp(0.1, of=lambda host: host != "gpu02"))
        assert err.value.host == refusing
        return time.monotonic() - began, len(calls)

    relay_spent, relay_calls = through_relay("relay01")
    host_spent, host_calls = through_relay("gpu02")
    assert relay_spent < 0.6 and relay_calls >= 2
    assert host_spent >= 0.8 and host_calls > relay_calls
