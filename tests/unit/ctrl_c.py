"""Ctrl-C while one host's work runs in a worker thread, as under deployer.fleet (in small)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from deployer import interrupt


def ctrl_c_during(work: Callable[[], object], host: str = "down01", after: float = 0.2) -> tuple[BaseException | None, float]:
    """Run WORK as HOST's work in a thread and press Ctrl-C (interrupt.request) AFTER seconds:
    what WORK raised (None: it returned) and how long after Ctrl-C it ended (10 s at most)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            with interrupt.work(host):
                work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    time.sleep(after)
    pressed = time.monotonic()
    interrupt.request()
    try:
        worker.join(10)
        return (raised[0] if raised else None), time.monotonic() - pressed
    finally:
        interrupt.reset()
