"""One export for the whole fleet, without making every host wait for the slowest one.

The first hosts to finish planning form a wave (all of the first `parallel`, or whoever has
arrived `grace_s` after the first): one Exporter (one `docker save`) compresses the union of
their missing layers. A host planned later reuses an export that covers its layers, else gets
its own (blobs already in the local cache are not compressed again). So an unreachable host
delays nobody by more than the grace period.

A head start (an export of every layer, begun while the hosts are still being connected to
and planned) becomes the wave's export once the wave knows what it needs, narrowed to that;
if no host needs it, it is cancelled. A host for which it makes exactly what is left of it to
make (a first ship's host lacks every layer; a re-ship's, the new one) takes it without waiting
for the wave, so a host that is down delays it not at all; the last host to report narrows it.

A registry push of the same blobs (deployer.ship.registry) shares these exports instead of
compressing the layers a second time: share() hands it the exports that make its layers (the
head start's it keeps from being narrowed away or cancelled) and one for the rest, which later
hosts can use too.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from deployer.local.client import Client
from deployer.local.export import Exporter
from deployer.local.image import ImageInfo

log = logging.getLogger(__name__)


class ExportPool:
    """Hands each tarball host an Exporter that covers its missing layers."""

    def __init__(self, image: ImageInfo, level: int, expected: int, *, grace_s: float = 5.0,
                 client: Client | None = None, head_start: Exporter | None = None) -> None:
        self.image = image
        self.level = level
        self.grace_s = grace_s
        self._client = client
        self._cond = threading.Condition()
        self._expected = expected  # hosts that will report (join or leave) before the wave forms
        self._reported = 0
        self._first: float | None = None
        self._wanted: dict[str, set[str]] = {}
        self._wave_started = False
        self.exporters: list[Exporter] = []
        self._head_start = head_start
        self._shared: set[str] = set()  # layers a push takes from the head start: kept in it

    def leave(self) -> None:
        """A host that needs no export (failed, up to date, or registry) reports in."""
        with self._cond:
            self._reported += 1
            if self._reported >= self._expected and not self._wave_started:
                if self._wanted:  # hosts that joined took the head start without waiting: the last
                    self._form_wave()  # to report narrows it to what they need
                else:  # no host joined: no wave will take the head start
                    self._drop_head_start()
            self._cond.notify_all()

    def join(self, codec: str, diff_ids: Iterable[str]) -> Exporter:
        """An export with `codec` blobs of these layers (and the config); may wait for the wave.

        A host for which the head start makes exactly what is left of it to make (a first ship's
        host lacks every layer; a re-ship's, the one new layer) takes it at once: waiting for the
        others (up to the grace, for a host that is down) would only let the wave narrow it."""
        wanted = set(diff_ids)
        with self._cond:
            self._reported += 1
            if not self._wave_started:
                self._first = self._first or time.monotonic()
                self._wanted.setdefault(codec, set()).update(wanted)
                self._cond.notify_all()
                head = self._head_start
                if (head is not None and self._reported < self._expected
                        and wanted <= head.wanted.get(codec, frozenset()) and head.unmade(codec) <= wanted):
                    return head  # the wave, when it forms, narrows it to what all who took it need
                deadline = self._first + self.grace_s
                while not self._wave_started and self._reported < self._expected:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not self._wave_started:
                    self._form_wave()
            for exporter in self.exporters:
                if wanted <= exporter.wanted.get(codec, frozenset()):  # any export has the config
                    return exporter
            return self._start({codec: wanted})

    def late(self, codec: str, diff_ids: Iterable[str]) -> Exporter:
        """An export for a host that took the tarball route after it reported in (no wave waits)."""
        wanted = set(diff_ids)
        with self._cond:
            for exporter in self.exporters:
                if wanted <= exporter.wanted.get(codec, frozenset()):
                    return exporter
            return self._start({codec: wanted})

    def share(self, codec: str, diff_ids: Iterable[str]) -> list[Exporter]:
        """Exports that together make these layers' CODEC blobs (and the config), for a push that
        runs beside the hosts' sends: those that make some of them already (the head start
        included), then one for the rest, which hosts planned later may use as well. Never waits
        for the wave; the pool closes them all."""
        wanted = set(diff_ids)
        with self._cond:
            head = self._head_start
            found = [e for e in ([head] if head is not None else []) + self.exporters
                     if wanted & e.wanted.get(codec, frozenset())]
            if head is not None and head in found:
                self._shared |= wanted & head.wanted.get(codec, frozenset())
            rest = wanted.difference(*(e.wanted.get(codec, frozenset()) for e in found))
            if found:
                log.info("the push of %s takes %d of its %d layers from the hosts' exports",
                         self.image.ref, len(wanted) - len(rest), len(wanted))
            if rest or not found:
                found.append(self._start({codec: rest}))
            return found

    def _form_wave(self) -> None:
        self._start_wave(self._wanted)
        self._wave_started = True
        self._cond.notify_all()

    def _start_wave(self, wanted: dict[str, set[str]]) -> None:
        head = self._head_start
        codec = next(iter(head.wanted), None) if head is not None else None
        # a head start a push shares stays, whole if it cannot narrow (it makes every layer)
        if head is not None and codec in wanted and (head.narrow(codec, wanted[codec] | self._shared)
                                                     or self._shared):
            self._head_start = None
            self.exporters.append(head)  # the wave's export already has a head start
            wanted = {c: ids for c, ids in wanted.items() if c != codec}
        self._drop_head_start()
        # a push that began before the wave may have an export of these blobs already (share())
        wanted = {c: ids for c, ids in wanted.items()
                  if not any(ids <= e.wanted.get(c, frozenset()) for e in self.exporters)}
        if wanted:
            self._start(wanted)

    def _drop_head_start(self) -> None:
        head, self._head_start = self._head_start, None
        if head is None:
            return
        codec = next(iter(head.wanted), None)
        if self._shared and codec is not None:  # a push takes blobs from it: it makes those (or all)
            if not head.narrow(codec, self._shared):
                log.info("the head-start export of %s goes on whole for the registry push", self.image.ref)
            self.exporters.append(head)
            return
        log.info("no host needs the head-start export of %s; cancelling it", self.image.ref)
        head.close()

    def _start(self, wanted: dict[str, set[str]]) -> Exporter:
        exporter = Exporter(self.image, wanted, level=self.level, client=self._client).start()
        self.exporters.append(exporter)
        return exporter

    def close(self) -> None:
        self._drop_head_start()
        for exporter in self.exporters:
            exporter.close()
        if self.exporters:
            prune = getattr(getattr(self.exporters[0], "cache", None), "prune", None)
            if prune is not None:
                try:
                    prune()
                except OSError as exc:  # a full or read-only cache dir must not fail a finished ship
                    log.warning("could not prune the local blob cache: %s", exc)
