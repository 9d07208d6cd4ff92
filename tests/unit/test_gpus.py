"""--gpus parsing mirrors docker/cli opts/gpus.go (GpuOpts.Set) field by field."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from deployer.errors import SpecError
from deployer.runs.gpus import GpuRequest, check_against, parse_gpus, read_csv_record


@dataclass(frozen=True)
class G:
    index: int
    uuid: str


FOUR = [G(i, f"GPU-{i}aaa") for i in range(4)]


def req(text: str) -> tuple:
    r = parse_gpus(text)
    return (r.driver, r.count, r.device_ids, r.capabilities, r.options)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("all", ("", -1, None, (("gpu",),), ())),
        ("2", ("", 2, None, (("gpu",),), ())),
        ("count=3", ("", 3, None, (("gpu",),), ())),
        ("count=all", ("", -1, None, (("gpu",),), ())),
        ("0", ("", 0, None, (("gpu",),), ())),
        ("device=1", ("", 0, ("1",), (("gpu",),), ())),
        ('"device=0,2"', ("", 0, ("0", "2"), (("gpu",),), ())),
        ('"device=1,3"', ("", 0, ("1", "3"), (("gpu",),), ())),
        ("device=GPU-3a4b5c6d", ("", 0, ("GPU-3a4b5c6d",), (("gpu",),), ())),
        ('"device=GPU-3a4b5c6d"', ("", 0, ("GPU-3a4b5c6d",), (("gpu",),), ())),
        ("driver=nvidia,2", ("nvidia", 2, None, (("gpu",),), ())),
        ("driver=nvidia", ("nvidia", 1, None, (("gpu",),), ())),  # no count, no devices -> 1
        ("capabilities=utility", ("", 1, None, (("utility", "gpu"),), ())),
        ('all,"capabilities=compute,utility"', ("", -1, None, (("compute", "utility", "gpu"),), ())),
        ('1,"options=a=b,c"', ("", 1, None, (("gpu",),), (("a", "b"), ("c", "")))),
        ("device=1,count=0", ("", 0, ("1",), (("gpu",),), ())),
        ("+2", ("", 2, None, (("gpu",),), ())),
    ],
)
def test_parse_like_docker(text: str, expected: tuple) -> None:
    assert req(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "EOF"),
        ("two", 'invalid count (two): value must be either "all" or an integer'),
        ("count=x", "invalid count (x)"),
        ("all,all", "gpu request key 'all' can be specified only once"),
        ("2,count=3", "gpu request key 'count' can be specified only once"),
        ("foo=1", "unexpected key 'foo' in 'foo=1'"),
        ('device="0,2"', 'bare " in non-quoted-field'),
        ('"device=0,2', 'extraneous or missing " in quoted-field'),
        ('"device=0"x', 'extraneous or missing " in quoted-field'),
        # docker's CLI accepts this one (device=0 plus a count of 2); the daemon then refuses it.
        ("device=0,2", "cannot set both Count and DeviceIDs"),
        ("device=", "empty device id"),
        ("capabilities=compute,utility", "invalid count (utility)"),
    ],
)
def test_rejects_what_docker_rejects(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_gpus(text)
    assert message in str(err.value)
    assert err.value.exit_code == 2


def test_unquoted_device_list_hints_at_quoting() -> None:
    with pytest.raises(SpecError) as err:
        parse_gpus("device=0,2")
    assert "--gpus '\"device=0,2\"'" in str(err.value)


def test_csv_record_rules() -> None:
    assert read_csv_record('a,"b,c",d') == ["a", "b,c", "d"]
    assert read_csv_record('"say ""hi"""') == ['say "hi"']
    assert read_csv_record("a,b\nc,d") == ["a", "b"]  # only the first record counts
    assert read_csv_record('"a\nb",c') == ["a\nb", "c"]
    assert read_csv_record("a,,b") == ["a", "", "b"]


def test_describe_and_visible_devices() -> None:
    assert parse_gpus("all").describe() == "all"
    assert parse_gpus("all").visible_devices(2) == ("0", "1")
    assert parse_gpus("all").visible_devices() == ("all",)
    assert parse_gpus("2").describe() == "count=2"
    assert parse_gpus("2").visible_devices() == ("0", "1")
    assert parse_gpus('"device=1,3"').describe() == "device=1,3"
    assert parse_gpus('"device=1,3"').visible_devices(4) == ("1", "3")
    assert parse_gpus("0").visible_devices() == ()


def test_text_is_kept_verbatim_for_docker() -> None:
    assert parse_gpus('"device=1,3"').text == '"device=1,3"'
    assert isinstance(parse_gpus("all"), GpuRequest)


@pytest.mark.parametrize(
    "text, gpus, problem",
    [
        ("all", FOUR, None),
        ("4", FOUR, None),
        ("5", FOUR, "--gpus asks for 5 GPU(s) but this host has 4"),
        ("all", [], "nvidia-smi lists no GPUs"),
        ('"device=1,3"', FOUR, None),
        ("device=7", FOUR, "--gpus device 7 not on this host (GPUs: 0, 1, 2, 3)"),
        ('"device=3,4,9"', FOUR, "--gpus device 4, 9 not on this host"),
        ("device=GPU-2aaa", FOUR, None),
        ("device=GPU-ffff", FOUR, "--gpus device GPU-ffff not on this host"),
        ("device=MIG-1234", FOUR, None),  # not listed by the query; the runtime decides
        ("1", [], "--gpus asks for 1 GPU(s) but this host has 0"),
    ],
)
def test_check_against_host_gpus(text: str, gpus: list, problem: str | None) -> None:
    got = check_against(parse_gpus(text), gpus)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got
