"""The pure parts of `deploy build`: git revision tags, the build stream reader, tags and labels."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deployer.errors import LocalError
from deployer.local.build import (
    GitRevision,
    StreamReader,
    build_labels,
    git_revision,
    image_refs,
    split_ref,
)

REV = GitRevision(commit="0123456789abcdef0123456789abcdef01234567", short="0123456789ab", dirty=False)
DIRTY = GitRevision(commit=REV.commit, short=REV.short, dirty=True)


def test_image_refs() -> None:
    assert image_refs("sample", REV) == ("sample:0123456789ab", "sample:latest")
    assert image_refs("sample", DIRTY) == ("sample:0123456789ab-dirty", "sample:latest")
    assert image_refs("reg:5000/ml/job", REV) == ("reg:5000/ml/job:0123456789ab", "reg:5000/ml/job:latest")
    assert image_refs("job:v3", REV) == ("job:v3", "job:0123456789ab")
    assert image_refs("job", None, "sha256:" + "ab" * 32) == ("job:id-abababababab", "job:latest")


def test_split_ref() -> None:
    assert split_ref("reg:5000/a/b") == ("reg:5000/a/b", None)
    assert split_ref("reg:5000/a/b:t1") == ("reg:5000/a/b", "t1")
    assert split_ref("busybox:latest") == ("busybox", "latest")


def test_labels() -> None:
    assert build_labels(DIRTY) == {
        "org.opencontainers.image.revision": REV.commit,
        "deployer.git_rev": "0123456789ab-dirty",
        "deployer.git_dirty": "true",
    }
    assert build_labels(None) == {}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_git_revision_marks_dirty_only_for_the_context(tmp_path: Path) -> None:
    assert git_revision(str(tmp_path)) is None  # not a repository
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.com")
    git(tmp_path, "config", "user.name", "t")
    ctx = tmp_path / "app"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "README").write_text("x\n")
    assert git_revision(str(ctx)) is None  # no commit yet
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "one")
    rev = git_revision(str(ctx))
    assert rev is not None and not rev.dirty and len(rev.short) == 12 and rev.commit.startswith(rev.short)
    (tmp_path / "README").write_text("changed outside the context\n")
    assert git_revision(str(ctx)) == rev
    (ctx / "train.py").write_text("print(1)\n")  # untracked file inside the context
    dirty = git_revision(str(ctx))
    assert dirty is not None and dirty.dirty and dirty.tag == rev.short + "-dirty"


def test_stream_reader_lines_and_image_id() -> None:
    lines: list[str] = []
    reader = StreamReader(lines.append)
    for chunk in [
        {"stream": "Step 1/2 : FROM base\n"},
        {"stream": " ---> 0a49c5fa27ce\nStep 2/2 : COPY a "},
        {"stream": "/a\n"},
        {"status": "Downloading", "id": "abc", "progress": "[==>  ]"},
        {"aux": {"ID": "sha256:" + "1" * 64}},
        {"stream": "Successfully built 111111111111\n"},
    ]:
        reader.feed(chunk)
    assert reader.finish() == "sha256:" + "1" * 64
    assert lines == ["Step 1/2 : FROM base", " ---> 0a49c5fa27ce", "Step 2/2 : COPY a /a",
                     "abc: Downloading [==>  ]", "Successfully built 111111111111"]


def test_stream_reader_error_names_the_step_and_output_tail() -> None:
    reader = StreamReader(lambda _line: None)
    reader.feed({"stream": "Step 1/3 : FROM base\n"})
    reader.feed({"stream": "Step 2/3 : RUN make\n ---> Running in 12ab\n"})
    reader.feed({"stream": "make: *** No rule to make target 'all'.  Stop.\n"})
    with pytest.raises(LocalError) as info:
        reader.feed({"errorDetail": {"code": 2, "message": "The command '/bin/sh -c make' returned a non-zero code: 2"},
                     "error": "The command '/bin/sh -c make' returned a non-zero code: 2"})
    text = str(info.value)
    assert "image build failed at Step 2/3 : RUN make: The command '/bin/sh -c make' returned a non-zero code: 2" in text
    assert "No rule to make target" in text and "deploy build" in text


def test_stream_reader_without_image_is_an_error() -> None:
    reader = StreamReader(lambda _line: None)
    reader.feed({"stream": "Step 1/1 : FROM base"})
    with pytest.raises(LocalError, match="without producing an image"):
        reader.finish()
