"""The export pool: one export for the first wave of hosts, no waiting on hosts that never come."""
from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest

from deployer.local.image import ImageInfo
from deployer.ship import exports as exports_mod
from deployer.ship.exports import ExportPool

IMAGE = ImageInfo("t:v", "sha256:" + "f" * 64, ("sha256:a", "sha256:b", "sha256:c"), 3, "linux", "amd64", ())


class StubExporter:
    """Stands in for deployer.local.export.Exporter (no docker): records what it was asked for."""

    started: ClassVar[list[StubExporter]] = []

    def __init__(self, image: ImageInfo, wanted: dict[str, set[str]], level: int = 3, client: Any = None) -> None:
        self.wanted = {codec: frozenset(ids) for codec, ids in wanted.items() if ids}
        self.closed = False
        self.made: set[str] = set()  # layers compressed already (or taken from the cache)

    def start(self) -> StubExporter:
        StubExporter.started.append(self)
        return self

    def close(self) -> None:
        self.closed = True

    def unmade(self, codec: str) -> frozenset[str]:
        return self.wanted.get(codec, frozenset()) - self.made

    def narrow(self, codec: str, keep: set[str]) -> bool:
        self.narrowed = (codec, set(keep))
        self.wanted = {codec: frozenset(keep)}
        return True


@pytest.fixture(autouse=True)
def stub(monkeypatch: pytest.MonkeyPatch) -> None:
    StubExporter.started = []
    monkeypatch.setattr(exports_mod, "Exporter", StubExporter)


def test_one_export_for_the_wave_and_reuse_for_subsets() -> None:
    pool = ExportPool(IMAGE, 3, expected=3, grace_s=30)
    got: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda n=n, ids=ids: got.__setitem__(n, pool.join("zstd", ids)))
               for n, ids in (("h1", {"sha256:b", "sha256:c"}), ("h2", {"sha256:c"}))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert StubExporter.started == []  # still waiting for the third host
    pool.leave()  # the third host is up to date
    for t in threads:
        t.join(5)
    assert len(StubExporter.started) == 1 and got["h1"] is got["h2"]
    assert got["h1"].wanted == {"zstd": frozenset({"sha256:b", "sha256:c"})}
    # later hosts: a subset reuses it, anything else gets its own export
    assert pool.join("zstd", {"sha256:b"}) is got["h1"]
    assert pool.join("zstd", set()) is got["h1"]  # only the config
    other = pool.join("zstd", {"sha256:a", "sha256:b"})
    assert other is not got["h1"] and other.wanted == {"zstd": frozenset({"sha256:a", "sha256:b"})}
    assert pool.join("gzip", {"sha256:c"}) not in (got["h1"], other)
    pool.close()
    assert all(e.closed for e in StubExporter.started)


def test_a_head_start_becomes_the_waves_export_narrowed_to_what_it_needs() -> None:
    head = StubExporter(IMAGE, {"zstd": set(IMAGE.diff_ids)}).start()
    pool = ExportPool(IMAGE, 3, expected=1, head_start=head)
    assert pool.join("zstd", {"sha256:c"}) is head
    assert head.narrowed == ("zstd", {"sha256:c"}) and not head.closed
    assert StubExporter.started == [head]  # no second export
    pool.close()
    assert head.closed


def test_a_host_that_leaves_last_does_not_cancel_the_head_start_a_waiting_host_will_take() -> None:
    """The tarball host is planned first and waits for the wave; the registry host reports last:
    the wave takes the head start (with what it compressed so far), not a new export from zero."""
    head = StubExporter(IMAGE, {"zstd": set(IMAGE.diff_ids)}).start()
    pool = ExportPool(IMAGE, 3, expected=2, grace_s=30, head_start=head)
    got: list[Any] = []
    joiner = threading.Thread(target=lambda: got.append(pool.join("zstd", {"sha256:b", "sha256:c"})))
    joiner.start()
    deadline = time.monotonic() + 5
    while not pool._wanted and time.monotonic() < deadline:  # the joiner is in, waiting for the wave
        time.sleep(0.01)
    pool.leave()
    joiner.join(5)
    assert got == [head] and not head.closed and head.narrowed == ("zstd", {"sha256:b", "sha256:c"})
    assert StubExporter.started == [head]


def test_a_host_the_head_start_serves_exactly_does_not_wait_for_a_host_that_is_down() -> None:
    """A re-ship: the head start took every layer but the new top one from the cache, which is all
    the host lacks. Waiting for the others' plans could only narrow it: the host takes it at once,
    not after the grace (a host that is down never reports before it)."""
    head = StubExporter(IMAGE, {"zstd": set(IMAGE.diff_ids)}).start()
    head.made = {"sha256:a", "sha256:b"}
    pool = ExportPool(IMAGE, 3, expected=3, grace_s=30, head_start=head)
    start = time.monotonic()
    assert pool.join("zstd", {"sha256:c"}) is head
    assert pool.join("zstd", {"sha256:b", "sha256:c"}) is head  # a second host: the same, at once
    assert time.monotonic() - start < 1 and not hasattr(head, "narrowed")
    pool.leave()  # the third host, at last (it failed): the wave narrows the head start to their needs
    assert head.narrowed == ("zstd", {"sha256:b", "sha256:c"}) and head in pool.exporters
    assert StubExporter.started == [head] and not head.closed
    assert pool.join("zstd", {"sha256:c"}) is head  # a host planned later finds it too
    pool.close()
    assert head.closed


def test_a_host_waits_for_the_wave_while_the_head_start_makes_layers_it_does_not_need() -> None:
    head = StubExporter(IMAGE, {"zstd": set(IMAGE.diff_ids)}).start()  # nothing made yet
    pool = ExportPool(IMAGE, 3, expected=2, grace_s=0.3, head_start=head)
    start = time.monotonic()
    assert pool.join("zstd", {"sha256:c"}) is head  # after the grace: the wave narrows it first
    assert time.monotonic() - start >= 0.25 and head.narrowed == ("zstd", {"sha256:c"})


@pytest.mark.parametrize("how", ["leave", "gzip"])
def test_a_head_start_nobody_needs_is_cancelled(how: str) -> None:
    head = StubExporter(IMAGE, {"zstd": set(IMAGE.diff_ids)}).start()
    pool = ExportPool(IMAGE, 3, expected=1, head_start=head)
    if how == "leave":  # the only host is up to date, failed, or takes the registry route
        pool.leave()
    else:  # the host wants another codec
        assert pool.join("gzip", {"sha256:c"}) is not head
    assert head.closed


def test_a_push_shares_the_head_start_and_the_wave_keeps_its_layers() -> None:
    """A registry push begun while the hosts are checked takes its blobs from the head start: the
    wave narrows it to what the tarball host needs plus what the push takes, and starts nothing."""
    head = StubExporter(IMAGE, {"zstd": set(IMAGE.diff_ids)}).start()
    pool = ExportPool(IMAGE, 3, expected=2, head_start=head)
    assert pool.share("zstd", {"sha256:a", "sha256:b"}) == [head]
    pool.leave()  # the registry host
    assert pool.join("zstd", {"sha256:c"}) is head
    assert head.narrowed == ("zstd", {"sha256:a", "sha256:b", "sha256:c"})
    assert StubExporter.started == [head] and not head.closed
    pool.close()
    assert head.closed


def test_a_push_takes_what_the_hosts_exports_make_and_exports_the_rest_once() -> None:
    head = StubExporter(IMAGE, {"zstd": set(IMAGE.diff_ids)}).start()
    pool = ExportPool(IMAGE, 3, expected=1, head_start=head)
    assert pool.join("zstd", {"sha256:c"}) is head  # the wave: the head start narrowed to c
    shared = pool.share("zstd", {"sha256:a", "sha256:b", "sha256:c"})
    assert shared[0] is head and len(shared) == 2
    assert shared[1].wanted == {"zstd": frozenset({"sha256:a", "sha256:b"})}  # only what no export makes
    assert pool.late("zstd", {"sha256:a"}) is shared[1]  # a host planned later uses the push's export
    assert pool.share("gzip", {"sha256:a"})[0] not in shared  # another codec: an export of its own
    pool.close()
    assert all(e.closed for e in StubExporter.started)


@pytest.mark.parametrize("how", ["leave", "gzip"])
def test_a_head_start_a_push_shares_goes_on_for_the_push_alone(how: str) -> None:
    head = StubExporter(IMAGE, {"zstd": set(IMAGE.diff_ids)}).start()
    pool = ExportPool(IMAGE, 3, expected=1, head_start=head)
    assert pool.share("zstd", {"sha256:b"}) == [head]
    if how == "leave":  # the only tarball host turned out to be up to date
        pool.leave()
    else:  # it wants gzip blobs
        assert pool.join("gzip", {"sha256:c"}) is not head
    assert not head.closed and head.narrowed == ("zstd", {"sha256:b"})
    pool.close()
    assert head.closed


def test_the_wave_uses_the_export_of_a_push_that_began_before_it() -> None:
    pool = ExportPool(IMAGE, 3, expected=2)
    [push] = pool.share("zstd", set(IMAGE.diff_ids))  # no head start: the push's own export
    pool.leave()  # the registry host
    assert pool.join("zstd", {"sha256:b", "sha256:c"}) is push
    assert StubExporter.started == [push]
    # a wave that needs more than the push's export makes gets an export of its own
    pool2 = ExportPool(IMAGE, 3, expected=1)
    [top] = pool2.share("zstd", {"sha256:c"})
    assert pool2.join("zstd", {"sha256:b", "sha256:c"}) is not top


def test_a_push_with_no_export_to_share_gets_one_of_its_own() -> None:
    pool = ExportPool(IMAGE, 3, expected=1)
    [own] = pool.share("zstd", {"sha256:a"})
    assert StubExporter.started == [own] and own.wanted == {"zstd": frozenset({"sha256:a"})}
    [config_only] = pool.share("zstd", set())  # every layer is in the registry: only the config
    assert config_only.wanted == {}


def test_a_host_that_never_reports_delays_the_wave_only_by_the_grace() -> None:
    pool = ExportPool(IMAGE, 3, expected=2, grace_s=0.3)
    start = time.monotonic()
    exporter = pool.join("zstd", {"sha256:c"})
    assert 0.25 <= time.monotonic() - start < 2
    assert StubExporter.started == [exporter]


def test_a_host_takes_its_blobs_in_the_order_the_export_finishes_them() -> None:
    from pathlib import Path

    from deployer.local.cache import Blob
    from deployer.ship.route import _as_available

    def blob(diff: str, codec: str = "zstd") -> Blob:
        return Blob(diff, codec, 3, Path("/c") / diff, "sha256:" + diff, 1, 2)

    class Stub:
        # docker save wrote layer c first: the host must not wait for a and b to start sending
        def __init__(self) -> None:
            self.arrivals = [("zstd", "c"), ("zstd", "x"), ("gzip", "a"), ("zstd", "a"), ("zstd", "b")]
            self.made: set[tuple[str, str]] = set()
            self.streams: list[bool] = []

        def next_blob(self, codec: str, order: list[str], taken: set[str], stream: bool) -> Blob | None:
            self.streams.append(stream)
            while True:  # the first of ORDER that is made, else wait for the next one made
                ready = [d for d in order if d not in taken and (codec, d) in self.made]
                if ready:
                    return blob(ready[0], codec)
                if not self.arrivals:
                    return None
                self.made.add(self.arrivals.pop(0))

        def blob(self, diff: str, codec: str) -> Blob:
            return blob(diff, codec)  # the cache fallback for what this export did not produce

    stub = Stub()
    got = list(_as_available(stub, "zstd", ["a", "b", "c", "d"], stream=True))  # type: ignore[arg-type]
    assert [b.diff_id for b in got] == ["c", "a", "b", "d"] and {b.codec for b in got} == {"zstd"}
    assert set(stub.streams) == {True}
    assert list(_as_available(Stub(), "zstd", [])) == []  # type: ignore[arg-type]


def test_a_small_top_layer_goes_out_before_the_layer_below_it() -> None:
    """Once both are compressed, a small top blob is sent first (the loader then loads the image as
    the layer below lands); a big one, or one not compressed yet, keeps image order."""
    from pathlib import Path

    from deployer.local.cache import Blob
    from deployer.ship.route import SMALL_TOP, _as_available

    class Stub:
        def __init__(self, top_size: int, made: set[str]) -> None:
            self.top_size, self.made = top_size, made

        def _blob(self, diff: str) -> Blob:
            return Blob(diff, "zstd", 3, Path("/c") / diff, "sha256:" + diff, self.top_size if diff == "d" else 1 << 30, 2)

        def next_blob(self, codec: str, order: list[str], taken: set[str], stream: bool) -> Blob | None:
            ready = [d for d in order if d not in taken and d in self.made]
            if not ready and self.made != {"a", "b", "c", "d"}:
                self.made = {"a", "b", "c", "d"}  # the export finishes the rest
                return self.next_blob(codec, order, taken, stream)
            return self._blob(ready[0]) if ready else None

        def cached(self, diff: str, codec: str) -> Blob | None:
            return self._blob(diff) if diff in self.made else None

        def blob(self, diff: str, codec: str) -> Blob:
            return self._blob(diff)

        def wait_blob(self, diff: str, codec: str, timeout: float) -> Blob | None:
            self.waited.append((diff, timeout))
            if diff in self.compressing:  # it is ready within the wait
                self.made.add(diff)
            return self.cached(diff, codec)

        waited: list[tuple[str, float]]
        compressing: set[str]

    def order(top_size: int, made: set[str], small_top: int = SMALL_TOP, top_wait_s: float = 0.0,
              compressing: frozenset[str] = frozenset(), waited: list[tuple[str, float]] | None = None) -> list[str]:
        stub = Stub(top_size, made)
        stub.waited, stub.compressing = waited if waited is not None else [], set(compressing)
        return [b.diff_id for b in _as_available(stub, "zstd", ["a", "b", "c", "d"],  # type: ignore[arg-type]
                                                 stream=True, small_top=small_top, top_wait_s=top_wait_s)]

    everything = {"a", "b", "c", "d"}
    assert order(800_000, set(everything)) == ["a", "b", "d", "c"]
    assert order(SMALL_TOP + 1, set(everything)) == ["a", "b", "c", "d"]
    assert order(800_000, set(everything), small_top=0) == ["a", "b", "c", "d"]
    assert order(800_000, {"a", "b", "c"}) == ["a", "b", "c", "d"]  # the top was not compressed yet
    # a relay's queue (top_wait_s): the layer below is ready while the top compresses; a short wait
    # for the top lets it go first there too, and a top that takes longer keeps image order
    waited: list[tuple[str, float]] = []
    assert order(800_000, {"a", "b", "c"}, top_wait_s=2.0, compressing=frozenset({"d"}), waited=waited) == \
        ["a", "b", "d", "c"]
    assert waited == [("d", 2.0)]
    assert order(800_000, {"a", "b", "c"}, top_wait_s=2.0) == ["a", "b", "c", "d"]
    assert order(SMALL_TOP + 1, {"a", "b", "c"}, top_wait_s=2.0, compressing=frozenset({"d"})) == ["a", "b", "c", "d"]
