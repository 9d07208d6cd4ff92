"""LayerSizes (deployer.local.sizes): sizes found once per ship, in the background when a host's
check is under way (`prefetch`), and what a failed background read leaves for `known`."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from deployer.errors import LocalError
from deployer.local.cache import Cache
from deployer.local.image import ImageInfo
from deployer.local.sizes import LayerSizes

D = tuple("sha256:" + c * 64 for c in "abc")
IMAGE = ImageInfo("app:1", "sha256:" + "1" * 64, D, 0, "linux", "amd64", ())


class Slow(LayerSizes):
    """Finds its sizes only once the test lets it, counting the finds."""

    def __init__(self, cache: Cache, fail: bool = False) -> None:
        super().__init__(IMAGE, None, cache)
        self.go, self.started, self.finds, self.fail = threading.Event(), threading.Event(), 0, fail

    def _find(self) -> dict[str, int]:
        self.finds += 1
        self.started.set()
        assert self.go.wait(10)
        if self.fail:
            self.fail = False
            raise LocalError("the layer store went away")
        return super()._find()


def test_known_reads_the_sizes_the_cache_remembers(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.remember_size(D[0], 100)
    cache.remember_size(D[2], 300)
    sizes = LayerSizes(IMAGE, None, cache)
    assert sizes.known() == {D[0]: 100, D[2]: 300}  # no client: unknown layers are left out


def test_a_prefetch_finds_the_sizes_once_and_known_waits_for_it(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.remember_size(D[1], 200)
    sizes = Slow(cache)
    sizes.prefetch()
    assert sizes.started.wait(10)  # under way in the background; the caller goes on
    sizes.prefetch()  # another host's check asks too: one background read serves both
    assert [t.name for t in threading.enumerate()].count("layer-sizes") == 1
    got: list[dict[str, int]] = []
    waiter = threading.Thread(target=lambda: got.append(sizes.known()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # known() waits for the background read, not a second one
    sizes.go.set()
    waiter.join(10)
    assert got == [{D[1]: 200}]
    assert sizes.known() == {D[1]: 200} and sizes.finds == 1


def test_hosts_checked_at_once_start_one_background_read(tmp_path: Path) -> None:
    sizes = Slow(Cache(tmp_path))
    ready = threading.Barrier(8)

    def ask() -> None:
        ready.wait(10)
        sizes.prefetch()

    askers = [threading.Thread(target=ask) for _ in range(8)]
    for t in askers:
        t.start()
    for t in askers:
        t.join(10)
    assert sizes.started.wait(10)
    assert [t.name for t in threading.enumerate()].count("layer-sizes") == 1
    sizes.go.set()
    assert sizes.known() == {} and sizes.finds == 1


def test_a_failed_prefetch_is_read_again_and_its_error_raised_by_known(tmp_path: Path) -> None:
    sizes = Slow(Cache(tmp_path), fail=True)
    sizes.go.set()
    sizes.prefetch()
    assert sizes.started.wait(10)
    for _ in range(100):  # the background read has failed once it no longer holds the lock
        if sizes._lock.acquire(timeout=0.1):
            sizes._lock.release()
            break
    assert sizes.finds == 1
    assert sizes.known() == {}  # read again in the caller: this time it succeeds
    assert sizes.finds == 2


def test_a_read_that_fails_in_the_caller_raises_there(tmp_path: Path) -> None:
    sizes = Slow(Cache(tmp_path), fail=True)
    sizes.go.set()
    with pytest.raises(LocalError, match="went away"):
        sizes.known()
