"""Layer tar sizes known on the workstation, for hosts whose loads name every layer (OCI layout).

A layer's tar size is a fact of its diff id: the blob cache records it for every layer ever
compressed, and a readable overlay2 store computes it from tar-split without reading the
layer. Asked at most once per ship, and only when some host needs it.
"""
from __future__ import annotations

import threading

import docker

from deployer.errors import LocalError
from deployer.local.cache import Cache
from deployer.local.image import ImageInfo
from deployer.local.store import LayerStore


class LayerSizes:
    """Memoized tar sizes of an image's layers (thread-safe; unknown layers are left out)."""

    def __init__(self, image: ImageInfo, client: docker.DockerClient | None, cache: Cache | None = None) -> None:
        self.image, self._client, self._cache = image, client, cache or Cache()
        self._lock = threading.Lock()
        self._known: dict[str, int] | None = None

    def known(self) -> dict[str, int]:
        with self._lock:
            if self._known is None:
                self._known = self._find()
            return dict(self._known)

    def _find(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for diff_id in self.image.diff_ids:
            size = self._cache.raw_size(diff_id)
            if size is not None:
                sizes[diff_id] = size
        if len(sizes) < len(set(self.image.diff_ids)) and self._client is not None:
            store = LayerStore.open(self._client, self.image)
            for index, diff_id in enumerate(self.image.diff_ids):
                if store is not None and diff_id not in sizes:
                    try:
                        sizes[diff_id] = store.layer_size(index)
                    except (LocalError, OSError, ValueError):
                        continue  # an unreadable tar-split only means "unknown": the layer is sent
        return sizes
