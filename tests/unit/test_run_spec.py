"""RunSpec validation and the -v / -e / --env-file / name parsers."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from deployer.errors import SpecError
from deployer.runs.spec import (
    OPTION_KEYS,
    RunSpec,
    Volume,
    check_name,
    default_name,
    env_file_text,
    from_flags,
    merge_env,
    parse_env,
    parse_env_file,
    parse_volume,
    validate,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/data/imagenet:/data:ro", Volume("/data/imagenet", "/data", "ro")),
        ("/data:/data", Volume("/data", "/data", "")),
        ("/data:/data:rw", Volume("/data", "/data", "rw")),
        ("/srv/x:/x:ro,z", Volume("/srv/x", "/x", "ro,z")),
        ("cache:/root/.cache", Volume("cache", "/root/.cache", "")),
    ],
)
def test_parse_volume(text: str, expected: Volume) -> None:
    assert parse_volume(text) == expected
    assert str(parse_volume(text)) == text


def test_volume_kinds() -> None:
    assert parse_volume("/d:/d:ro").bind and parse_volume("/d:/d:ro").read_only
    assert not parse_volume("cache:/c").bind
    assert not parse_volume("/d:/d:rw").read_only


@pytest.mark.parametrize(
    "text, message",
    [
        ("data/x:/data", "host path 'data/x' is relative"),
        ("./data:/data", "host path './data' is relative"),
        ("~/data:/data", "host path '~/data' is relative"),
        ("/data", "expected SRC:DST[:ro|rw]"),
        ("/a:/b:ro:x", "expected SRC:DST[:ro|rw]"),
        (":/b", "expected SRC:DST[:ro|rw]"),
        ("/a:b", "container path 'b' must be absolute"),
        ("/a:/", "container path '/' must be absolute and not /"),
        ("/a:/b:rx", "invalid mode 'rx'"),
        ("/a:/b:ro,rw", "invalid mode 'ro,rw'"),
    ],
)
def test_parse_volume_rejects(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_volume(text)
    assert message in str(err.value)
    assert err.value.exit_code == 2


def test_parse_env() -> None:
    assert parse_env("A=1") == ("A", "1")
    assert parse_env("A=x=y") == ("A", "x=y")
    assert parse_env("A=") == ("A", "")
    assert parse_env("TOKEN", {"TOKEN": "s3cret"}) == ("TOKEN", "s3cret")
    with pytest.raises(SpecError, match="TOKEN is not set in your environment"):
        parse_env("TOKEN", {})
    with pytest.raises(SpecError, match="invalid variable name"):
        parse_env("=1")
    with pytest.raises(SpecError, match="invalid variable name"):
        parse_env("A B=1")
    with pytest.raises(SpecError, match="newline"):
        parse_env("A=1\n2")


def test_parse_env_file_like_docker() -> None:
    text = "\ufeff# comment\n\nA=1\n  B = x \nC\nD\nE=a=b\n"
    got = parse_env_file(text.replace("B = x ", "B= x "), "f.env", {"C": "from-env"})
    assert got == [("A", "1"), ("B", " x "), ("C", "from-env"), ("E", "a=b")]
    with pytest.raises(SpecError, match=r"f.env:2: variable 'B X' contains whitespace"):
        parse_env_file("A=1\nB X=2\n", "f.env")
    with pytest.raises(SpecError, match=r"f\.env:1: no variable name"):
        parse_env_file("=2\n", "f.env")


def test_merge_env_and_file_text() -> None:
    merged = merge_env([("A", "1"), ("B", "2")], [("A", "3"), ("C", "4")])
    assert merged == [("B", "2"), ("A", "3"), ("C", "4")]
    assert env_file_text(merged) == "B=2\nA=3\nC=4\n"


def test_names() -> None:
    assert check_name("train-1") == "train-1"
    for bad in ("a", "-x", "has space", "x/y", ""):
        with pytest.raises(SpecError):
            check_name(bad)
    now = datetime(2026, 11, 29, 15, 30, 12, tzinfo=timezone.utc)
    assert default_name("deployer-testbed/sample:latest", now) == "sample-20261129-153012"
    assert default_name("10.213.0.5:5000/team/trainer:v3", now) == "trainer-20261129-153012"
    assert default_name("img@sha256:" + "a" * 64, now) == "img-20261129-153012"
    check_name(default_name("reg:5000/__x__", now))


def test_validate_returns_parsed_parts() -> None:
    gpus, vols = validate(RunSpec("img", gpus='"device=1,3"', volumes=("/d:/d:ro",)))
    assert gpus is not None and gpus.device_ids == ("1", "3")
    assert vols == (Volume("/d", "/d", "ro"),)
    assert validate(RunSpec("img")) == (None, ())


@pytest.mark.parametrize(
    "spec, message",
    [
        (RunSpec(""), "not an image reference"),
        (RunSpec("-x"), "not an image reference"),
        (RunSpec("img", name="a b"), "not a valid container name"),
        (RunSpec("img", gpus="device=0,2"), "cannot set both"),
        (RunSpec("img", volumes=("rel/p:/d",)), "relative"),
        (RunSpec("img", volumes=("/a:/d", "/b:/d")), "mounted twice"),
        (RunSpec("img", memory="lots"), "--memory 'lots': not a size"),
        (RunSpec("img", shm_size="8x"), "--shm-size '8x': not a size"),
        (RunSpec("img", restart="sometimes"), "unknown policy"),
        (RunSpec("img", ipc="shared"), "unknown mode"),
        (RunSpec("img", workdir="rel"), "must be an absolute path"),
        (RunSpec("img", env=(("A", "1\n"),)), "newline"),
    ],
)
def test_validate_rejects(spec: RunSpec, message: str) -> None:
    with pytest.raises(SpecError) as err:
        validate(spec)
    assert message in str(err.value)


def test_validate_accepts_docker_sizes_and_policies() -> None:
    for size in ("8m", "512M", "1.5g", "16GiB", "1024", "2 GB"):
        validate(RunSpec("img", memory=size, shm_size=size))
    for policy in ("no", "always", "unless-stopped", "on-failure", "on-failure:3"):
        validate(RunSpec("img", restart=policy))
    for ipc in ("host", "private", "container:other"):
        validate(RunSpec("img", ipc=ipc))


def test_one_model_for_run_flags_and_playbook_keys() -> None:
    """A run option is a RunSpec field: `deploy run` has a flag for it and a playbook a `run:` key."""
    from deployer.cli.runs import run_cmd
    from deployer.playbook.model import RUN_KEYS

    assert RUN_KEYS == OPTION_KEYS == tuple(f.name for f in dataclasses.fields(RunSpec))[1:]
    flags = {p.name for p in run_cmd.params}
    assert set(OPTION_KEYS) <= flags, set(OPTION_KEYS) - flags


def test_from_flags_parses_env_and_labels_then_validates() -> None:
    spec = from_flags("img", env=("A=1", "HOME"), labels=("team=ml",), environ={"HOME": "/root"},
                      volumes=("/d:/d:ro",), command=("python", "x.py"))
    assert spec == RunSpec("img", env=(("A", "1"), ("HOME", "/root")), labels=(("team", "ml"),),
                           volumes=("/d:/d:ro",), command=("python", "x.py"))
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        from_flags("img", labels=("team",))
    with pytest.raises(SpecError, match="relative"):
        from_flags("img", volumes=("rel/p:/d",))
