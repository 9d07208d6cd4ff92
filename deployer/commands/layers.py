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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from deployer.chain import chain_ids
from deployer.tarfmt import Descriptor

# Positional args are the docker argv (e.g. `sudo docker`), never interpolated into the script.
# The content records (one small file per layer: deployer.commands.load) are read by one grep,
# not a process per file: a containerd-store host gathers one per layer deployer ever loaded.
# `images -aq` includes intermediate images; an image removed between the two calls only makes
# inspect complain on stderr, so its failure is tolerated (we then just send a little more).
# KNOWN: ids whose layers the workstation already has from an earlier listing of this host (an
# image id is a digest of its content, so its layers never change): only `known ID` is printed
# for those, and only the others are inspected (`ID [layers...]`).
# REF (a ship's): first `ref ID`, the image REF names. When that is one of ENOUGH (known images
# that hold all of the image to ship but its top layer: a re-ship), its `known ID` is the whole
# answer (`listing skipped`): listing every image is the slowest docker call on a busy host, and
# the top layer of a new build is nowhere else. With no ENOUGH (a first ship, or a host not
# remembered) nothing can spare the listing: REF's inspect then runs beside it, its line last.
_CONTENT = (
    'if [ -n "$c" ] && [ -d "$c" ]; then\n'
    '  grep -sH "" -- "$c"/* | sed -n "s|^.*/\\([0-9a-f]\\{64\\}\\):|content \\1 |p"\n'
    'fi\n'
)
_SCRIPT = (
    'c=$1; known=" $2 "; ref=$3; enough=" $4 "; shift 4\n'
    + _CONTENT +
    'list() {\n'
    '  ids=$("$@" images -aq --no-trunc) || return $?\n'
    '  new=\n'
    '  for id in $(printf "%s\\n" $ids | sort -u); do\n'
    '    case $known in *" $id "*) echo "known $id" ;; *) new="$new $id" ;; esac\n'
    '  done\n'
    '  [ -n "$new" ] || return 0\n'
    '  "$@" image inspect --format "{{.Id}} {{json .RootFS.Layers}}" $new || true\n'
    '}\n'
    'if [ -n "$ref" ] && [ "$enough" = "  " ] && r=$(mktemp 2>/dev/null); then\n'
    '  "$@" image inspect --format "{{.Id}}" "$ref" > "$r" 2>/dev/null &\n'
    '  list "$@"; st=$?\n'
    '  wait\n'
    '  printf "ref %s\\n" "$(cat -- "$r")"; rm -f -- "$r"\n'
    '  exit $st\n'
    'fi\n'
    'if [ -n "$ref" ]; then\n'
    '  x=$("$@" image inspect --format "{{.Id}}" "$ref" 2>/dev/null)\n'
    '  printf "ref %s\\n" "$x"\n'
    '  case $enough in *" $x "*) if [ -n "$x" ]; then printf "known %s\\nlisting skipped\\n" "$x"; exit 0; fi ;; esac\n'
    'fi\n'
    'list "$@"\n'
)


def content_dir(staging: str) -> str:
    """Where the install records which blob the host's content store holds for each layer."""
    return posixpath.join(staging, "content")


def present_layers_argv(docker: tuple[str, ...], staging: str = "", known: Iterable[str] = (), ref: str = "",
                        enough: Iterable[str] = ()) -> tuple[str, ...]:
    """One command printing, per image on the host, its id and a JSON array of its layer diff IDs,
    or only `known ID` for the KNOWN ids (and the content records of the staging dir, if given).
    REF: first the id of the image it names; if that is one of ENOUGH, only that (see _SCRIPT)."""
    if not docker:
        raise ValueError("empty docker argv")
    ids = sorted(k for k in known if IMAGE_ID.match(k))  # word-split by the script: ids only
    sufficient = sorted(k for k in enough if IMAGE_ID.match(k))
    return ("sh", "-c", _SCRIPT, "sh", content_dir(staging) if staging else "", " ".join(ids), ref,
            " ".join(sufficient), *docker)


def content_argv(staging: str) -> tuple[str, ...]:
    """Only the content records of present_layers_argv: no docker call (a re-ship's light check)."""
    return ("sh", "-c", "c=$1\n" + _CONTENT, "sh", content_dir(staging))


def enough_for(diff_ids: Sequence[str], remembered: Mapping[str, Sequence[str]]) -> list[str]:
    """The remembered images that hold all of DIFF_IDS but the top layer (or all of them): when the
    host's REF names one, its layers are all the host can offer (pure)."""
    need = max(1, len(diff_ids) - 1)
    return sorted(i for i, layers in remembered.items()
                  if len(layers) >= need and list(layers[:need]) == list(diff_ids[:need]))


_HEX = re.compile(r"^[0-9a-f]{64}$")
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
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


# A registry's layer media types as the content records name them (an OCI load's manifest).
_AS_OCI = {
    **{t: t for t in MEDIA_TYPES},
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
}


def pulled_records(diff_ids: Sequence[str], layers: object) -> tuple[tuple[str, Descriptor], ...]:
    """The content records of an image pulled by the manifest whose layer list is LAYERS: layer i is
    diff id i, held in the content store as the blob the manifest names (pure). Layers of another
    media type (foreign layers) get none; a list that does not match DIFF_IDS gives none at all."""
    if not isinstance(layers, list) or len(layers) != len(diff_ids):
        return ()
    records = []
    for diff_id, desc in zip(diff_ids, layers, strict=True):
        if not isinstance(desc, Mapping):
            return ()
        media_type, digest, size = _AS_OCI.get(str(desc.get("mediaType"))), desc.get("digest"), desc.get("size")
        if (media_type and isinstance(digest, str) and digest.startswith("sha256:") and _HEX.match(digest[7:])
                and isinstance(size, int) and size >= 0 and _HEX.match(diff_id.removeprefix("sha256:"))):
            records.append((diff_id, Descriptor(media_type, digest, size)))
    return tuple(records)


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


@dataclass(frozen=True)
class Listing:
    """What the host's images are: ids it listed as known, and the layers of those it inspected."""

    known: frozenset[str]
    layers: Mapping[str, tuple[str, ...]]
    complete: bool = True  # False: only the image REF names (the listing was skipped)

    @property
    def ids(self) -> frozenset[str]:
        """Every image id the host listed."""
        return self.known | frozenset(self.layers)

    def present(self, remembered: Mapping[str, Sequence[str]] | None = None) -> frozenset[str]:
        """All ChainIDs present on the host: every prefix of every image's layer list (the known
        images' lists from REMEMBERED, the workstation's record of an earlier listing)."""
        lists = [*self.layers.values(), *((remembered or {}).get(i, ()) for i in self.known)]
        return frozenset(c for layers in lists for c in chain_ids(list(layers)))


def parse_listing(stdout: str) -> Listing:
    """present_layers_argv's output. Lines that are not ours (a warning on stdout) are skipped:
    that only costs bytes. An image the containerd store holds without its layers lists none."""
    known: set[str] = set()
    layers: dict[str, tuple[str, ...]] = {}
    complete = True
    for line in stdout.splitlines():
        head, _, rest = line.strip().partition(" ")
        if head == "known" and IMAGE_ID.match(rest):
            known.add(rest)
        elif line.strip() == "listing skipped":
            complete = False
        elif IMAGE_ID.match(head) and rest.startswith(("[", "null")):
            try:
                value = json.loads(rest)
            except ValueError:
                continue
            if isinstance(value, list) and all(isinstance(d, str) for d in value):
                layers[head] = tuple(value)
            elif value is None:
                layers[head] = ()
    return Listing(frozenset(known), layers, complete)


def parse_present(stdout: str) -> frozenset[str]:
    """All ChainIDs present on the host, from a listing made without known ids."""
    return parse_listing(stdout).present()


def missing_layers(diff_ids: Iterable[str], present: frozenset[str]) -> tuple[int, ...]:
    """Indexes of layers to send: from the first layer whose ChainID is absent to the top."""
    chains = chain_ids(list(diff_ids))
    for i, chain in enumerate(chains):
        if chain not in present:
            return tuple(range(i, len(chains)))
    return ()
