"""deployer.local.image through the FakeClient: a missing image is ImageNotFound (typed, with the
right hint), other SDK failures stay LocalError; history sizes oldest first; the oneshot callers."""
from __future__ import annotations

from pathlib import Path

import docker.errors
import pytest

from deployer.errors import ImageNotFound, LocalError
from deployer.local.fake import FakeClient
from deployer.local.image import MISSING_HINT, exists, history_sizes, inspect, labels
from deployer.oneshot.image import git_rev_label, local_exists

D = ("sha256:" + "1" * 64, "sha256:" + "2" * 64)


@pytest.fixture
def fake() -> FakeClient:
    client = FakeClient()
    client.add_image("team/x:1", "sha256:" + "a" * 64, diff_ids=D, size=30, history=(10, 20),
                     labels={"deployer.git_rev": "f" * 50})
    return client


def test_inspect_reads_the_image(fake: FakeClient) -> None:
    info = inspect("team/x:1", fake)
    assert (info.id, info.diff_ids, info.size, info.repo_tags) == ("sha256:" + "a" * 64, D, 30, ("team/x:1",))


def test_a_missing_image_is_image_not_found_with_a_hint(fake: FakeClient) -> None:
    with pytest.raises(ImageNotFound) as err:
        inspect("team/y:1", fake)
    assert err.value.ref == "team/y:1" and err.value.hint == MISSING_HINT
    assert err.value.message == "image team/y:1 not found in the local Docker"
    assert isinstance(err.value.__cause__, docker.errors.NotFound)


def test_other_sdk_failures_stay_local_errors_that_name_the_step(fake: FakeClient) -> None:
    fake.api.fail["inspect_image"] = docker.errors.APIError("500 Server Error", explanation="daemon is sad")
    with pytest.raises(LocalError) as err:
        exists(fake, "team/x:1")
    assert not isinstance(err.value, ImageNotFound)
    assert err.value.message == "local Docker: looking up team/x:1: daemon is sad"


def test_exists_and_labels(fake: FakeClient) -> None:
    assert exists(fake, "team/x:1") and not exists(fake, "team/x:2")
    assert labels(fake, "team/x:1") == {"deployer.git_rev": "f" * 50}
    with pytest.raises(ImageNotFound):
        labels(fake, "team/x:2")


def test_history_sizes_are_oldest_first(fake: FakeClient) -> None:
    assert history_sizes(fake, inspect("team/x:1", fake)) == [10, 20]
    assert ("history", "sha256:" + "a" * 64) in fake.calls


def test_oneshot_asks_local_for_existence_and_the_git_revision(fake: FakeClient) -> None:
    assert local_exists(fake)("team/x:1") and not local_exists(fake)("team/x:0")
    assert git_rev_label(fake, "team/x:1") == "f" * 40
    with pytest.raises(ImageNotFound) as err:
        git_rev_label(fake, "team/x:0")
    assert str(err.value) == ("image team/x:0 not found in the local Docker\n  hint: build it first (deploy build, "
                              "docker build) or check the name with `docker images`")


def test_platform_defaults_what_docker_leaves_out() -> None:
    from deployer.local.image import ImageInfo
    from deployer.ship.registry_api import platform_child

    def info(os: str, arch: str) -> ImageInfo:
        return ImageInfo("t:v", "sha256:" + "a" * 64, (), 0, os, arch, ())

    assert info("linux", "arm64").platform == "linux/arm64"
    assert info("", "").platform == "linux/amd64"  # an imported image may have neither
    index = {"manifests": [{"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
                           {"digest": "sha256:x86", "platform": {"os": "linux", "architecture": "amd64"}}]}
    assert platform_child(index, info("", "amd64").platform) == "sha256:x86"


def test_the_store_an_inspect_shows_spares_a_docker_info() -> None:
    """A ship reads the local image store from the image's inspect when it tells (no `docker info`
    before the hosts are checked); else docker info still decides (deployer.local.image.is_containerd)."""
    from deployer.local.image import store_shown

    manifest = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "a" * 64, "size": 1}
    assert store_shown({"GraphDriver": {"Name": "overlayfs"}, "Descriptor": manifest}) == "containerd"
    assert store_shown({"GraphDriver": {"Name": "overlay2", "Data": {}}, "Descriptor": None}) == "overlay2"
    assert store_shown({"GraphDriver": {"Name": "overlay2"}}) == "overlay2"  # Docker 20.10
    # snapshotter or graph driver? (btrfs, zfs, fuse-overlayfs are both): docker info tells
    for attrs in ({"GraphDriver": {"Name": "btrfs"}}, {"GraphDriver": {"Name": "overlayfs"}}, {}):
        assert store_shown(attrs) is None


def test_docker_info_is_asked_once_per_client_wherever_a_ship_reads_it(tmp_path: Path) -> None:
    """The image store, the layer store's root, the content store's and the registry settings all
    read `docker info`: one request per client (a client lives for one command)."""
    from deployer.local.client import daemon_info
    from deployer.local.image import ImageInfo, is_containerd
    from deployer.local.push import registry_config
    from deployer.local.store import LayerStore

    client = FakeClient(info_json={"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
                                   "DockerRootDir": str(tmp_path), "RegistryConfig": {"Mirrors": ["m"]}})
    image = ImageInfo("team/x:1", "sha256:" + "a" * 64, D, 30, "linux", "amd64", ())
    assert is_containerd(client)
    assert LayerStore.open(client, image) is None  # not an overlay2 store: docker save reads it
    assert registry_config(client) == {"Mirrors": ["m"]}
    assert daemon_info(client)["DockerRootDir"] == str(tmp_path)
    assert [c for c in client.calls if c[0] == "info"] == [("info",)]
    assert daemon_info(FakeClient(info_json={"Driver": "overlay2"})) == {"Driver": "overlay2"}  # another client asks
