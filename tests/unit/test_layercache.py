"""The workstation's record of each host's images (deployer.layercache): what a ship need not inspect."""
from __future__ import annotations

from pathlib import Path

from deployer import layercache
from deployer.commands.layers import Listing
from deployer.inventory.host import Host

D = ["sha256:" + c * 64 for c in "abcd"]
I1, I2, I3 = ("sha256:" + c * 64 for c in "123")


def test_remembers_what_the_host_has_now_and_forgets_what_it_dropped(tmp_path: Path) -> None:
    path = tmp_path / "layers.json"
    gpu01 = Host("gpu01", {"ansible_host": "10.0.0.1", "ansible_user": "ml"})
    assert layercache.remembered(gpu01, path) == {}
    layercache.remember(gpu01, Listing(frozenset(), {I1: tuple(D[:2]), I2: tuple(D[:3]), I3: ()}), {}, path)
    # an image listed without layers (the containerd store lacking its content) is not remembered
    assert layercache.remembered(gpu01, path) == {I1: tuple(D[:2]), I2: tuple(D[:3])}
    # next listing: I1 known and still there, I2 gone, I3 inspected now with its layers
    layercache.remember(gpu01, Listing(frozenset([I1]), {I3: (D[3],)}), layercache.remembered(gpu01, path), path)
    assert layercache.remembered(gpu01, path) == {I1: tuple(D[:2]), I3: (D[3],)}


def test_keyed_by_the_machine_not_the_inventory_name(tmp_path: Path) -> None:
    path = tmp_path / "layers.json"
    a = Host("gpu01", {"ansible_host": "10.0.0.1"})
    alias = Host("trainer", {"ansible_host": "10.0.0.1"})
    other = Host("gpu01", {"ansible_host": "10.0.0.2"})
    layercache.remember(a, Listing(frozenset(), {I1: tuple(D[:2])}), {}, path)
    assert layercache.remembered(alias, path) == {I1: tuple(D[:2])}
    assert layercache.remembered(other, path) == {}


def test_a_corrupt_file_is_an_empty_cache(tmp_path: Path) -> None:
    path = tmp_path / "layers.json"
    host = Host("gpu01", {"ansible_host": "10.0.0.1"})
    for text in ("{not json", "[]", '{"@10.0.0.1:22": {"' + I1 + '": "oops"}}'):
        path.write_text(text)
        assert layercache.remembered(host, path) == {}
    layercache.remember(host, Listing(frozenset(), {I1: (D[0],)}), {}, path)  # and is replaced
    assert layercache.remembered(host, path) == {I1: (D[0],)}


def test_an_image_a_ship_put_there_is_added_to_what_the_host_has(tmp_path: Path) -> None:
    path = tmp_path / "layers.json"
    host = Host("gpu01", {"ansible_host": "10.0.0.1"})
    layercache.add(host, I1, D[:2], path)  # nothing listed yet
    layercache.add(host, I2, D[:3], path)
    layercache.add(host, I3, [], path)  # no layers: nothing to remember
    assert layercache.remembered(host, path) == {I1: tuple(D[:2]), I2: tuple(D[:3])}
    # the next full listing is the truth again
    layercache.remember(host, Listing(frozenset([I2]), {}), layercache.remembered(host, path), path)
    assert layercache.remembered(host, path) == {I2: tuple(D[:3])}


def test_a_hosts_last_probe_is_recalled_while_fresh_and_asking_the_same(tmp_path: Path) -> None:
    """The light check of a re-ship (deployer.ship.recall) plans from the last full check's probe."""
    path = tmp_path / "layers.json"
    host = Host("gpu01", {"ansible_host": "10.0.0.1"})
    alias = Host("trainer", {"ansible_host": "10.0.0.1"})
    argv = ("sh", "-c", "probe", "sh", "/staging", "10.0.0.5:5000", "docker")
    out = "@@deployer arch\nx86_64\n"
    assert layercache.recalled_probe(host, argv, 3600, path) is None
    layercache.add(host, I1, D[:2], path)
    layercache.remember_probe(host, argv, out, path, now=1000.0)
    assert layercache.recalled_probe(alias, argv, 3600, path, now=1000.0 + 3600) == out
    assert layercache.recalled_probe(host, argv, 3600, path, now=1000.0 + 3601) is None  # too old: probe again
    assert layercache.recalled_probe(host, argv, 3600, path, now=999.0) is None  # a clock that went back
    assert layercache.recalled_probe(Host("gpu02", {"ansible_host": "10.0.0.2"}), argv, 3600, path, now=1000.0) is None
    # another registry (or staging dir, or docker command) in the inventory: that probe said nothing of it
    other = (*argv[:5], "10.0.0.6:5000", "docker")
    assert layercache.recalled_probe(host, other, 3600, path, now=1000.0) is None
    # many at once, in the order asked
    gpu02 = Host("gpu02", {"ansible_host": "10.0.0.2"})
    assert layercache.recalled_probes([(gpu02, argv), (alias, argv), (host, other)], 3600, path, now=1000.0) \
        == [None, out, None]
    # the probe sits beside the images, which stay as they were
    assert layercache.remembered(host, path) == {I1: tuple(D[:2])}
    layercache.add(host, I2, D[:3], path)
    assert layercache.recalled_probe(host, argv, 3600, path, now=1000.0) == out
    for junk in ('{"probe @10.0.0.1:22": "x"}', '{"probe @10.0.0.1:22": {"at": "soon", "stdout": "x"}}'):
        path.write_text(junk)
        assert layercache.recalled_probe(host, argv, 3600, path, now=1000.0) is None


def test_an_incomplete_pull_is_remembered_for_images_with_the_same_present_layers(tmp_path: Path) -> None:
    """A registry pull on Docker 28's containerd store comes out incomplete when the host has one of
    the image's layers unpacked from a load (moby#49784); a pull of an image with those layers
    present (a re-ship) would too. Another image, another Docker, or too long ago: pull again."""
    path = tmp_path / "layers.json"
    host = Host("gpu01", {"ansible_host": "10.0.0.1"})
    assert not layercache.pull_incomplete(host, "28.5.2", D[:2], 3600, path)
    layercache.note_pull(host, "28.5.2", D[:2], complete=False, path=path, now=1000.0)
    assert layercache.pull_incomplete(host, "28.5.2", D[:2], 3600, path, now=1000.0)
    assert layercache.pull_incomplete(host, "28.5.2", D[:3], 3600, path, now=1000.0)  # those layers and more
    assert not layercache.pull_incomplete(host, "28.5.2", D[:1], 3600, path, now=1000.0)  # maybe not the culprit
    assert not layercache.pull_incomplete(host, "29.0.1", D[:2], 3600, path, now=1000.0)  # an upgraded Docker
    assert not layercache.pull_incomplete(host, "28.5.2", D[:2], 3600, path, now=4601.0)  # too long ago
    assert not layercache.pull_incomplete(Host("gpu02", {"ansible_host": "10.0.0.2"}), "28.5.2", D[:2], 3600, path,
                                          now=1000.0)
    # the images stay as they were beside it
    layercache.add(host, I1, D[:2], path)
    assert layercache.remembered(host, path) == {I1: tuple(D[:2])}
    assert layercache.pull_incomplete(host, "28.5.2", D[:2], 3600, path, now=1000.0)
    # a complete pull with those layers present: they do not make pulls incomplete (any more)
    layercache.note_pull(host, "28.5.2", D[:1], complete=False, path=path, now=1000.0)
    layercache.note_pull(host, "28.5.2", D[:3], complete=True, path=path, now=1000.0)
    assert not layercache.pull_incomplete(host, "28.5.2", D, 3600, path, now=1000.0)
    for junk in ('{"pulls @10.0.0.1:22": [{"at": "soon", "layers": 3}, "x"]}', '{"pulls @10.0.0.1:22": 7}'):
        path.write_text(junk)
        assert not layercache.pull_incomplete(host, "28.5.2", D, 3600, path, now=1000.0)
        layercache.note_pull(host, "28.5.2", D[:1], complete=True, path=path, now=1000.0)
