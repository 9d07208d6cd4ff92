"""One call started now on a thread of its own, its result in a Future.

A ship asks for things it needs a little later while it goes on (the daemon's `docker info`, the
origin of the base image, a registry reader, a jump host's channel, the image config's upload):
each is one call, and its caller either waits for the Future or lets it go."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def in_background(name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
    """FN(*ARGS, **KWARGS) on a thread named NAME; its result, or what it raised, in the Future.

    The thread is an executor's, so the interpreter waits for it at exit, as it does for every
    executor's; a call that may block for long is ended by its caller (closing what it waits on)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        return pool.submit(fn, *args, **kwargs)
    finally:
        pool.shutdown(wait=False)
