"""`docker load` on the host fed while the blobs still arrive (best effort; install is the fallback).

Docker unpacks a load tar into its own tmp dir before it registers any layer; fed from the
load dir as each layer lands, that unpacking overlaps the transfer, as it does in a
`docker save | ssh host docker load` pipeline, instead of starting after the last blob.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator

from deployer.commands import ship as cmd
from deployer.errors import DeployError
from deployer.ship.conn import HostConn
from deployer.ship.tarball import Counter
from deployer.transport.result import Result

log = logging.getLogger(__name__)


class StreamLoad:
    """Name load-dir files with add() as they become final; finish() says whether the image loaded."""

    def __init__(self, conn: HostConn, docker: tuple[str, ...], load: str, image_id: str, counter: Counter,
                 note: Callable[[str], None] = lambda m: None) -> None:
        self._conn, self._docker, self._load, self._image_id = conn, docker, load, image_id
        self._counter, self._note = counter, note
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._result: Result | None = None
        self._error: DeployError | None = None
        self._abandoned = False
        self._ended = False

    def add(self, name: str, size: int) -> None:
        """Append a file of the load dir (relative NAME, SIZE bytes) to the tar docker load reads."""
        try:
            self._lines.put(cmd.load_stream_line(name, size))
        except ValueError as exc:  # e.g. a layer of 8 GiB or more: ustar cannot carry it
            self._abandoned = True
            log.info("%s: not streaming the load: %s", self._conn.name, exc)

    def start(self) -> None:
        """Start docker load on the host (call once the load dir is seeded)."""
        self._thread = threading.Thread(target=self._run, name=f"load-{self._conn.name}", daemon=True)
        self._thread.start()

    def finish(self, complete: bool) -> bool:
        """End the tar (complete) or spoil it (not); True when the host now has the image id."""
        if self._thread is None:
            return False
        if complete and not self._abandoned:
            self._lines.put(cmd.LOAD_STREAM_END)
        self._lines.put(None)
        self._thread.join()
        if not complete:
            return False
        res = self._result
        loaded = cmd.parse_loaded(res.stdout) if res is not None else ()
        if res is not None and res.ok and self._image_id in loaded:
            return True
        why = self._error or (res.stderr_tail() if res is not None and res.stderr.strip() else "no image id reported")
        if not self._abandoned:
            self._note(f"streamed docker load did not finish ({why}); loading from the staged layers")
        for other in loaded:
            if other.startswith("sha256:") and other != self._image_id:
                self._conn.run(cmd.remove_image_argv(self._docker, other), what="removing a wrong image", check=False)
        return False

    def _feed(self) -> Iterator[bytes]:
        while (line := self._lines.get()) is not None:
            self._counter.add(len(line))
            yield line
        self._ended = True

    def _run(self) -> None:
        try:
            session = self._conn.session()
            self._result = session.send(cmd.load_stream_argv(self._docker, self._load), self._feed(), check=False)
        except DeployError as exc:  # a dropped link: install loads from the staged layers instead
            self._error = exc
        finally:
            # the feeder may have quit early (remote exited): drain so finish() never blocks
            while not self._ended and self._lines.get() is not None:
                pass
