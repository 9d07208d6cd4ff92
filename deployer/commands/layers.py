"""Which layers a host already has: one remote command, its parser, and the missing-layer rule.

Docker's layer store keys a layer by its ChainID (the layer plus everything under it), and
`docker load` skips a layer whose ChainID exists, so "present" means "present as a prefix".
"""
from __future__ import annotations

import json
from collections.abc import Iterable

from deployer.chain import chain_ids

# Positional args are the docker argv (e.g. `sudo docker`), never interpolated into the script.
# `images -aq` includes intermediate images; an image removed between the two calls only makes
# inspect complain on stderr, so its failure is tolerated (we then just send a little more).
_SCRIPT = (
    'ids=$("$@" images -aq --no-trunc) || exit $?\n'
    'ids=$(printf "%s\\n" $ids | sort -u)\n'
    '[ -n "$ids" ] || exit 0\n'
    '"$@" image inspect --format "{{json .RootFS.Layers}}" $ids || true\n'
)


def present_layers_argv(docker: tuple[str, ...]) -> tuple[str, ...]:
    """One command printing, per image on the host, a JSON array of its layer diff IDs."""
    if not docker:
        raise ValueError("empty docker argv")
    return ("sh", "-c", _SCRIPT, "sh", *docker)


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
