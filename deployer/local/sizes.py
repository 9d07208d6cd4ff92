"""Layer tar sizes known on the workstation, for hosts whose loads name every layer (OCI layout).

A layer's tar size is a fact of its diff id: the blob cache remembers it for every layer ever
compressed (kept when blobs are pruned), a readable overlay2 store computes it from tar-split
without reading the layer, and a readable containerd content store by decompressing the layer's
blob once (then remembered). Asked at most once per ship, and only when some host needs it.
"""
from __future__ import annotations

import contextlib
import threading
import zlib

import docker
import zstandard

from deployer.errors import LocalError
from deployer.local.cache import Cache
from deployer.local.image import ImageInfo, is_containerd
from deployer.local.store import LayerStore


class LayerSizes:
    """Memoized tar sizes of an image's layers (thread-safe; unknown layers are left out)."""

    def __init__(self, image: ImageInfo, client: docker.DockerClient | None, cache: Cache | None = None) -> None:
        self.image, self._client, self._cache = image, client, cache or Cache()
        self._lock = threading.Lock()
        self._known: dict[str, int] | None = None
        self._prefetch = threading.Lock()  # taken once, never released: one background read per ship

    def known(self) -> dict[str, int]:
        with self._lock:
            if self._known is None:
                self._known = self._find()
            return dict(self._known)

    def prefetch(self) -> None:
        """Find the sizes in the background now (a host's check is under way); `known` waits for
        them. A failure is left for `known` to meet again and raise. Once per ship: every host's
        check may ask."""
        if not self._prefetch.acquire(blocking=False):  # hosts' checks run at once: test-and-set
            return

        def run() -> None:
            with contextlib.suppress(Exception):
                self.known()

        threading.Thread(target=run, name="layer-sizes", daemon=True).start()

    def remembered(self) -> dict[str, int]:
        """Only what the cache remembers (cheap: no layer is read)."""
        sizes: dict[str, int] = {}
        for diff_id in self.image.diff_ids:
            size = self._cache.raw_size(diff_id)
            if size is not None:
                sizes[diff_id] = size
        return sizes

    def _find(self) -> dict[str, int]:
        sizes = self.remembered()
        if len(sizes) == len(set(self.image.diff_ids)) or self._client is None:
            return sizes
        store = LayerStore.open(self._client, self.image)
        if store is not None:
            for index, diff_id in enumerate(self.image.diff_ids):
                if diff_id not in sizes:
                    try:
                        sizes[diff_id] = store.layer_size(index)
                    except (LocalError, OSError, ValueError):
                        continue  # an unreadable tar-split only means "unknown": the layer is sent
        elif is_containerd(self._client):
            from deployer.local.content import ContentStore

            content = ContentStore.open(self._client, self.image)
            for index, diff_id in enumerate(self.image.diff_ids):
                if content is not None and diff_id not in sizes:
                    try:
                        sizes[diff_id] = sum(len(chunk) for chunk in content.open_layer(index))
                    except (OSError, ValueError, zlib.error, zstandard.ZstdError):
                        continue
                    self._cache.remember_size(diff_id, sizes[diff_id])
        return sizes
