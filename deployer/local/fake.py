"""FakeClient: a stand-in local Docker for unit tests of code that holds a Client (never for tests
that claim to test Docker: those run against the testbed).

    fake = FakeClient()
    fake.add_image("trainer:v3", "sha256:abc", diff_ids=("sha256:d1",), labels={"k": "v"}, history=(10, 20))
    inspect("trainer:v3", fake).id            -> "sha256:abc"
    fake.push_streams["reg:5000/trainer"] = [{"status": "Pushed", "id": "d1"}]  # or "reg:5000/trainer:tag"
    fake.calls                                -> [("inspect_image", "trainer:v3"), ...]

A missing image raises the SDK's own docker.errors.NotFound and `fail` raises any SDK error, so
the translation in deployer.local is what runs.
"""
from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker.errors


@dataclass
class FakeAPI:
    """The slice of the SDK's low-level APIClient that deployer.local calls."""

    known: dict[str, dict[str, Any]] = field(default_factory=dict)  # ref or id -> inspect JSON
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # id -> newest first
    push_streams: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # repo -> records
    digests: dict[str, str] = field(default_factory=dict)  # repo:tag -> registry digest
    fail: dict[str, Exception] = field(default_factory=dict)  # method name -> what it raises
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    credstore_env: dict[str, str] | None = None

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    def inspect_image(self, ref: str) -> dict[str, Any]:
        self._call("inspect_image", ref)
        if ref not in self.known:
            raise docker.errors.NotFound(f"No such image: {ref}")
        return self.known[ref]

    def images(self) -> list[dict[str, Any]]:
        """`docker images` summaries: one per image id."""
        self._call("images")
        by_id = {str(a["Id"]): a for a in self.known.values()}
        return [{"Id": i, "RepoTags": a.get("RepoTags"), "RepoDigests": a.get("RepoDigests"), "Size": a.get("Size")}
                for i, a in by_id.items()]

    def history(self, image_id: str) -> list[dict[str, Any]]:
        self._call("history", image_id)
        if image_id not in self.histories:
            raise docker.errors.NotFound(f"No such image: {image_id}")
        return self.histories[image_id]

    def tag(self, image: str, repository: str, tag: str) -> bool:
        self._call("tag", image, repository, tag)
        if image not in self.known:
            raise docker.errors.NotFound(f"No such image: {image}")
        self.known[f"{repository}:{tag}"] = self.known[image]
        return True

    def push(self, repository: str, tag: str, *, stream: bool, decode: bool) -> Iterator[dict[str, Any]]:
        self._call("push", repository, tag)
        yield from self.push_streams.get(f"{repository}:{tag}", self.push_streams.get(repository, []))

    def load_image(self, data: bytes) -> Iterator[dict[str, Any]]:
        """`docker load` of a tar whose layers the store has (stage images): each config becomes an image."""
        self._call("load_image")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.extractfile("manifest.json")
            assert member is not None
            for entry in json.loads(member.read()):
                image_id = "sha256:" + str(entry["Config"]).removesuffix(".json")
                self.known[image_id] = {"Id": image_id, "RepoTags": [], "RootFS": {"Layers": entry["Layers"]}}
                yield {"stream": f"Loaded image ID: {image_id}\n"}

    def remove_image(self, image: str, force: bool = False, noprune: bool = False) -> None:
        self._call("remove_image", image)
        self.known.pop(image, None)

    def inspect_distribution(self, ref: str) -> dict[str, Any]:
        self._call("inspect_distribution", ref)
        if ref not in self.digests:
            raise docker.errors.NotFound(f"manifest unknown: {ref}")
        return {"Descriptor": {"digest": self.digests[ref]}}


@dataclass
class FakeClient:
    """A local Docker with the images given to add_image; `info` is its `docker info`."""

    api: FakeAPI = field(default_factory=FakeAPI)
    info_json: dict[str, Any] = field(default_factory=lambda: {"Driver": "overlay2", "RegistryConfig": {}})

    def info(self) -> dict[str, Any]:
        self.api._call("info")
        return self.info_json

    @property
    def calls(self) -> list[tuple[Any, ...]]:
        return self.api.calls

    @property
    def push_streams(self) -> dict[str, list[dict[str, Any]]]:
        return self.api.push_streams

    def add_image(self, ref: str, image_id: str, *, diff_ids: Sequence[str] = (), size: int = 0,
                  labels: Mapping[str, str] | None = None, history: Sequence[int] = (),
                  repo_digests: Sequence[str] = ()) -> None:
        """An image known by ref and by id; history gives its layer sizes oldest first; REPO_DIGESTS
        as a pull from a registry leaves them."""
        attrs = {"Id": image_id, "RepoTags": [ref], "RepoDigests": list(repo_digests), "Size": size, "Os": "linux",
                 "Architecture": "amd64",
                 "RootFS": {"Type": "layers", "Layers": list(diff_ids)}, "Config": {"Labels": dict(labels or {})}}
        self.api.known[ref] = self.api.known[image_id] = attrs
        self.api.histories[image_id] = [{"Size": n} for n in reversed(history)]
