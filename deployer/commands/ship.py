"""Pure argv builders (and parsers) for the remote side of `deploy ship`.

Staging layout on a host (under deploy_staging_dir):
    blobs/sha256/<hex>.<codec>          verified compressed layer blobs (hex = their sha256)
    blobs/sha256/<hex>.<codec>.partial  a blob being received; its size is the acknowledged offset
    load/<image hex>/                   the docker-load directory assembled from the blobs
    lock/owner                          the deploy lock (see deployer.ship.lock)

Every script is a constant; variable parts (paths, digests, the docker argv) are positional
arguments, so nothing from the user is ever interpolated into shell code.
"""
from __future__ import annotations

import json
import posixpath
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SUFFIX = {"zstd": "zst", "gzip": "gz"}


# -- paths ---------------------------------------------------------------------------------

def blob_dir(staging: str) -> str:
    return posixpath.join(staging, "blobs", "sha256")


def blob_path(staging: str, digest: str, codec: str) -> str:
    """Where a verified blob lives: blobs/sha256/<hex of the compressed bytes>.<codec suffix>."""
    return posixpath.join(blob_dir(staging), f"{_hex(digest)}.{SUFFIX.get(codec, codec)}")


def partial_path(staging: str, digest: str, codec: str) -> str:
    return blob_path(staging, digest, codec) + ".partial"


def load_dir(staging: str, image_id: str) -> str:
    return posixpath.join(staging, "load", _hex(image_id))


def layer_path(load: str, diff_id: str) -> str:
    """The docker-load layout's `<diff hex>/layer.tar` inside a load dir (see manifest_json)."""
    return posixpath.join(load, _hex(diff_id), "layer.tar")


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


# -- staging ---------------------------------------------------------------------------------

_STAT = (
    'for f do\n'
    '  if [ -f "$f" ]; then printf "%s %s\\n" "$(wc -c < "$f" | tr -d " ")" "$f"\n'
    '  else printf -- "- %s\\n" "$f"; fi\n'
    'done'
)


def stat_argv(paths: Sequence[str]) -> tuple[str, ...]:
    """Print `<size> <path>` for each existing regular file, `- <path>` for a missing one."""
    return ("sh", "-c", _STAT, "sh", *paths)


def parse_stat(stdout: str) -> dict[str, int | None]:
    """path -> size in bytes, or None when the file does not exist."""
    out: dict[str, int | None] = {}
    for line in stdout.splitlines():
        size, _, path = line.partition(" ")
        if not path:
            continue
        out[path] = int(size) if size.isdigit() else None
    return out


def append_argv(path: str) -> tuple[str, ...]:
    """Append stdin to PATH (the resumable receive: the file size is the acknowledged offset)."""
    return ("sh", "-c", 'mkdir -p -- "${1%/*}" && cat >> "$1"', "sh", path)


# A wrong hash deletes the file so the next attempt starts clean; a right one renames it into
# place (atomic within the staging filesystem), so a final name always means "verified".
# Retry-safe: when a lost reply makes us run it again, the partial is gone and FINAL is checked.
_VERIFY = (
    'src=$1\n'
    '[ -f "$src" ] || [ ! -f "$3" ] || src=$3\n'
    'h=$(sha256sum < "$src") || exit $?\n'
    'h="sha256:${h%% *}"\n'
    'if [ "$h" = "$2" ]; then\n'
    '  [ "$src" = "$3" ] || mv -f -- "$src" "$3" || exit $?\n'
    '  echo "ok $h"\n'
    'else\n'
    '  rm -f -- "$src"\n'
    '  echo "mismatch $h"\n'
    'fi'
)


def verify_argv(src: str, digest: str, final: str) -> tuple[str, ...]:
    """sha256 SRC; equal to DIGEST -> move to FINAL and print `ok`; else delete and print `mismatch`."""
    return ("sh", "-c", _VERIFY, "sh", src, digest, final)


@dataclass(frozen=True)
class Verified:
    ok: bool
    actual: str


def parse_verify(stdout: str) -> Verified:
    words = stdout.split()
    if len(words) >= 2 and words[0] in ("ok", "mismatch"):
        return Verified(words[0] == "ok", words[1])
    return Verified(False, "")


def remove_argv(paths: Iterable[str]) -> tuple[str, ...]:
    return ("rm", "-rf", "--", *paths)


# -- assemble and load -----------------------------------------------------------------------

# One round trip from staged blobs to a tagged image. Per layer (src, dst, diff id): hard-link
# the blob as <dst> (docker load decompresses it), or decompress it there checking sha256 ==
# diff id (no pipefail in POSIX sh: a failed decompress shows as a wrong hash) unless <dst> is
# there already: it only ever appears by rename after that check (see unpack_layer_argv). Then load,
# check the loaded id, drop the load dir and blobs (the image is safe in Docker now), and only
# then tag. Retry-safe: if the image is already there (a lost reply), it only cleans and tags.
# Exit codes: 3 filesystem, 4 bad layer, 5 docker load, 6 wrong id, 7 docker tag.
_INSTALL = (
    'set -f\n'
    'load=$1; id=$2; ref=$3; mode=$4; n=$5; shift 5\n'
    'dc() { case $mode in zstd) zstd -dcq -- "$1" ;; gzip) gzip -dc -- "$1" ;; *) return 2 ;; esac; }\n'
    'names=""; blobs=""\n'
    'docker_id() { shift $((3 * n)); "$@" image inspect --format "{{.Id}}" "$id" 2>/dev/null; }\n'
    'have=$(docker_id "$@")\n'
    'while [ "$n" -gt 0 ]; do\n'
    '  src=$1; dst=$2; diff=$3; shift 3; n=$((n - 1))\n'
    '  names="$names ${src##*/}"; blobs=${src%/*}\n'
    '  [ "$have" = "$id" ] && continue\n'
    '  mkdir -p -- "${dst%/*}" || exit 3\n'
    '  if [ "$mode" = link ]; then\n'
    '    ln -f -- "$src" "$dst" 2>/dev/null || cp -f -- "$src" "$dst" || exit 3\n'
    '  elif [ ! -f "$dst" ]; then\n'
    '    h=$(dc "$src" | tee -- "$dst.tmp" | sha256sum) || exit 3\n'
    '    h="sha256:${h%% *}"\n'
    '    [ "$h" = "$diff" ] || { rm -f -- "$dst.tmp"; echo "badlayer $diff $h"; exit 4; }\n'
    '    mv -f -- "$dst.tmp" "$dst" || exit 3\n'
    '  fi\n'
    'done\n'
    'if [ "$have" != "$id" ]; then\n'
    '  cd -- "$load" || exit 3\n'
    '  tar -cf - . | "$@" load || exit 5\n'
    'fi\n'
    'got=$("$@" image inspect --format "{{.Id}}" "$id" 2>/dev/null)\n'
    'echo "loaded $got"\n'
    '[ "$got" = "$id" ] || exit 6\n'
    'cd / && rm -rf -- "$load"\n'
    'for f in $names; do rm -f -- "$blobs/$f"; done\n'
    '"$@" tag "$id" "$ref" || exit 7\n'
    'echo "tagged $("$@" image inspect --format "{{.Id}}" "$ref" 2>/dev/null)"'
)
INSTALL_MODES = ("link", "zstd", "gzip")
_BLOB_NAME = re.compile(r"^[0-9a-f]{64}\.(zst|gz)$")


def install_argv(docker: Sequence[str], load: str, image_id: str, ref: str, mode: str,
                 layers: Sequence[tuple[str, str, str]]) -> tuple[str, ...]:
    """Assemble, load, verify, clean and tag in one command. layers: (staged blob, dst, diff id)."""
    if mode not in INSTALL_MODES:
        raise ValueError(f"unknown install mode {mode!r}")
    for src, _, _ in layers:
        if not _BLOB_NAME.match(posixpath.basename(src)):
            raise ValueError(f"not a staged blob path: {src}")  # names are word-split by the cleanup
    args = [part for layer in layers for part in layer]
    return ("sh", "-c", _INSTALL, "sh", load, image_id, ref, mode, str(len(layers)), *args, *docker)


# The install script's per-layer decompress, run early: right after a blob is verified, while
# the next one is still in flight, so the final install only tars and loads. Exit 4 = bad layer.
_UNPACK_LAYER = (
    'mode=$1; src=$2; dst=$3; diff=$4\n'
    '[ -f "$dst" ] && { echo "unpacked $diff"; exit 0; }\n'
    'case $mode in zstd) set -- zstd -dcq ;; gzip) set -- gzip -dc ;; *) exit 2 ;; esac\n'
    'mkdir -p -- "${dst%/*}" || exit 3\n'
    'h=$("$@" -- "$src" | tee -- "$dst.tmp" | sha256sum) || exit 3\n'
    'h="sha256:${h%% *}"\n'
    '[ "$h" = "$diff" ] || { rm -f -- "$dst.tmp"; echo "badlayer $diff $h"; exit 4; }\n'
    'mv -f -- "$dst.tmp" "$dst" || exit 3\n'
    'echo "unpacked $diff"'
)


def unpack_layer_argv(mode: str, src: str, dst: str, diff_id: str) -> tuple[str, ...]:
    """Decompress a verified blob to DST (the load dir's layer.tar) if its sha256 is DIFF_ID."""
    if mode not in ("zstd", "gzip"):
        raise ValueError(f"unknown decompress mode {mode!r}")
    return ("sh", "-c", _UNPACK_LAYER, "sh", mode, src, dst, diff_id)


# docker load fed while the blobs still arrive, so Docker unpacks the tar during the transfer
# (as `... | ssh host docker load` would) instead of after it. Each stdin line names a file of
# the load dir, its tar padding and its tar header as printf octal escapes (every byte escaped,
# so the header is data, never format). A "." line ends the tar; stdin closing without it (the
# client gave up) spoils the stream with a block that is no tar header, so docker load fails
# and loads nothing. Install then finds the image loaded (or loads it the usual way) and
# verifies, cleans and tags.
_LOAD_STREAM = (
    'set -f\n'
    'load=$1; shift\n'
    'cd -- "$load" || exit 3\n'
    '{ while read -r name pad hdr; do\n'
    '    if [ "$name" = . ]; then head -c 1024 /dev/zero; exit 0; fi\n'
    '    printf "$hdr" && cat -- "$name" || exit 3\n'
    '    [ "$pad" -eq 0 ] || head -c "$pad" /dev/zero || exit 3\n'
    '  done\n'
    '  printf "%01000d" 0; exit 9; } | "$@" load'
)


def load_stream_argv(docker: Sequence[str], load: str) -> tuple[str, ...]:
    """`docker load` of a tar assembled on the host from load-dir files named on stdin (load_stream_line)."""
    return ("sh", "-c", _LOAD_STREAM, "sh", load, *docker)


def load_stream_line(name: str, size: int) -> bytes:
    """One stdin line of load_stream_argv: the load-dir file NAME of SIZE bytes, with its tar header.

    ValueError for a name the line cannot carry or a size ustar cannot (8 GiB and up)."""
    if not re.fullmatch(r"[0-9A-Za-z._-][0-9A-Za-z._/-]*", name) or name == ".":
        raise ValueError(f"not a load dir file name: {name!r}")
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    escaped = "".join(f"\\{b:03o}" for b in header)
    return f"{name} {-size % 512} {escaped}\n".encode()


LOAD_STREAM_END = b". 0 -\n"


@dataclass(frozen=True)
class Installed:
    """What the install script reported: a bad layer, the loaded id, the id REF now names."""

    bad_layer: tuple[str, str] | None
    loaded: str | None
    tagged: str | None


def parse_install(stdout: str) -> Installed:
    bad, loaded, tagged = None, None, None
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "badlayer":
            diff, _, actual = value.partition(" ")
            bad = (diff, actual)
        elif key == "loaded":
            loaded = value or None
        elif key == "tagged":
            tagged = value or None
    return Installed(bad, loaded, tagged)


# A fresh load dir filled from a small tar on stdin (manifest.json + config): one round trip.
_UNPACK = 'rm -rf -- "$1" && mkdir -p -- "$1" && tar -C "$1" -xf -'


def unpack_argv(path: str) -> tuple[str, ...]:
    return ("sh", "-c", _UNPACK, "sh", path)


# At the start of a transfer, one round trip: a fresh (empty) load dir, and the size of every
# file already in the blob dir, so no blob needs its own stat before it is sent (the deploy
# lock keeps other ships out of this staging dir meanwhile). Output as stat_argv's.
_PREPARE = (
    'rm -rf -- "$1" && mkdir -p -- "$1" "$2" && cd -- "$2" || exit $?\n'
    'for f in *; do\n'
    '  [ -f "$f" ] && printf "%s %s\\n" "$(wc -c < "$f" | tr -d " ")" "$2/$f"\n'
    'done; exit 0'
)


def prepare_argv(load: str, blobs: str) -> tuple[str, ...]:
    """Empty the load dir LOAD and list the files in BLOBS with their sizes (parse with parse_stat)."""
    return ("sh", "-c", _PREPARE, "sh", load, blobs)


_EXTRACT = 'mkdir -p -- "$1" && tar -C "$1" -xf -'


def extract_argv(path: str) -> tuple[str, ...]:
    """Extract a tar from stdin into PATH, keeping what is there (layers unpacked meanwhile)."""
    return ("sh", "-c", _EXTRACT, "sh", path)


def parse_loaded(stdout: str) -> tuple[str, ...]:
    """Image ids (or refs) `docker load` reports: `Loaded image ID: sha256:...`/`Loaded image: ref`."""
    out = []
    for line in stdout.splitlines():
        for prefix in ("Loaded image ID:", "Loaded image:"):
            if line.startswith(prefix):
                out.append(line[len(prefix):].strip())
    return tuple(out)


# -- image state, tag, verify ---------------------------------------------------------------

_STATE = (
    'ref=$1; id=$2; shift 2\n'
    'printf "ref %s\\n" "$("$@" image inspect --format "{{.Id}}" "$ref" 2>/dev/null)"\n'
    'printf "id %s\\n" "$("$@" image inspect --format "{{.Id}}" "$id" 2>/dev/null)"'
)


def image_state_argv(docker: Sequence[str], ref: str, image_id: str) -> tuple[str, ...]:
    """Which image REF names on the host, and whether IMAGE_ID is there (one round trip)."""
    return ("sh", "-c", _STATE, "sh", ref, image_id, *docker)


@dataclass(frozen=True)
class ImageState:
    """What the host has: the id its REF points at (or None) and whether the wanted id exists."""

    ref_id: str | None
    has_id: bool


def parse_image_state(stdout: str) -> ImageState:
    ref_id: str | None = None
    has_id = False
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "ref" and value.startswith("sha256:"):
            ref_id = value
        elif key == "id" and value.startswith("sha256:"):
            has_id = True
    return ImageState(ref_id, has_id)


def inspect_id_argv(docker: Sequence[str], ref: str) -> tuple[str, ...]:
    return (*docker, "image", "inspect", "--format", "{{.Id}}", ref)


def tag_argv(docker: Sequence[str], source: str, ref: str) -> tuple[str, ...]:
    return (*docker, "tag", source, ref)


_TAG = 'src=$1; ref=$2; shift 2\n"$@" tag "$src" "$ref" || exit $?\n"$@" image inspect --format "{{.Id}}" "$ref"'


def tag_verify_argv(docker: Sequence[str], source: str, ref: str) -> tuple[str, ...]:
    """Tag SOURCE as REF and print the id REF now resolves to (one round trip)."""
    return ("sh", "-c", _TAG, "sh", source, ref, *docker)


def remove_image_argv(docker: Sequence[str], image: str) -> tuple[str, ...]:
    """Remove an image (never forced: one used by a container stays)."""
    return (*docker, "image", "rm", image)


def pull_argv(docker: Sequence[str], remote_ref: str) -> tuple[str, ...]:
    return (*docker, "pull", remote_ref)


def parse_pull(stdout: str) -> tuple[int, int]:
    """(layers pulled, layers already present) from non-tty `docker pull` output."""
    pulled = sum(1 for ln in stdout.splitlines() if ln.rstrip().endswith(": Pull complete"))
    present = sum(1 for ln in stdout.splitlines() if ln.rstrip().endswith(": Already exists"))
    return pulled, present


# -- lock ------------------------------------------------------------------------------------

_LOCK = (
    'mkdir -p -- "$1" || exit $?\n'
    'if mkdir -- "$1/lock" 2>/dev/null; then\n'
    '  printf "%s\\n" "$2" > "$1/lock/owner" || { rm -rf -- "$1/lock"; exit 1; }\n'
    '  echo acquired; exit 0\n'
    'fi\n'
    'echo held\n'
    'echo "now $(date +%s)"\n'
    'echo "mtime $(stat -c %Y -- "$1/lock" 2>/dev/null || echo 0)"\n'
    'printf "owner "; cat -- "$1/lock/owner" 2>/dev/null; echo'
)


def lock_argv(staging: str, owner: str) -> tuple[str, ...]:
    """Atomically create STAGING/lock (mkdir) with an owner line; else print who holds it."""
    return ("sh", "-c", _LOCK, "sh", staging, owner)


@dataclass(frozen=True)
class LockState:
    acquired: bool
    age_s: int | None = None
    owner: dict[str, object] | None = None


def parse_lock(stdout: str) -> LockState:
    lines = stdout.splitlines()
    if lines and lines[0].strip() == "acquired":
        return LockState(True)
    fields: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        fields.setdefault(key, value.strip())
    age = None
    if fields.get("now", "").isdigit() and fields.get("mtime", "").isdigit() and fields["mtime"] != "0":
        age = max(0, int(fields["now"]) - int(fields["mtime"]))
    owner = None
    try:
        parsed = json.loads(fields.get("owner") or "null")
        owner = parsed if isinstance(parsed, dict) else None
    except ValueError:
        owner = None
    return LockState(False, age, owner)


_UNLOCK = 'if grep -qF -- "$2" "$1/lock/owner" 2>/dev/null; then rm -rf -- "$1/lock"; fi'


def unlock_argv(staging: str, token: str) -> tuple[str, ...]:
    """Remove the lock only if it is still ours (its owner line carries our token)."""
    return ("sh", "-c", _UNLOCK, "sh", staging, token)


def break_lock_argv(staging: str) -> tuple[str, ...]:
    return ("rm", "-rf", "--", posixpath.join(staging, "lock"))
