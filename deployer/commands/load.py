"""Pure builders for `docker load` on a host, fed from staged blobs (no load dir, no extra copy).

The host assembles the tar that `docker load` reads: its head (manifest.json, the config, and
one 512-byte tar header per layer file) comes from us on stdin; each layer's bytes are the
staged blob, decompressed on the way when the host's Docker cannot read the codec. Layers the
host already has are left out of the tar: `docker load` on the overlay2 store skips a layer
whose chain id exists without opening its file (DESIGN.md).

Two formats (FORMATS): "legacy", the classic `docker save` layout, for the classic (graph driver)
image store; "oci", an OCI image layout whose manifest names every layer by its uncompressed
digest, for the containerd image store, which refuses a classic tar that leaves a layer out but
loads an OCI layout whose left-out layers' blobs its content store already holds. Layers sent
by deployer, or loaded from a `docker save` tar, are held there under exactly that digest; a
layer the host got another way (a registry pull: compressed digests) makes the loaded image
incomplete, which the install script reports (exit 8) so the caller sends those layers too.

Layers are registered while later ones are still in flight: a prefix of the image's layers
loads as a stand-in image (`partial_config`: the same diff ids, labelled PARTIAL_LABEL with the
staging dir) that holds them until the real config loads; then the stand-ins are removed. Each
stand-in's id is written to the staging dir (`standins/`) before its load, so the install finds
them without listing the host's images (the slowest docker call on a containerd-store host). A
stand-in left by a killed ship still holds its layers, so the next ship does not send them
again, and removes it.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deployer.commands.layers import IMAGE_ID, content_dir, content_records
from deployer.refs import normalize, qualified
from deployer.tarfmt import (
    BLOCK,
    Descriptor,
    blob_name,
    digest_of,
    layer_path,
    load_manifest,
    oci_manifest,
    oci_small_files,
    tar_header,
    tar_member,
)

PARTIAL_LABEL = "io.deployer.partial"
MODES = ("zstd", "gzip", "link")  # link: the blob goes in as is (Docker reads that codec itself)
_BLOB_NAME = re.compile(r"^[0-9a-f]{64}\.(zst|gz)$")


# -- the tar head (pure; tar pieces shared with deployer.local.tarball) ------------------------

def partial_config(os: str, architecture: str, diff_ids: Sequence[str], staging: str) -> bytes:
    """The config of a stand-in image that holds the first layers while the rest arrive."""
    doc = {
        "architecture": architecture or "amd64",
        "config": {"Labels": {PARTIAL_LABEL: staging}},
        "os": os or "linux",
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def config_id(config: bytes) -> str:
    return f"sha256:{hashlib.sha256(config).hexdigest()}"


FORMATS = ("legacy", "oci")


@dataclass(frozen=True)
class LoadFile:
    """One layer file of a load: its staged blob, and its size inside the tar."""

    diff_id: str
    src: str
    size: int


@dataclass(frozen=True)
class LoadHead:
    """The stdin of load_argv/install_argv, the tar blocks before the layer headers, and the id
    Docker gives the loaded image (the config digest on the classic store, the manifest's on
    the containerd store)."""

    data: bytes
    blocks: int
    image_id: str
    tags: tuple[str, ...] = ()  # the names the load itself gives the image (a "legacy" load's RepoTags)


def load_head(fmt: str, config: bytes, diff_ids: Sequence[str], files: Sequence[LoadFile],
              layers: Mapping[str, Descriptor] | None = None, tags: Sequence[str] = ()) -> LoadHead:
    """The head of a load of the image `diff_ids` + `config`; `files` are the layers the tar carries.

    The "oci" format's manifest names every layer by a blob (`layers`: diff id -> descriptor, for
    the layers the tar leaves out too); each file is that blob, named by its digest.
    TAGS: `name:tag`s the load gives the image (one docker call less than a tag after it). On the
    classic store that is safe before any check: its image id is the digest of the config sent
    here, and docker load checks every layer against its diff id, so a load that succeeds made
    exactly this image. The containerd store can load an image it holds only in part (moby#49784):
    the install checks it and names REF back to what it named before when it is not complete
    (install_argv's PREVIOUS). A name the load moves keeps its old image, untagged, on both stores."""
    if fmt == "legacy":
        cfg_name = f"{config_id(config)[7:]}.json"
        head = tar_member("manifest.json", load_manifest(cfg_name, diff_ids, tags)) + tar_member(cfg_name, config)
        headers = b"".join(tar_header(layer_path(f.diff_id), f.size) for f in files)
        return LoadHead(head + headers, len(head) // BLOCK, config_id(config), tuple(tags))
    if fmt != "oci":
        raise ValueError(f"unknown load format {fmt!r}")
    descs = dict(layers or {})
    unknown = [d for d in diff_ids if d not in descs]
    if unknown:
        raise ValueError(f"no blob named for layers {unknown}")
    for f in files:
        if descs[f.diff_id].size != f.size:
            raise ValueError(f"layer {f.diff_id}: its file is {f.size} bytes, its blob {descs[f.diff_id].size}")
    manifest = oci_manifest(config, [descs[d] for d in diff_ids])
    head = oci_small_files(config, manifest, [qualified(t) for t in tags])
    headers = b"".join(tar_header(blob_name(descs[f.diff_id].digest), f.size) for f in files)
    return LoadHead(head + headers, len(head) // BLOCK, digest_of(manifest), tuple(tags))


# -- remote scripts ---------------------------------------------------------------------------

# Writes the tar to stdout: the head blocks, then per layer its header block, its bytes and the
# tar padding, then the end-of-archive blocks. A blob that fails to decompress truncates the tar,
# so docker load fails and loads nothing; docker load checks each layer against its diff id.
# With STALL > 0 (a stand-in load started while its last blob arrives), a blob not staged yet is
# read from its .partial as the receive appends to it, until the receive has checked it and
# named it (the blob's own path appears): Docker unpacks it while it lands. No new byte for STALL
# seconds (a cut link, a blob that failed its check) truncates the tar, so the load loads nothing.
# The follow reads what has landed every 20 ms, not once per write: a loop that read again at
# once spawned wc, tr and head hundreds of times a second while it kept up with the blob.
_FEED = (
    'stalled() {\n'  # one more 50 ms without a new byte: false (and why) after STALL seconds of them
    '  f_idle=$((f_idle + 1)); [ "$f_idle" -le $((stall * 20)) ] || { echo "no new bytes for ${stall}s" >&2; return 1; }\n'
    '  sleep 0.05\n'
    '}\n'
    'follow() {\n'
    '  f_src=$1; f_p=$1.partial; f_off=0; f_idle=0\n'
    '  until { [ -f "$f_src" ] && command exec 3< "$f_src"; } 2>/dev/null || { [ -f "$f_p" ] && command exec 3< "$f_p"; } 2>/dev/null\n'
    '  do stalled || return 1; done\n'
    '  while :; do\n'
    '    if [ -f "$f_src" ]; then cat <&3; return; fi\n'  # checked and named: the rest of what fd 3 holds
    '    f_n=$(wc -c < "$f_p" 2>/dev/null)\n'  # test and $((...)) take a padded count (BSD wc)
    '    if [ "${f_n:-0}" -gt "$f_off" ]; then head -c $((f_n - f_off)) <&3 || return 1; f_off=$((f_n)); f_idle=0; sleep 0.02\n'
    '    else stalled || return 1; fi\n'
    '  done\n'
    '}\n'
    'unpack() { case $mode in zstd) zstd -dcq -- "$@" ;; gzip) gzip -dc -- "$@" ;; *) cat -- "$@" ;; esac; }\n'
    'feed() {\n'
    '  head=$1; mode=$2; blocks=$3; n=$4; shift 4\n'
    '  dd if="$head" bs=512 count="$blocks" 2>/dev/null || return 3\n'
    '  i=$blocks\n'
    '  while [ "$n" -gt 0 ]; do\n'
    '    src=$1; pad=$2; shift 2; n=$((n - 1))\n'
    '    dd if="$head" bs=512 skip="$i" count=1 2>/dev/null || return 3\n'
    '    i=$((i + 1))\n'
    '    if [ "$stall" -gt 0 ] && [ ! -f "$src" ]; then\n'
    '      if [ "$mode" = link ]; then follow "$src"; else follow "$src" | unpack; fi\n'  # zstd/gzip see a cut
    '    else unpack "$src"; fi || return 3\n'
    '    [ "$pad" -eq 0 ] || head -c "$pad" /dev/zero || return 3\n'
    '  done\n'
    '  head -c 1024 /dev/zero\n'
    '}\n'
)

# A stand-in load (or the real one, when it carries the last layers). Exit 3 filesystem, else
# docker load's own status; stdout is docker load's ("Loaded image ID: ...").
# Containerd store: which blob names each layer a load registered (deployer.commands.layers), for
# the next ship's manifest; written only after Docker took the layers.
_RECORD = (
    'record() {\n'
    '  [ -n "$records" ] || return 0\n'
    '  mkdir -p -- "$cdir" && printf "%s\\n" "$records" | while read -r d t g s; do\n'
    '    printf "%s %s %s\\n" "$t" "$g" "$s" > "$cdir/$d"; done\n'
    '}\n'
)

_LOAD = (
    'set -f\n' + _FEED + _RECORD +
    'head=$1; cdir=$2; records=$3; sdir=$4; standin=$5; stall=$6; shift 6\n'
    'k=$((3 + 2 * $3))\n'
    'dk_load() { shift $k; "$@" load; }\n'
    'if [ -n "$standin" ]; then mkdir -p -- "$sdir" && : > "$sdir/${standin#sha256:}" || exit 3; fi\n'
    'cat > "$head" || exit 3\n'
    'feed "$head" "$@" | dk_load "$@"\n'
    'st=$?; rm -f -- "$head"; [ $st -ne 0 ] || record; exit $st'
)

# The last step, in one round trip: load what is left (nothing when the image is there already,
# e.g. after a lost reply), check the id and that the image is complete (the containerd store
# shows an image whose content it lacks with no layers), remove the stand-ins and the staged
# blobs (the image is safe in Docker now) while it tags. Exit codes: 3 filesystem, 5 docker load,
# 6 wrong id, 7 docker tag, 8 incomplete (some left-out layer's blob is not in the content store).
# Three docker calls in a row (load, inspect, tag): each costs a start of the docker CLI. (A tag
# that succeeded names the id: reading REF back would only race with whoever tags it next.)
# A load whose head names REF (TAGGED=1, see load_head) tags it itself, and then one inspect of
# the id and REF checks both (exit 9: REF names another image): two calls in a row. TAGGED=whole:
# a load that succeeds made the image whole by construction (deployer.ship.loader.made_whole) and
# named REF: no inspect after it (25 ms on a re-ship, the classic store's one docker call after it).
# The stand-ins to remove are those whose ids earlier loads wrote to SDIR (standins_dir), all in
# one `docker image rm` (a call per stand-in cost 25-70 ms each after the last byte), started as
# soon as the image is in Docker (it holds every layer they held), while the image is checked:
# on the containerd store the check and the removal took 55 and 65 ms one after the other.
# The staged blobs are moved out of the blob dir at once (renames, to a private dir beside it)
# and unlinked after the reply: unlinking a first ship's ~300 MB of blobs took 80-120 ms.
# Whether the image is there already is asked only when a layer file the tar needs is gone: the
# install removes them only once the image is verified, so that is a retry after a lost reply.
# TAGGED=loaded: the layer loader's last load was the image itself (deployer.ship.loader): no
# load, only the checks, the cleanup and the tag. TAGGED=named: that load also named REF, and it
# made the image whole by construction: nothing is asked of Docker but the stand-ins' removal; on
# a first ship the inspect and the tag cost 50 and 25 ms after the last byte.
_INSTALL = (
    'set -f\n' + _FEED + _RECORD +
    'head=$1; id=$2; ref=$3; sdir=$4; blobs=$5; names=$6; cdir=$7; records=$8; tagged=$9; previous=${10}\n'
    'shift 10; stall=0\n'
    'k=$((3 + 2 * $3))\n'
    'dk_state() { shift $k; "$@" image inspect --format "{{.Id}} {{len .RootFS.Layers}}" "$x" 2>/dev/null; }\n'
    'dk_id() { shift $k; "$@" image inspect --format "{{.Id}}" "$x" 2>/dev/null; }\n'
    'dk_load() { shift $k; "$@" load; }\n'
    'dk_rmi() { shift $k; "$@" image rm $olds >/dev/null 2>&1; }\n'
    'dk_tag() { shift $k; "$@" tag "$id" "$ref"; }\n'
    # a load that named REF made no complete image of the one expected: REF names what it named before
    'dk_restore() { shift $k; { [ -n "$previous" ] && "$@" tag "$previous" "$ref"; } >/dev/null 2>&1 ||\n'
    '  "$@" image rm "$ref" >/dev/null 2>&1; }\n'
    'undo() { [ "$by_load" != 1 ] || dk_restore "$@"; }\n'
    'complete() { [ "${1%% *}" = "$id" ] && [ "${1##* }" -gt 0 ] 2>/dev/null; }\n'
    'have_files() { n=$3; shift 3; while [ "$n" -gt 0 ]; do [ -e "$1" ] || return 1; shift 2; n=$((n - 1)); done; }\n'
    'cat > "$head" || exit 3\n'
    'x=$id\n'
    'by_load=\n'
    'made=; case $tagged in loaded|named) made=1 ;; esac\n'
    'if [ -z "$made" ] && { have_files "$@" || ! complete "$(dk_state "$@")"; }; then\n'
    '  feed "$head" "$@" | dk_load "$@" || { rm -f -- "$head"; exit 5; }\n'
    '  by_load=$tagged\n'
    'fi\n'
    'rm -f -- "$head"\n'
    'hs=$(ls -- "$sdir" 2>/dev/null); olds=\n'
    'for h in $hs; do [ "sha256:$h" = "$id" ] || olds="$olds sha256:$h"; done\n'
    '[ -z "$olds" ] || dk_rmi "$@" &\n'
    # a load that named REF: REF's state is the image's when it names it (one lookup); else
    # (another image took the name, or the image is incomplete) the image's own is looked up
    # known whole and named without asking Docker: by the loader's load (named) or by this one (whole)
    'sure=; { [ "$tagged" = named ] || [ "$by_load" = whole ]; } && sure=1\n'
    'if [ -n "$sure" ]; then state="$id 1"\n'
    'elif [ "$by_load" = 1 ]; then\n'
    '  x=$ref; state=$(dk_state "$@"); t=${state%% *}; x=$id\n'
    '  [ "$t" = "$id" ] || state=$(dk_state "$@")\n'
    'else state=$(dk_state "$@"); fi\n'
    'got=${state%% *}\n'
    '[ -n "$got" ] || got=$(dk_id "$@")  # an image the containerd store holds only in part\n'
    'echo "loaded $got"\n'
    '[ "$got" = "$id" ] || { undo "$@"; wait; exit 6; }\n'
    'complete "$state" || { undo "$@"; wait; exit 8; }\n'
    'record\n'
    # the blobs (set -f: names are not globbed) and the stand-ins' records go; the blobs' data is
    # unlinked in the background, its output nowhere, so the reply does not wait for it
    '[ -z "$names" ] || (\n'
    '  cd -- "$blobs" 2>/dev/null || exit 0\n'
    '  trash=${blobs%/*}/.trash-$$\n'
    '  { mkdir -p -- "$trash" && mv -f -- $names "$trash"/; } 2>/dev/null || rm -f -- $names\n'
    '  rm -rf -- "$trash" </dev/null >/dev/null 2>&1 &\n'
    ')\n'
    '[ -z "$hs" ] || (cd -- "$sdir" && rm -f -- $hs)\n'
    'if [ -n "$sure" ]; then t=$id\n'
    'elif [ "$by_load" != 1 ]; then dk_tag "$@" || { wait; exit 7; }; t=$id; fi\n'
    'wait\n'
    't=${t%% *}\n'
    'echo "tagged $t"\n'
    '[ "$t" = "$id" ] || exit 9'
)

_REMOVE_PARTIALS = (
    'set -f; label=$1; shift\n'
    'xs=$("$@" images -q --no-trunc --filter "label=$label")\n'
    '[ -z "$xs" ] || "$@" image rm $xs >/dev/null 2>&1; exit 0'
)


def _layer_args(mode: str, files: Sequence[LoadFile]) -> list[str]:
    if mode not in MODES:
        raise ValueError(f"unknown load mode {mode!r}")
    # a dry run does not know the sizes yet (-1): it shows the padding as a placeholder
    return [part for f in files for part in (f.src, str(-f.size % BLOCK) if f.size >= 0 else "<tar padding>")]


def standins_dir(staging: str) -> str:
    """Where a stand-in load writes its image's id before it loads (the install removes them)."""
    return posixpath.join(staging, "standins")


def load_argv(docker: Sequence[str], head_path: str, mode: str, blocks: int | str,
              files: Sequence[LoadFile], staging: str = "",
              records: Sequence[tuple[str, Descriptor]] = (), standin: str = "",
              stall_s: int = 0) -> tuple[str, ...]:
    """docker load of a tar made of stdin (load_head) and FILES' staged blobs; then RECORDS (the
    blobs an OCI load named its layers by) go to STAGING's content records. STANDIN: the id the
    load gives its (stand-in) image, written to STAGING's standins/ first. STALL_S > 0: a blob
    not staged yet is read as it arrives, until it is (see _FEED), giving up after STALL_S
    seconds without a new byte."""
    if standin and (not staging or not IMAGE_ID.match(standin)):
        raise ValueError(f"a stand-in id needs a staging dir and an image id: {standin!r}")
    if stall_s < 0:
        raise ValueError(f"a stall limit is a number of seconds, not {stall_s}")
    return ("sh", "-c", _LOAD, "sh", head_path, content_dir(staging) if staging else "", content_records(records),
            standins_dir(staging) if staging else "", standin, str(stall_s),
            mode, str(blocks), str(len(files)), *_layer_args(mode, files), *docker)


def install_argv(docker: Sequence[str], head_path: str, image_id: str, ref: str, staging: str, blob_dir: str,
                 blobs: Sequence[str], mode: str, blocks: int | str, files: Sequence[LoadFile],
                 records: Sequence[tuple[str, Descriptor]] = (), *, tagged: bool = False,
                 previous: str = "", loaded: bool = False, whole: bool = False,
                 preview: bool = False) -> tuple[str, ...]:
    """Load what is left, verify the id, record which blob holds each layer (RECORDS, containerd
    store), remove stand-ins and the staged BLOBS (names), tag REF (TAGGED: the head names REF,
    so the load tags it; when the check fails, REF names PREVIOUS again, the id it named before,
    or nothing if none). LOADED: an earlier load made the image already (no load; FILES must be
    empty). WHOLE: the load that makes the image (LOADED: that earlier one; else this one, whose
    head names REF) makes IMAGE_ID whole by construction and names REF: no check, no tag after it.
    PREVIEW (a dry run): blob names and sizes may be placeholders."""
    if loaded and (files or tagged):
        raise ValueError("an image loaded already has no layers left to load and no load to tag it")
    if whole and not (loaded or tagged):
        raise ValueError("only a load that names REF can make the image whole and named")
    if previous and not IMAGE_ID.match(previous):
        raise ValueError(f"not an image id: {previous!r}")
    for name in blobs:
        if not preview and not _BLOB_NAME.match(name):
            raise ValueError(f"not a staged blob name: {name}")  # the cleanup word-splits them
    return ("sh", "-c", _INSTALL, "sh", head_path, image_id, ref, standins_dir(staging), blob_dir,
            " ".join(blobs), content_dir(staging), content_records(records),
            _tagged_word(tagged, loaded, whole), previous,
            mode, str(blocks), str(len(files)), *_layer_args(mode, files), *docker)


def _tagged_word(tagged: bool, loaded: bool, whole: bool) -> str:
    """The install script's TAGGED: how the image got (or gets) into Docker, and what is left to check."""
    if loaded:
        return "named" if whole else "loaded"
    return ("whole" if whole else "1") if tagged else ""


def remove_partials_argv(docker: Sequence[str], staging: str) -> tuple[str, ...]:
    """Remove the stand-in images of this staging dir (a failed ship; never forced)."""
    return ("sh", "-c", _REMOVE_PARTIALS, "sh", f"{PARTIAL_LABEL}={staging}", *docker)


@dataclass(frozen=True)
class Installed:
    """What the install script reported: the loaded id and the id REF now names."""

    loaded: str | None
    tagged: str | None


def parse_install(stdout: str) -> Installed:
    loaded, tagged = None, None
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "loaded":
            loaded = value.strip() or None
        elif key == "tagged":
            tagged = value.strip() or None
    return Installed(loaded, tagged)


def loaded_as(stdout: str, head: LoadHead) -> bool:
    """Whether `docker load` (its STDOUT) reports the image HEAD makes: its id, or, when the head
    names it, every name (Docker prints a name instead of the id, in its short form)."""
    loaded = parse_loaded(stdout)
    if head.image_id in loaded:
        return True
    names = {qualified(normalize(x)) for x in loaded if not IMAGE_ID.match(x)}
    return bool(head.tags) and all(qualified(normalize(t)) in names for t in head.tags)


def parse_loaded(stdout: str) -> tuple[str, ...]:
    """Image ids (or refs) `docker load` reports: `Loaded image ID: sha256:...`/`Loaded image: ref`."""
    out = []
    for line in stdout.splitlines():
        for prefix in ("Loaded image ID:", "Loaded image:"):
            if line.startswith(prefix):
                out.append(line[len(prefix):].strip())
    return tuple(out)
