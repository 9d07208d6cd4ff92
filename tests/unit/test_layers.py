from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from deployer.chain import chain_ids
from deployer.commands.layers import (
    Listing,
    enough_for,
    missing_layers,
    parse_listing,
    parse_present,
    present_layers_argv,
    pulled_records,
)
from deployer.tarfmt import Descriptor

D = ["sha256:" + c * 64 for c in "abcdef"]
I1, I2, I3 = ("sha256:" + c * 64 for c in "123")  # image ids


def test_argv_passes_docker_as_positional_args() -> None:
    argv = present_layers_argv(("sudo", "docker"))
    assert argv[:2] == ("sh", "-c")
    assert argv[3:] == ("sh", "", "", "", "", "sudo", "docker")
    assert "sudo" not in argv[2] and '"$@" images -aq --no-trunc' in argv[2]
    assert present_layers_argv(("docker",), "/srv/st; x")[3:] == ("sh", "/srv/st; x/content", "", "", "", "docker")
    # known ids go as one word-split argument: anything but an id is left out
    assert present_layers_argv(("docker",), "", [I2, "$(reboot)", I1, "sha256:x y"])[5] == f"{I1} {I2}"


def test_argv_rejects_empty_docker() -> None:
    import pytest

    with pytest.raises(ValueError):
        present_layers_argv(())


def _fake_docker(tmp_path: Path, images: dict[str, list[str] | None]) -> Path:
    """A stand-in `docker` executable answering `images -aq` and `image inspect --format`."""
    db = tmp_path / "images.json"
    db.write_text(json.dumps(images))
    log = tmp_path / "calls.log"
    script = tmp_path / "fake docker"  # a space in the path: must survive as one argument
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"db = json.load(open({str(db)!r}))\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "args = sys.argv[1:]\n"
        "if args[:3] == ['images', '-aq', '--no-trunc']:\n"
        "    for i in db: print(i); print(i)  # duplicates, as docker prints per tag\n"
        "elif args[:4] == ['image', 'inspect', '--format', '{{.Id}}']:\n"
        "    sys.exit(1) if args[4] not in db else print(args[4])  # REF: these tests name images by id\n"
        "elif args[:2] == ['image', 'inspect']:\n"
        "    assert args[2:4] == ['--format', '{{.Id}} {{json .RootFS.Layers}}'], args\n"
        "    for i in args[4:]: print(i, json.dumps(db[i]))\n"
        "else: sys.exit(3)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _run(argv: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, check=False)


def test_script_lists_every_image_once(tmp_path: Path) -> None:
    docker = _fake_docker(tmp_path, {I1: D[:2], I2: D[:1] + D[3:4], I3: None})
    res = _run(present_layers_argv((str(docker),)))
    assert res.returncode == 0, res.stderr
    assert parse_present(res.stdout) == frozenset(chain_ids(D[:2]) + chain_ids(D[:1] + D[3:4]))
    calls = [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert calls[1][:4] == ["image", "inspect", "--format", "{{.Id}} {{json .RootFS.Layers}}"]
    assert sorted(calls[1][4:]) == [I1, I2, I3]


def test_known_images_are_named_not_inspected(tmp_path: Path) -> None:
    docker = _fake_docker(tmp_path, {I1: D[:2], I2: D[:1] + D[3:4]})
    res = _run(present_layers_argv((str(docker),), "", [I1, I3]))  # I3: known once, gone since
    assert res.returncode == 0, res.stderr
    listing = parse_listing(res.stdout)
    assert listing == Listing(known=frozenset([I1]), layers={I2: tuple(D[:1] + D[3:4])})
    calls = [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert calls[1][4:] == [I2]
    # I1's layers come from the workstation's record of the earlier listing
    assert listing.present({I1: D[:2], I3: D[4:]}) == frozenset(chain_ids(D[:2]) + chain_ids(D[:1] + D[3:4]))
    assert listing.present() == frozenset(chain_ids(D[:1] + D[3:4]))  # no record: I1 counts as absent


def test_only_known_images_means_no_inspect(tmp_path: Path) -> None:
    docker = _fake_docker(tmp_path, {I1: D[:2]})
    res = _run(present_layers_argv((str(docker),), "", [I1]))
    assert (res.returncode, res.stdout) == (0, f"known {I1}\n")
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 1


def test_a_reship_names_the_image_ref_names_and_lists_nothing_else(tmp_path: Path) -> None:
    """REF names an image that holds all of the new one but its top layer (ENOUGH): that is all."""
    docker = _fake_docker(tmp_path, {I1: D[:3], I2: D[:1]})
    assert enough_for(D[:3] + ["sha256:" + "9" * 64], {I1: D[:3], I2: D[:1], I3: D[:2]}) == [I1]
    res = _run(present_layers_argv((str(docker),), "", [I1, I2], I1, [I1]))
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"ref {I1}\nknown {I1}\nlisting skipped\n"
    listing = parse_listing(res.stdout)
    assert listing == Listing(known=frozenset([I1]), layers={}, complete=False)
    assert listing.present({I1: D[:3]}) == frozenset(chain_ids(D[:3]))
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 1  # one inspect, no `images`
    # REF names another image (or none): every image is listed, as without a REF
    for ref in (I2, "t:none"):
        (tmp_path / "calls.log").unlink()
        res = _run(present_layers_argv((str(docker),), "", [I1, I2], ref, [I1]))
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"ref {I2 if ref == I2 else ''}\n")
        assert parse_listing(res.stdout) == Listing(known=frozenset([I1, I2]), layers={})
        assert json.loads((tmp_path / "calls.log").read_text().splitlines()[1])[:2] == ["images", "-aq"]


def test_with_no_enough_the_ref_is_inspected_beside_the_listing(tmp_path: Path) -> None:
    """A first ship (no ENOUGH): REF's inspect does not wait for the listing, nor it for REF's.
    The fake answers REF's inspect only once `images` has started: run one after the other, the
    inspect would find no marker and REF would read as absent."""
    docker = tmp_path / "docker"
    marker = tmp_path / "listing started"
    docker.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = images ]; then : > "{marker}"; sleep 0.3; echo {I1}; exit 0; fi\n'
        'if [ "$4" = "{{.Id}}" ]; then\n'
        f'  i=0; while [ ! -e "{marker}" ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done\n'
        f'  [ -e "{marker}" ] && echo {I1}; exit $?\n'
        "fi\n"
        f"echo '{I1} {json.dumps(D[:2])}'\n")
    docker.chmod(0o755)
    res = _run(present_layers_argv((str(docker),), "", (), "t:v", ()))
    assert res.returncode == 0, res.stderr
    assert parse_listing(res.stdout) == Listing(known=frozenset(), layers={I1: tuple(D[:2])})
    assert res.stdout.splitlines()[-1] == f"ref {I1}"  # last: printed once both are done
    # the listing fails: REF's line is still there, and the script fails as the listing did
    docker.write_text(docker.read_text().replace("echo " + I1 + "; exit 0", "exit 5"))
    marker.unlink()
    res = _run(present_layers_argv((str(docker),), "", (), "t:v", ()))
    assert (res.returncode, res.stdout) == (5, f"ref {I1}\n")


def test_enough_means_all_but_the_top_layer_or_all_of_a_one_layer_image() -> None:
    assert enough_for(D[:4], {I1: D[:3], I2: D[:4], I3: D[:2] + D[4:5]}) == [I1, I2]
    assert enough_for(D[:1], {I1: D[:1], I2: D[1:2]}) == [I1]
    assert enough_for(D[:2], {I1: D[1:3]}) == []


def test_script_with_no_images_prints_nothing_and_succeeds(tmp_path: Path) -> None:
    docker = _fake_docker(tmp_path, {})
    res = _run(present_layers_argv((str(docker),)))
    assert (res.returncode, res.stdout) == (0, "")
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 1  # no inspect without ids


def test_script_fails_when_docker_fails(tmp_path: Path) -> None:
    res = _run(present_layers_argv(("false",)))
    assert res.returncode != 0


def test_parse_present_every_prefix_of_every_image() -> None:
    out = f"{I1} {json.dumps(D[:3])}\n{I2} {json.dumps(D[3:5])}\n{I3} null\nsha256:{'4' * 64} []\n\n"
    present = parse_present(out)
    assert present == frozenset(chain_ids(D[:3]) + chain_ids(D[3:5]))


def test_parse_present_ignores_noise() -> None:
    assert parse_present("WARNING: something\n[not json\n") == frozenset()


def test_missing_none_when_all_present() -> None:
    assert missing_layers(D[:3], frozenset(chain_ids(D[:3]))) == ()


def test_missing_all_when_host_is_empty() -> None:
    assert missing_layers(D[:3], frozenset()) == (0, 1, 2)


def test_missing_from_first_absent_chain_to_top() -> None:
    present = frozenset(chain_ids(D[:2]))
    assert missing_layers(D[:4], present) == (2, 3)


def test_same_diff_under_another_parent_is_not_present() -> None:
    # The host has layer D[1] but on a different base: its chain differs, so it must be sent.
    present = frozenset(chain_ids([D[5], D[1]]))
    assert missing_layers([D[0], D[1]], present) == (0, 1)


def test_gap_means_everything_above_is_missing() -> None:
    present = frozenset(chain_ids(D[:1])) | frozenset([chain_ids(D[:3])[2]])
    # chain of D[:2] absent: layer 1 and everything above go, even if a higher chain is listed
    assert missing_layers(D[:3], present) == (1, 2)


def test_content_records_round_trip_through_the_script(tmp_path: Path) -> None:
    """The install writes one record per layer; the listing prints them back; junk is ignored."""
    from deployer.commands.layers import content_records, parse_content
    from deployer.tarfmt import Descriptor

    zst = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", "sha256:" + "1" * 64, 1234)
    raw = Descriptor("application/vnd.oci.image.layer.v1.tar", D[1], 5120)
    records = content_records([(D[0], zst), (D[1], raw)])
    cdir = tmp_path / "staging" / "content"
    cdir.mkdir(parents=True)
    for line in records.splitlines():
        d, rest = line.split(" ", 1)
        (cdir / d).write_text(rest + "\n")
    (cdir / "junk").write_text("application/x-evil $(reboot) 1\n")
    out = subprocess.run(present_layers_argv(("true",), str(tmp_path / "staging")), capture_output=True, text=True,
                         check=True).stdout
    assert parse_content(out) == {D[0]: zst, D[1]: raw}
    import pytest

    with pytest.raises(ValueError):
        content_records([(D[0], Descriptor("text/x-shell", "sha256:" + "1" * 64, 1))])


def test_content_argv_reads_the_records_alone_and_calls_no_docker(tmp_path: Path) -> None:
    """A re-ship's light check reads the content records without the image reads (no docker argv)."""
    from deployer.commands.layers import content_argv, content_records, parse_content
    from deployer.tarfmt import Descriptor

    zst = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", "sha256:" + "1" * 64, 1234)
    cdir = tmp_path / "staging" / "content"
    cdir.mkdir(parents=True)
    d, rest = content_records([(D[0], zst)]).split(" ", 1)
    (cdir / d).write_text(rest + "\n")
    argv = content_argv(str(tmp_path / "staging"))
    assert "docker" not in argv[2] and argv[3:] == ("sh", str(cdir))
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert parse_content(out) == {D[0]: zst}
    # no records yet (a classic-store host, or a first ship): nothing, and success
    assert subprocess.run(content_argv(str(tmp_path / "none")), capture_output=True, text=True, check=True).stdout == ""


def test_pulled_records_name_each_layer_by_the_manifests_blob() -> None:
    gzip = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 10, "digest": "sha256:" + "9" * 64}
    zstd = {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "size": 20, "digest": "sha256:" + "8" * 64}
    foreign = {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 5,
               "digest": "sha256:" + "7" * 64}
    assert pulled_records(D[:3], [gzip, zstd, foreign]) == (
        (D[0], Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", gzip["digest"], 10)),
        (D[1], Descriptor(zstd["mediaType"], zstd["digest"], 20)),
    )  # a foreign layer's blob is not in the content store: no record
    assert pulled_records(D[:2], [gzip]) == ()  # not this image's layer list
    assert pulled_records(D[:1], None) == ()
    assert pulled_records(D[:1], [{**gzip, "digest": "sha256:../x"}]) == ()
