"""deployer.background: one call on a thread of its own, its result or its error in a Future."""
from __future__ import annotations

import threading

import pytest

from deployer.background import in_background


def test_the_call_runs_on_its_own_named_thread_with_its_arguments() -> None:
    release = threading.Event()

    def work(a: int, *, b: int) -> tuple[int, str]:
        release.wait(5)
        return a + b, threading.current_thread().name

    done = in_background("find-origin", work, 1, b=2)
    assert not done.done()  # started, and the caller goes on meanwhile
    release.set()
    total, thread = done.result(timeout=5)
    assert total == 3 and thread.startswith("find-origin") and thread != threading.current_thread().name


def test_what_the_call_raised_comes_from_the_future() -> None:
    def fail() -> None:
        raise OSError("registry refused the config")

    with pytest.raises(OSError, match="refused the config"):
        in_background("upload", fail).result(timeout=5)
