"""Which layers a host already has: one remote command, its parsers, and the missing-layer rule.

Docker's layer store keys a layer by its ChainID (the layer plus everything under it), and
`docker load` skips a layer whose ChainID exists, so "present" means "present as a prefix".

On the containerd image store a load that leaves a layer out must also name the blob the content
store holds for it. For the layers deployer loaded there, the install wrote down which blob
(`<staging>/content/<diff id hex>`: media type, digest, size); the same command prints those
records (`content <diff hex> <media type> <digest> <size>`).
"""
from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable

from deployer.chain import chain_ids
from deployer.tarfmt import Descriptor

# Positional args are the docker argv (e.g. `sudo docker`), never interpolated into the script.
# `images -aq` includes intermediate images; an image removed between the two calls only makes
# inspect complain on stderr, so its failure is tolerated (we then just send a little more).
_SCRIPT = (
    'c=$1; shift\n'
    'if [ -n "$c" ] && [ -d "$c" ]; then for f in "$c"/*; do\n'
    '  [ -f "$f" ] && printf "content %s %s\\n" "${f##*/}" "$(head -c 300 -- "$f")"\n'
    'done; fi\n'
    'ids=$("$@" images -aq --no-trunc) || exit $?\n'
    'ids=$(printf "%s\\n" $ids | sort -u)\n'
    '[ -n "$ids" ] || exit 0\n'
    '"$@" image inspect --format "{{json .RootFS.Layers}}" $ids || true\n'
)


def content_dir(staging: str) -> str:
    """Where the install records which blob the host's content store holds for each layer."""
    return posixpath.join(staging, "content")


def present_layers_argv(docker: tuple[str, ...], staging: str = "") -> tuple[str, ...]:
    """One command printing, per image on the host, a JSON array of its layer diff IDs (and the
    content records of the staging dir, if given)."""
    if not docker:
        raise ValueError("empty docker argv")
    return ("sh", "-c", _SCRIPT, "sh", content_dir(staging) if staging else "", *docker)


_HEX = re.compile(r"^[0-9a-f]{64}$")
MEDIA_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+zstd",
               "application/vnd.oci.image.layer.v1.tar+gzip")


def parse_content(stdout: str) -> dict[str, Descriptor]:
    """diff id -> the blob the host's content store holds for that layer, as deployer recorded it."""
    out: dict[str, Descriptor] = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) != 5 or words[0] != "content" or not _HEX.match(words[1]):
            continue
        media_type, digest, size = words[2:]
        if media_type in MEDIA_TYPES and digest.startswith("sha256:") and _HEX.match(digest[7:]) and size.isdigit():
            out[f"sha256:{words[1]}"] = Descriptor(media_type, digest, int(size))
    return out


def content_records(layers: Iterable[tuple[str, Descriptor]]) -> str:
    """The install's record lines, `<diff hex> <media type> <digest> <size>` (validated: they are
    written by a script)."""
    lines = []
    for diff_id, desc in layers:
        if (not _HEX.match(diff_id.removeprefix("sha256:")) or desc.media_type not in MEDIA_TYPES
                or not _HEX.match(desc.digest.removeprefix("sha256:")) or desc.size < 0):
            raise ValueError(f"not a layer record: {diff_id} {desc}")
        lines.append(f"{diff_id[7:]} {desc.media_type} {desc.digest} {desc.size}")
    return "\n".join(lines)


def parse_present(stdout: str) -> frozenset[str]:
    """All ChainIDs present on the host: every prefix of every image's layer list."""
    present: set[str] = set()
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith(("[", "null")):
            continue  # not ours (e.g. a warning printed on stdout); skipping only costs bytes
        try:
            layers = json.loads(line)
        except ValueError:
            continue
        if isinstance(layers, list) and all(isinstance(d, str) for d in layers):
            present.update(chain_ids(layers))
    return frozenset(present)


def missing_layers(diff_ids: Iterable[str], present: frozenset[str]) -> tuple[int, ...]:
    """Indexes of layers to send: from the first layer whose ChainID is absent to the top."""
    chains = chain_ids(list(diff_ids))
    for i, chain in enumerate(chains):
        if chain not in present:
            return tuple(range(i, len(chains)))
    return ()
