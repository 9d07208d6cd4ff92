"""How `deploy` ends when a signal stops it: Ctrl-C, SIGTERM, or SIGHUP when its terminal hangs up."""
from __future__ import annotations

import os
import select
import signal

import pytest

from deployer import cli, interrupt


@pytest.mark.parametrize(("exc", "code", "said"), [(KeyboardInterrupt(), 130, "interrupted"),
                                                   (interrupt.Terminated(signal.SIGTERM), 143, "terminated"),
                                                   (interrupt.Terminated(signal.SIGHUP), 129, "hung up")])
def test_each_stop_says_what_stopped_it_and_exits_with_its_signals_code(
        capsys: pytest.CaptureFixture[str], exc: KeyboardInterrupt, code: int, said: str) -> None:
    assert cli._stopped(exc) == code
    assert capsys.readouterr().err == f"{said}\n"


def test_sigterm_and_sighup_raise_terminated_unless_already_handled_or_ignored() -> None:
    before = {sig: signal.getsignal(sig) for sig in cli.STOPPING}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # `nohup deploy ...`: a hang-up is not deployer's to handle
    try:
        with cli._signals_as_ctrl_c():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            with pytest.raises(interrupt.Terminated) as raised:
                os.kill(os.getpid(), signal.SIGTERM)
                signal.sigtimedwait([], 0.1)  # let the handler run
            assert raised.value.signum == signal.SIGTERM and raised.value.name == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]  # put back after the command
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_after_a_hang_up_what_went_to_the_terminal_goes_nowhere() -> None:
    """A hung-up terminal fails every write (EIO), and no longer says it is a terminal; the fds
    that were one when the command began write to /dev/null, so each host's clean-up runs whole."""
    master, slave = os.openpty()
    terminal = os.dup(slave)
    try:
        cli._leave((terminal,))
        assert os.write(terminal, b"progress\n") == 9
        assert not select.select([master], [], [], 0.2)[0], "it still reached the terminal"
        assert os.write(slave, b"x") == 1  # only the fd named was moved
    finally:
        for fd in (master, slave, terminal):
            os.close(fd)
