"""parse_pull against verbatim non-tty `docker pull` output from both image stores."""
from __future__ import annotations

import pytest

from deployer.commands import ship as cmd

# Captured on the testbed (docker 28.5.2): the same two images, v2 built on v1, pulled in turn.
CLASSIC_V1 = """\
v1-1796126771: Pulling from lockwork/pullsample
e28147bf426f: Pulling fs layer
1e5cbab62375: Pulling fs layer
c0eac946c172: Pulling fs layer
c0eac946c172: Verifying Checksum
c0eac946c172: Download complete
1e5cbab62375: Verifying Checksum
1e5cbab62375: Download complete
e28147bf426f: Verifying Checksum
e28147bf426f: Download complete
e28147bf426f: Pull complete
1e5cbab62375: Pull complete
c0eac946c172: Pull complete
Digest: sha256:3f59468234a892565a301b12df6072be9cfa8d7e2e62490d455d86d60d092b3c
Status: Downloaded newer image for 10.213.0.5:5000/lockwork/pullsample:v1-1796126771
10.213.0.5:5000/lockwork/pullsample:v1-1796126771
"""
CLASSIC_V2 = """\
v2-1796126771: Pulling from lockwork/pullsample
e28147bf426f: Already exists
1e5cbab62375: Already exists
c0eac946c172: Already exists
88692f5868ca: Pulling fs layer
79d4d66f4aac: Pulling fs layer
79d4d66f4aac: Verifying Checksum
79d4d66f4aac: Download complete
88692f5868ca: Download complete
88692f5868ca: Pull complete
79d4d66f4aac: Pull complete
Digest: sha256:a51387bdc984c0a48bd7d684565b91d75cbdaee07f2e376882f4252bfc994ce5
Status: Downloaded newer image for 10.213.0.5:5000/lockwork/pullsample:v2-1796126771
10.213.0.5:5000/lockwork/pullsample:v2-1796126771
"""
CONTAINERD_V1 = """\
v1-1796126771: Pulling from lockwork/pullsample
c0eac946c172: Pulling fs layer
1e5cbab62375: Pulling fs layer
c0eac946c172: Download complete
1e5cbab62375: Download complete
c0eac946c172: Pull complete
1e5cbab62375: Pull complete
Digest: sha256:3f59468234a892565a301b12df6072be9cfa8d7e2e62490d455d86d60d092b3c
Status: Downloaded newer image for 10.213.0.5:5000/lockwork/pullsample:v1-1796126771
10.213.0.5:5000/lockwork/pullsample:v1-1796126771
"""
CONTAINERD_V2 = """\
v2-1796126771: Pulling from lockwork/pullsample
79d4d66f4aac: Pulling fs layer
88692f5868ca: Pulling fs layer
79d4d66f4aac: Download complete
88692f5868ca: Download complete
79d4d66f4aac: Pull complete
88692f5868ca: Pull complete
Digest: sha256:a51387bdc984c0a48bd7d684565b91d75cbdaee07f2e376882f4252bfc994ce5
Status: Downloaded newer image for 10.213.0.5:5000/lockwork/pullsample:v2-1796126771
10.213.0.5:5000/lockwork/pullsample:v2-1796126771
"""

# Docker 28 on the classic store as a terminal-less CI log shows it when a layer reports progress
# without a bar (Downloading / Extracting lines), with a layer that was there already.
CLASSIC_VERBOSE = """\
v3: Pulling from ml/trainer
4f4fb700ef54: Already exists
a3ed95caeb02: Pulling fs layer
9d16cba9fb96: Pulling fs layer
9d16cba9fb96: Waiting
a3ed95caeb02: Downloading
a3ed95caeb02: Verifying Checksum
a3ed95caeb02: Download complete
a3ed95caeb02: Extracting
a3ed95caeb02: Pull complete
9d16cba9fb96: Downloading
9d16cba9fb96: Verifying Checksum
9d16cba9fb96: Download complete
9d16cba9fb96: Extracting
9d16cba9fb96: Pull complete
Digest: sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270
Status: Downloaded newer image for 10.213.0.5:5000/ml/trainer:v3
10.213.0.5:5000/ml/trainer:v3
"""


def without(text: str, status: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not line.rstrip().endswith(status))


@pytest.mark.parametrize(("output", "expected"), [
    (CLASSIC_V1, (3, 0)),
    (CLASSIC_V2, (2, 3)),
    (CLASSIC_VERBOSE, (2, 1)),
    # the containerd store lists only the layers it fetches, not those it has
    (CONTAINERD_V1, (2, 0)),
    (CONTAINERD_V2, (2, 0)),
    # containerd-store versions that stop at `Download complete`
    (without(CONTAINERD_V2, ": Pull complete"), (2, 0)),
    # a pull cut short after one layer arrived
    (CLASSIC_V2.split("88692f5868ca: Download complete")[0], (1, 3)),
    ("", (0, 0)),
])
def test_parse_pull_counts_each_layer_once(output: str, expected: tuple[int, int]) -> None:
    assert cmd.parse_pull(output) == expected


def test_parse_pull_ignores_the_lines_around_the_layers() -> None:
    text = ("latest: Pulling from library/x\nDigest: sha256:1\nStatus: Image is up to date for x:latest\n"
            "docker.io/library/x:latest\n")
    assert cmd.parse_pull(text) == (0, 0)
