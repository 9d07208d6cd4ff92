"""Run one function per host in parallel; one host's failure never hides the others."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from deployer.errors import DeployError, HostError
from deployer.inventory.host import Host

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The result of one host's work: its value, or the error that stopped it together with the
    value of what was done before (when the work said so, by raising Unfinished)."""

    host: Host
    value: T | None = None
    error: DeployError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Unfinished(Exception):  # a signal from a host's work to for_each_host
    """Raised by a host's work: ERROR stopped it, PARTIAL is what it had done (Outcome.value)."""

    def __init__(self, error: DeployError, partial: object) -> None:
        super().__init__(str(error))
        self.error, self.partial = error, partial


def for_each_host(hosts: Iterable[Host], work: Callable[[Host], T], parallel: int = 8) -> list[Outcome[T]]:
    """Call work(host) for every host, at most `parallel` at once; results keep host order.

    DeployErrors are captured per host; anything else is wrapped as a HostError so that
    a bug on one host still leaves the other hosts' results intact.
    """
    hosts = list(hosts)

    def one(host: Host) -> Outcome[T]:
        try:
            return Outcome(host, value=work(host))
        except Unfinished as unfinished:
            return Outcome(host, value=unfinished.partial, error=unfinished.error)  # type: ignore[arg-type]
        except DeployError as exc:
            return Outcome(host, error=exc)
        except Exception as exc:  # noqa: BLE001 - reported per host, traceback with -v
            err = HostError(host.name, f"unexpected error: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            return Outcome(host, error=err)

    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        return list(pool.map(one, hosts))
