"""deployer.cachefile: the JSON files under the user's cache dir, read and replaced whole."""
from __future__ import annotations

from pathlib import Path

import pytest

from deployer import cachefile


def test_the_cache_dir_follows_xdg_cache_home_else_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cachefile.cache_dir() == tmp_path / "xdg" / "deployer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cachefile.cache_dir() == tmp_path / "home" / ".cache" / "deployer"


@pytest.mark.parametrize("content", [None, "", "{not json", "[1, 2]", '"text"', b"\xff\xfe"])
def test_a_missing_corrupt_or_non_object_file_reads_as_empty(tmp_path: Path, content: str | bytes | None) -> None:
    path = tmp_path / "facts.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert cachefile.read(path) == {}


@pytest.mark.parametrize("compact", [False, True])
def test_what_is_written_reads_back_and_the_parent_dir_is_made(tmp_path: Path, compact: bool) -> None:
    path = tmp_path / "a" / "b" / "layers.json"
    data = {"gpu01": {"ok": True, "layers": ["sha256:1", "sha256:2"]}, "n": 3}
    cachefile.write(path, data, compact=compact)
    assert cachefile.read(path) == data
    assert ("\n" in path.read_text()) is not compact
    assert [p.name for p in path.parent.iterdir()] == ["layers.json"]  # no temporary file left


def test_a_write_that_fails_leaves_the_old_file_whole_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "bases.json"
    cachefile.write(path, {"old": 1})
    with pytest.raises(TypeError):
        cachefile.write(path, {"new": object()})  # not JSON: fails half-way through the dump
    assert cachefile.read(path) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["bases.json"]
