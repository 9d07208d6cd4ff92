"""Pure argv builders (and parsers) for the remote side of `deploy ship`.

Staging layout on a host (under deploy_staging_dir):
    blobs/sha256/<hex>.<codec>          verified compressed layer blobs (hex = their sha256)
    blobs/sha256/<hex>.<codec>.partial  a blob being received; its size is the acknowledged offset
    blobs/sha256/<layer hex>.<codec><level>.growing.partial
                                        a blob received while it was compressed (digest not known yet)
    load-<image hex>.head               the tar head of a running docker load (deployer.commands.load)
    lock/owner                          the deploy lock (see deployer.lock)

Every script is a constant; variable parts (paths, digests, the docker argv) are positional
arguments, so nothing from the user is ever interpolated into shell code.
"""
from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deployer.commands.layers import content_records
from deployer.tarfmt import Descriptor

SUFFIX = {"zstd": "zst", "gzip": "gz"}


# -- paths ---------------------------------------------------------------------------------

def blob_dir(staging: str) -> str:
    return posixpath.join(staging, "blobs", "sha256")


def blob_path(staging: str, digest: str, codec: str) -> str:
    """Where a verified blob lives: blobs/sha256/<hex of the compressed bytes>.<codec suffix>."""
    return posixpath.join(blob_dir(staging), f"{_hex(digest)}.{SUFFIX.get(codec, codec)}")


def partial_path(staging: str, digest: str, codec: str) -> str:
    return blob_path(staging, digest, codec) + ".partial"


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


# sha256 of stdin as "<hex> ...": OpenSSL's is 3-4x faster than coreutils' (SHA extensions),
# which matters on a host busy unpacking layers; sha256sum where there is no openssl.
_SHA = (
    'sha() { if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi; }\n'
)

# A dead ship's receive can outlive it on the host: its deployer was killed or its link dropped,
# and bytes already on their way still reach the file after the next ship has read its size
# (seen: a resume at the size listed, then the dead one's tail, then a sha256 mismatch and the
# whole blob sent again). So before a file is appended to or moved, the receives of ours that
# name it (argv: RECEIVER and that exact path; a site relay's forwarder reads such a file and is
# left alone) are stopped, with their process groups (sshd gives each command its own). The
# deploy lock is this ship's, so no live ship writes there. Linux /proc; elsewhere a no-op.
# A stopped group is waited for while any of its processes still runs: a zombie writes nothing, and
# under an init that does not reap orphans (sshd in a container, this machine's sandbox) the group's
# zombies would otherwise hold every such stop for its whole grace period.
RECEIVER = "deployer-receive"
_STOP = (
    'running() {\n'  # a process of group $1 is not a zombie (each stat's fields after its command name)
    '  for s in /proc/[0-9]*/stat; do\n'
    '    read -r l < "$s" 2>/dev/null || continue\n'
    '    set -- "$1" ${l##*") "}\n'  # $2 state, $3 ppid, $4 process group
    '    [ "$4" != "$1" ] || [ "$2" = Z ] || return 0\n'
    '  done; return 1\n'
    '}\n'
    'stop_writers() {\n'
    '  [ -e "$1" ] && read -r x x x x me x < /proc/$$/stat 2>/dev/null || return 0\n'
    '  gs=\n'
    '  for f in $(grep -lzxsF -- "$1" /proc/[0-9]*/cmdline); do\n'
    '    grep -qzxF -- ' + RECEIVER + ' "$f" 2>/dev/null || continue\n'
    '    f=${f#/proc/}; read -r x x x x g x < "/proc/${f%%/*}/stat" 2>/dev/null || continue\n'
    '    [ "$g" = "$me" ] || { kill -s TERM -- "-$g" 2>/dev/null && gs="$gs $g"; }\n'
    '  done\n'
    '  for g in $gs; do\n'
    '    i=0; while running "$g" && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done\n'
    '    kill -s KILL -- "-$g" 2>/dev/null\n'
    '  done; return 0\n'
    '}\n'
    # $1 holds at least $2 bytes: cut back to $2 if a dead receive wrote past it; else 1 (n: its size)
    'cut_to() {\n'
    '  n=0; [ ! -e "$1" ] || n=$(wc -c < "$1" | tr -d " ") || exit 3\n'
    '  [ "$n" -ge "$2" ] || return 1\n'
    '  [ "$n" -eq "$2" ] || dd if=/dev/null of="$1" bs=1 seek="$2" 2>/dev/null || exit 3\n'
    '}\n'
)


# The resumable receive: stdin is appended to PARTIAL, whose size is the acknowledged offset. A
# fresh partial is hashed as it is written (no second read); a resumed one once it is complete.
# Complete and right: renamed to FINAL, so a final name always means "verified". Complete and
# wrong (or too long): deleted, so the next send starts clean. Short (the link dropped): kept.
# With OFF (where the sender's bytes start), a dead receive of the file is stopped first and
# the file cut back to OFF if it wrote past it; a file shorter than OFF takes nothing (`short`),
# and one a dead receive completed and moved into place is `ok`.
_RECEIVE = _SHA + _STOP + (
    'p=$1; final=$2; want=$3; size=$4; off=${5:-}\n'
    'mkdir -p -- "${p%/*}" || exit 3\n'
    'if [ -n "$off" ]; then\n'
    '  stop_writers "$p"\n'
    '  if [ ! -e "$p" ] && [ -f "$final" ]; then echo "ok $want"; exit 0; fi\n'
    '  cut_to "$p" "$off" || { echo "short $n"; exit 0; }\n'
    'fi\n'
    'h=\n'
    'if [ -s "$p" ]; then cat >> "$p" || exit 3\n'
    'else h=$(tee -- "$p" | sha) || exit 3; fi\n'
    'n=$(wc -c < "$p" | tr -d " ") || exit 3\n'
    'if [ "$n" -lt "$size" ]; then echo "short $n"; exit 0; fi\n'
    'if [ -z "$h" ]; then h=$(sha < "$p") || exit 3; fi\n'
    'h="sha256:${h%% *}"\n'
    'if [ "$n" -eq "$size" ] && [ "$h" = "$want" ]; then\n'
    '  mv -f -- "$p" "$final" || exit 3\n'
    '  echo "ok $h"\n'
    'else\n'
    '  rm -f -- "$p"\n'
    '  echo "mismatch $h"\n'
    'fi'
)


RECEIVE_SCRIPT = _RECEIVE  # also the body of a site relay's forced receive (deployer.commands.relay)


def receive_argv(partial: str, final: str, digest: str, size: int | str,
                 offset: int | str | None = None) -> tuple[str, ...]:
    """Append stdin to PARTIAL; once SIZE bytes are there, check DIGEST and move it to FINAL.
    OFFSET: the sender's bytes start there (a dead receive of PARTIAL is stopped first)."""
    return ("sh", "-c", _RECEIVE, RECEIVER, partial, final, digest, str(size),
            *(() if offset is None else (str(offset),)))


@dataclass(frozen=True)
class Received:
    """What the receive script reported: `ok`/`mismatch` (with the host's hash) or `short` (bytes held)."""

    status: str  # "ok" | "mismatch" | "short" | "" (no answer)
    detail: str = ""


def parse_receive(stdout: str) -> Received:
    words = stdout.split()
    if len(words) >= 2 and words[0] in ("ok", "mismatch", "short"):
        return Received(words[0], words[1])
    return Received("")


def growing_path(staging: str, diff_id: str, codec: str, level: int | str) -> str:
    """Where a blob sent while it is still being compressed lands (its digest is not known yet):
    named by its layer, codec and level, so a later ship can resume it (move_argv)."""
    return posixpath.join(blob_dir(staging), f"{_hex(diff_id)}.{SUFFIX.get(codec, codec)}{level}.growing.partial")


# A blob whose digest is not known yet: stdin is written to P and hashed as it arrives, or, from
# OFFSET > 0 (what a killed ship left), appended and the whole file hashed. The sender compares
# size and hash with the finished blob and names it (move_argv), or resumes it as its .partial.
# A file shorter than OFF takes nothing and says nothing (the sender then resumes it as a .partial).
_RECEIVE_GROWING = _SHA + _STOP + (
    'p=$1; off=$2\n'
    'mkdir -p -- "${p%/*}" || exit 3\n'
    'stop_writers "$p"\n'
    'if [ "$off" -gt 0 ]; then cut_to "$p" "$off" || exit 0; cat >> "$p" && h=$(sha < "$p") || exit 3\n'
    'else h=$(tee -- "$p" | sha) || exit 3; fi\n'
    'n=$(wc -c < "$p" | tr -d " ") || exit 3\n'
    'echo "got $n sha256:${h%% *}"'
)


def receive_growing_argv(path: str, offset: int | str = 0) -> tuple[str, ...]:
    """Write stdin to PATH from scratch (OFFSET 0) or append it (the host holds OFFSET bytes),
    hashing the file; print `got <size> <sha256:hex>`."""
    return ("sh", "-c", _RECEIVE_GROWING, RECEIVER, path, str(offset))


def parse_growing(stdout: str) -> tuple[int, str] | None:
    """(size, digest) from receive_growing_argv's answer, or None."""
    words = stdout.split()
    if len(words) == 3 and words[0] == "got" and words[1].isdigit():
        return int(words[1]), words[2]
    return None


# Retry-safe: a repeat after a lost reply finds SRC gone and DEST there.
_MOVE = 'if [ -f "$1" ]; then mv -f -- "$1" "$2" || exit 3; fi\n[ -f "$2" ] && wc -c < "$2" | tr -d " "; exit 0'
_MOVE_LEFTOVER = _STOP + 'stop_writers "$1"\n' + _MOVE


def move_argv(src: str, dest: str, *, leftover: bool = False) -> tuple[str, ...]:
    """Move SRC to DEST if SRC is there; print DEST's size (nothing when there is no DEST).
    LEFTOVER: SRC is what a killed ship left, whose receive may live on: it is stopped first (else
    it goes on appending to DEST)."""
    return ("sh", "-c", _MOVE_LEFTOVER if leftover else _MOVE, "sh", src, dest)


# A wrong hash deletes the file so the next attempt starts clean; a right one renames it into
# place (atomic within the staging filesystem), so a final name always means "verified".
# Retry-safe: when a lost reply makes us run it again, the partial is gone and FINAL is checked.
_VERIFY = _SHA + (
    'src=$1\n'
    '[ -f "$src" ] || [ ! -f "$3" ] || src=$3\n'
    'h=$(sha < "$src") || exit $?\n'
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


# A fresh start for a transfer, in one round trip: the blob dir, and the size of every file
# already in it, so no blob needs its own stat before it is sent (the deploy lock keeps other
# ships out of this staging dir meanwhile). Load leftovers of killed ships and older versions go. Output as stat_argv's.
_PREPARE = (
    '[ -z "$3" ] || grep -qF -- "$3" "$1/lock/owner" 2>/dev/null || exit 99\n'
    'rm -rf -- "$1/load" "$1"/load-*.head && mkdir -p -- "$2" && cd -- "$2" || exit $?\n'
    'for f in *; do\n'
    '  [ -f "$f" ] && printf "%s %s\\n" "$(wc -c < "$f" | tr -d " ")" "$2/$f"\n'
    'done; exit 0'
)


NOT_LOCKED = 99  # prepare_argv's exit code when the lock is not (or no longer) the TOKEN's


def prepare_argv(staging: str, token: str = "") -> tuple[str, ...]:
    """Drop the load heads a killed ship left, make the blob dir and list its files with their
    sizes (parse with parse_stat). With TOKEN, only while the deploy lock is that token's: it
    can then run in the same round trip as the lock's taking (deployer.commands.batch, lead)."""
    return ("sh", "-c", _PREPARE, "sh", staging, blob_dir(staging), token)


def load_head_path(staging: str, image_id: str) -> str:
    """Where a load's tar head (deployer.commands.load) is kept while docker load reads it."""
    return posixpath.join(staging, f"load-{_hex(image_id)[:16]}.head")


# -- image state, tag, verify ---------------------------------------------------------------

@dataclass(frozen=True)
class ImageState:
    """What the host has: the id its REF points at (or None) and which ids of the image it has
    (from its image listing: deployer.ship.runner)."""

    ref_id: str | None
    ids: frozenset[str] = frozenset()

    @property
    def has_id(self) -> bool:
        return bool(self.ids)


def parse_image_state(stdout: str) -> ImageState | None:
    """The `ref ID` line of present_layers_argv's output (ID empty: REF names nothing); None
    without that line (the command did not get that far)."""
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "ref":
            return ImageState(value.strip() if value.strip().startswith("sha256:") else None)
    return None


def tag_argv(docker: Sequence[str], source: str, ref: str) -> tuple[str, ...]:
    return (*docker, "tag", source, ref)


_TAG = 'src=$1; ref=$2; shift 2\n"$@" tag "$src" "$ref" || exit $?\n"$@" image inspect --format "{{.Id}}" "$ref"'


def tag_verify_argv(docker: Sequence[str], source: str, ref: str) -> tuple[str, ...]:
    """Tag SOURCE as REF and print the id REF now resolves to (one round trip)."""
    return ("sh", "-c", _TAG, "sh", source, ref, *docker)


def remove_image_argv(docker: Sequence[str], *images: str) -> tuple[str, ...]:
    """Remove images (never forced: one used by a container stays)."""
    return (*docker, "image", "rm", *images)


# Pull, check the id and that the image is complete (one inspect), tag: one round trip. Exit 2: the
# pull failed; 3: the pulled id is not one of IDS; 8: incomplete (moby#49784); 7: the tag failed;
# 4: all done, but the id is not the first of IDS (so that steps batched after this one, which
# assumed the first, do not run). A tag that succeeded names the id: reading REF back would cost a
# docker call and only race with whoever tags it next (as the tarball route's install).
# PUSHED: the digest of the manifest this ship pushed. A pull that reports that digest got exactly
# the pushed manifest, whose pull gives the first of IDS: no inspect for the id. The classic store's
# images are never incomplete (WHOLE): no inspect at all; the containerd store's layers are counted
# beside the tag (two docker calls at once, not one after the other), and an incomplete image's tag
# is taken back. Any other digest (or none) is inspected before the tag.
# CDIR, RECORDS (the containerd store): the blob each layer has in the manifest (or index) FROM,
# which a complete pull of FROM left in the content store, go to the content records
# (deployer.commands.layers) of the layers that have none, for the next tarball ship's load; only
# when the pulled image's id is FROM (the containerd store's id is the digest pulled).
_PULL_INSTALL = (
    'remote=$1; ref=$2; ids=$3; pushed=$4; whole=$5; previous=$6; cdir=$7; records=$8; from=$9; drop=${10}; shift 10\n'
    # the stage images pulled ahead (deployer.local.stages) go whatever the pull did: the image holds their layers
    '[ -z "$drop" ] || trap \'set -f; for s in $drop; do "$@" rmi "$s"; done >/dev/null 2>&1\' EXIT\n'
    'record() {\n'
    '  [ -n "$records" ] && [ "$id" = "$from" ] && mkdir -p -- "$cdir" || return 0\n'
    '  printf "%s\\n" "$records" | while read -r d t g s; do\n'
    '    [ -e "$cdir/$d" ] || printf "%s %s %s\\n" "$t" "$g" "$s" > "$cdir/$d"; done\n'
    '}\n'
    'out=$("$@" pull "$remote"); st=$?\n'
    'printf "%s\\n" "$out"\n'
    '[ $st -eq 0 ] || exit 2\n'
    'case "$whole:$pushed:$out" in\n'
    '  1:sha256:*"Digest: $pushed"*) id=${ids%% *}; n=1 ;;\n'
    '  0:sha256:*"Digest: $pushed"*) id=${ids%% *}; echo "pulled-id $id"\n'
    '     # tag while counting the layers: an image the containerd store holds only in part has\n'
    '     # none to count (moby#49784), and REF then names again what it named before\n'
    '     n=$( { "$@" image inspect --format "{{len .RootFS.Layers}}" "$remote" 2>/dev/null &\n'
    '            "$@" tag "$id" "$ref" >/dev/null || echo tag-failed; wait; } )\n'
    '     case $n in *tag-failed*) exit 7 ;; esac\n'
    '     if ! [ "$n" -gt 0 ] 2>/dev/null; then\n'
    '       { [ -n "$previous" ] && "$@" tag "$previous" "$ref"; } >/dev/null 2>&1 || "$@" rmi "$ref" >/dev/null 2>&1\n'
    '       exit 8\n'
    '     fi\n'
    '     echo "tagged $id"; record; exit 0 ;;\n'
    '  *) state=$("$@" image inspect --format "{{.Id}} {{len .RootFS.Layers}}" "$remote" 2>/dev/null)\n'
    '     id=${state%% *}; n=${state##* }\n'
    '     # an image the containerd store holds only in part has no layers to count: the format fails\n'
    '     [ -n "$id" ] || { id=$("$@" image inspect --format "{{.Id}}" "$remote" 2>/dev/null); n=0; } ;;\n'
    'esac\n'
    'echo "pulled-id $id"\n'
    'case " $ids " in *" $id "*) [ -n "$id" ] || exit 3 ;; *) exit 3 ;; esac\n'
    '[ "$n" -gt 0 ] 2>/dev/null || exit 8\n'
    '"$@" tag "$id" "$ref" || exit 7\n'
    'echo "tagged $id"; record\n'
    '[ "$id" = "${ids%% *}" ] || exit 4\n'
)


PULLED_ANOTHER_ID = 4  # pull_install_argv's exit code: done, but the id is not the first one given


def pull_install_argv(docker: Sequence[str], remote_ref: str, ref: str, image_ids: Sequence[str], *,
                      pushed: str = "", whole: bool = True, previous: str = "", content: str = "",
                      records: Sequence[tuple[str, Descriptor]] | str = (), records_from: str = "",
                      drop: Sequence[str] = (), preview: bool = False) -> tuple[str, ...]:
    """docker pull REMOTE_REF; check its id is one of IMAGE_IDS (the likeliest first) and that the
    image is complete; tag it REF (parse with parse_pull and parse_pulled). PREVIEW (a dry run):
    the ids may be placeholders.

    PUSHED: the digest of the manifest pushed, whose pull gives IMAGE_IDS[0] (the classic store:
    its config digest; the containerd store: PUSHED itself): a pull that reports it needs no
    inspect for the id. WHOLE: the host's store never pulls an image in part (the classic one); else
    the layers are counted while REF is tagged, and a pull that came out incomplete (moby#49784)
    tags REF back to PREVIOUS, the id it named before (none: REF is removed). There, a complete
    pull of RECORDS_FROM (a manifest or index digest) writes RECORDS (each layer's blob in it) to
    the CONTENT dir, for the layers it has no record of (a str: a dry run's stand-in, with PREVIEW).
    DROP: the stage images (`repo@digest`) pulled ahead of REMOTE_REF, removed on the way out."""
    for image_id in (*image_ids, *(d for d in (pushed, previous, records_from) if d)):
        if not preview and (not image_id.startswith("sha256:") or " " in image_id):
            raise ValueError(f"not an image id: {image_id!r}")
    for stage in drop:
        _check_stage_ref(stage)
    if isinstance(records, str) and not preview:
        raise ValueError("records as text are a dry run's stand-in")
    listed = "" if not content else records if isinstance(records, str) else content_records(records)
    return ("sh", "-c", _PULL_INSTALL, "sh", remote_ref, ref, " ".join(image_ids), pushed, "1" if whole else "0",
            previous, content, listed, records_from if content else "", " ".join(drop), *docker)


# a registry host may have capitals or be an IPv6 literal; no blank, quote or `$` ever (word-split in the trap)
_STAGE_REF = re.compile(r"[A-Za-z0-9\[][A-Za-z0-9._:/\[\]-]*@sha256:[0-9a-f]{64}")


def _check_stage_ref(ref: str) -> None:
    if not _STAGE_REF.fullmatch(ref):
        raise ValueError(f"not a stage image reference (repo@sha256:...): {ref!r}")


def stage_pull_argv(docker: Sequence[str], ref: str) -> tuple[str, ...]:
    """docker pull a stage image (`repo@digest`) pushed ahead of the image (parse with parse_pull)."""
    _check_stage_ref(ref)
    return (*docker, "pull", ref)


def parse_pulled(stdout: str) -> tuple[str | None, str | None]:
    """(the pulled image's id, the id REF names after the tag) from pull_install_argv's output."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("pulled-id", "tagged") and value.strip().startswith("sha256:"):
            found[key] = value.strip()
    return found.get("pulled-id"), found.get("tagged")


# Pull REF (by digest) from its origin, giving up when docker says nothing for START seconds (it
# prints its first line once the registry answered with the manifest; looked for every 0.1 s, so a
# quick pull is not held to a whole second), then print the pulled
# image's layers (an empty list: the containerd store left it incomplete). Exit 9: no answer.
_ORIGIN_PULL = r"""
ref=$1; start=$2; shift 2
log=$(mktemp) || exit 3
"$@" pull "$ref" >"$log" 2>&1 &
pid=$!
waited=0
while kill -0 "$pid" 2>/dev/null && [ ! -s "$log" ]; do
  if [ "$waited" -ge $((start * 10)) ]; then
    kill "$pid" 2>/dev/null; rm -f -- "$log"; echo "no answer from the registry within ${start}s" >&2; exit 9
  fi
  sleep 0.1; waited=$((waited + 1))
done
wait "$pid"; rc=$?
cat -- "$log"; rm -f -- "$log"
[ "$rc" = 0 ] || exit "$rc"
printf '@@layers '; "$@" image inspect --format '{{json .RootFS.Layers}}' "$ref"
"""


def origin_pull_argv(docker: Sequence[str], ref: str, start_s: int = 20) -> tuple[str, ...]:
    """Pull REF on the host from its registry (see _ORIGIN_PULL); parse with parse_origin_pull."""
    return ("sh", "-c", _ORIGIN_PULL, "sh", ref, str(start_s), *docker)


def parse_origin_pull(stdout: str) -> tuple[str, ...] | None:
    """The pulled image's layer diff ids, () when it is incomplete, None when not reported."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("@@layers "):
            try:
                layers = json.loads(line.removeprefix("@@layers "))
            except ValueError:
                return None
            return tuple(str(d) for d in layers) if isinstance(layers, list) else ()
    return None


def parse_pull(stdout: str) -> tuple[int, int]:
    """(layers pulled, layers already present) from non-tty `docker pull` output.

    A layer counts once, by its id, whichever of `Download complete` (all the containerd store
    prints in some versions) and `Pull complete` (the classic store, after extracting) it reached.
    The containerd store does not list the layers it already has, so `present` is 0 there.
    """
    done: set[str] = set()
    present: set[str] = set()
    for line in stdout.splitlines():
        layer, sep, status = line.strip().partition(": ")
        if not sep or not layer or " " in layer:  # `v1: Pulling from x` and `Digest: …` never match below
            continue
        if status.strip() in ("Pull complete", "Download complete"):
            done.add(layer)
        elif status.strip() == "Already exists":
            present.add(layer)
    return len(done), len(present - done)


# -- lock ------------------------------------------------------------------------------------

# Prints `acquired`, or `held` and what the holder wrote (now/mtime/owner lines for parse_lock).
_TRY_LOCK = (
    'if mkdir -- "$1/lock" 2>/dev/null; then\n'
    '  printf "%s\\n" "$2" > "$1/lock/owner" || { rm -rf -- "$1/lock"; exit 1; }\n'
    '  echo acquired; exit 0\n'
    'fi\n'
    'echo held\n'
    'echo "now $(date +%s)"\n'
    'echo "mtime $(stat -c %Y -- "$1/lock" 2>/dev/null || echo 0)"\n'
    'printf "owner "; cat -- "$1/lock/owner" 2>/dev/null; echo'
)

_LOCK = 'mkdir -p -- "$1" || exit $?\n' + _TRY_LOCK

# Taking over a dead owner's lock, race-safe: `mkdir lock/takeover` admits one claimant; it checks
# that the lock still carries the dead owner's token, renames the whole dir away (atomic, so
# nobody can be half-way into the old dir) and then competes for a fresh lock like everyone else.
# A claimant killed mid-way leaves lock/takeover behind: later takeovers fail, --break-lock clears it.
# A contender that looked up "$1/lock" just before the move may still create lock/takeover inside
# the grave while it is being removed (the first rm then finds it not empty): a second rm, once.
_TAKEOVER = (
    'mkdir -p -- "$1" || exit $?\n'
    'grave=\n'
    'if [ -n "$3" ] && mkdir -- "$1/lock/takeover" 2>/dev/null; then\n'
    '  if grep -qF -- "$3" "$1/lock/owner" 2>/dev/null &&'
    ' grave=$(mktemp -d -- "$1/lock.dead.XXXXXX") && mv -- "$1/lock" "$grave/"; then\n'
    '    rm -rf -- "$grave" 2>/dev/null || { sleep 0.1; rm -rf -- "$grave"; }\n'
    '  else\n'
    '    rmdir -- "$1/lock/takeover" 2>/dev/null; [ -z "$grave" ] || rmdir -- "$grave" 2>/dev/null\n'
    '  fi\n'
    'fi\n'
) + _TRY_LOCK


def lock_argv(staging: str, owner: str) -> tuple[str, ...]:
    """Atomically create STAGING/lock (mkdir) with an owner line; else print who holds it."""
    return ("sh", "-c", _LOCK, "sh", staging, owner)


def takeover_argv(staging: str, owner: str, dead_token: str) -> tuple[str, ...]:
    """Replace a lock whose owner line carries dead_token with ours; output as lock_argv's."""
    return ("sh", "-c", _TAKEOVER, "sh", staging, owner, dead_token)


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
