"""Pure argv builders (and parsers) for shipping through a site relay (deployer.ship.relay).

The workstation stages each blob once on the relay, under `<relay staging>/relay` (the same
resumable, verified receive as a host's). The relay passes it on over the site's LAN with its
own `ssh`, using a key made for this one ship:
- on the relay, `<relay staging>/relay/ship-<id>/` holds that private key and a known_hosts
  file with exactly the target hosts' keys (copied from the workstation's, so the relay's ssh
  checks host keys strictly too);
- on each host, an authorized_keys line lets that key run only `relay-receive.sh` (a forced
  command, `restrict`ed: no shell, no forwarding, no pty), from the relay's address, until an
  expiry time; the script only appends to a blob's .partial in the staging dir and checks its
  sha256, exactly as the workstation's own receive does. The line goes when the host is done.

In a tree (deploy_relay_fanout), a host that passes blobs on to others is a relay too: its own
key and known_hosts in `<staging>/relay/ship-<id>/`, its copy of each blob in `<staging>/relay`,
fed by its parent through the same forced receive installed there (`<staging>/relay/relay-receive.sh`).

Every script is a constant; variable parts are positional arguments.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from deployer.commands import ship as cmd

MARK = "deployer-relay"  # authorized_keys comment prefix: `deployer-relay:<ship id>`
RECEIVER = "relay-receive.sh"


def relay_staging(staging: str) -> str:
    """Where the relay keeps the site's blobs (apart from its own ships' staging, which a load cleans)."""
    return posixpath.join(staging, "relay")


def ship_dir(staging: str, ship_id: str) -> str:
    """The relay's per-ship dir: the private key and known_hosts (removed when the ship ends)."""
    return posixpath.join(relay_staging(staging), f"ship-{ship_id}")


def receiver_path(staging: str) -> str:
    return posixpath.join(staging, RECEIVER)


# -- the relay ---------------------------------------------------------------------------------

# stdin: the private key. Args: the ship dir, then known_hosts lines, `--`, then host addresses
# whose route source address (the relay's LAN address towards them) to print as `src ADDR SRC`.
_SETUP = (
    'd=$1; shift\n'
    'umask 077\n'
    'command -v ssh >/dev/null 2>&1 || { echo "the relay has no ssh client" >&2; exit 4; }\n'
    'mkdir -p -- "$d" && cat > "$d/key" && : > "$d/known_hosts" || exit 3\n'
    'find "${d%/*}" -maxdepth 1 -name "ship-*" -mmin +1440 -exec rm -rf {} + 2>/dev/null\n'
    'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do printf "%s\\n" "$1" >> "$d/known_hosts" || exit 3; shift; done\n'
    '[ "$#" -gt 0 ] && shift\n'
    'b=$1; shift\n'
    'for a do\n'
    '  s=$(ip -o route get "$a" 2>/dev/null | sed -n "s/.* src \\([^ ]*\\).*/\\1/p")\n'
    '  printf "src %s %s\\n" "$a" "${s:--}"\n'
    'done\n'
    'mkdir -p -- "$b" && cd -- "$b" || exit 3\n'
    'for f in *; do [ -f "$f" ] && printf "%s %s\\n" "$(wc -c < "$f" | tr -d " ")" "$b/$f"; done\n'
    'exit 0'
)


def setup_argv(ship_dir: str, known_hosts: Sequence[str], relay_staging_dir: str,
               addresses: Sequence[str]) -> tuple[str, ...]:
    """Write the ship's key (stdin) and known_hosts on the relay; print its source address per host
    (parse_sources) and the blobs it holds with their sizes (ship.parse_stat)."""
    return ("sh", "-c", _SETUP, "sh", ship_dir, *known_hosts, "--", cmd.blob_dir(relay_staging_dir), *addresses)


def parse_sources(stdout: str) -> dict[str, str]:
    """address -> the relay's source address towards it (absent when the relay could not tell)."""
    out = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "src" and words[2] != "-":
            out[words[1]] = words[2]
    return out


# Follow the relay's copy of a blob as it grows (.partial, or the growing name of a blob sent as it
# was compressed, then its final name once verified: the same file, held open, so a rename never
# loses a byte) and pipe the bytes from OFFSET on into
# the target's forced receive. Gives up when no new byte came for STALL seconds (the workstation
# then decides: resume, or send directly). `head -c N` reads exactly N bytes of a regular file.
# It reads what has landed every 50 ms, not as fast as the copy grows: a loop that read at once
# again spawned its wc and head hundreds of times a second, a core's worth of the relay's CPU.
# When the relay is the target itself (HERE), its staging gets the relay's copy under a second
# name (a hard link, growing with it; the load reads it as it lands), named once the relay's own
# receive has verified it: not a second copy, hashed again, of every byte of the image. A copy
# that cannot be linked (another filesystem, a part of an earlier copy there) is copied.
_FORWARD = (
    'src=$1; size=$2; off=$3; d=$4; dest=$5; port=$6; stall=$7; want=$8; cp=$9; here=${10}; g=${11:-$1.partial}\n'
    'p=$src.partial\n'
    'idle=0\n'
    'wait_more() {\n'
    '  idle=$((idle + 1))\n'
    '  if [ "$idle" -gt $((stall * 5)) ]; then echo "relay: no new bytes for ${stall}s" >&2; exit 1; fi\n'
    '  sleep 0.2\n'
    '}\n'
    'size_now() { { wc -c < "$p" || wc -c < "$g" || wc -c < "$src"; } 2>/dev/null; }\n'  # a padded count (BSD wc) is fine
    'opened() { [ -f "$1" ] && command exec 3< "$1"; }\n'
    'follow() {\n'
    '  until { opened "$p" || opened "$g" || opened "$src"; } 2>/dev/null\n'
    '  do wait_more; done\n'
    '  [ "$off" -eq 0 ] || head -c "$off" <&3 > /dev/null || exit 1\n'
    '  while [ "$off" -lt "$size" ]; do\n'
    '    n=$(size_now); n=${n:-0}\n'
    '    [ "$n" -le "$size" ] || n=$size\n'
    '    if [ "$n" -gt "$off" ]; then\n'
    '      head -c $((n - off)) <&3 || exit 1\n'
    '      off=$((n)); idle=0; sleep 0.05\n'
    '    else\n'
    '      wait_more\n'
    '    fi\n'
    '  done\n'
    '}\n'
    'linked() {\n'
    '  k=0\n'
    '  until [ -e "$hp" ] || [ -f "$p" ] || [ -f "$g" ] || [ -f "$src" ]; do\n'
    '    k=$((k + 1)); [ "$k" -le $((stall * 20)) ] || { echo "relay: no new bytes for ${stall}s" >&2; echo "short 0"; exit 0; }\n'
    '    sleep 0.05\n'
    '  done\n'
    '  [ -e "$hp" ] || ln -- "$p" "$hp" 2>/dev/null || ln -- "$g" "$hp" 2>/dev/null || ln -- "$src" "$hp" 2>/dev/null\n'
    '  [ "$hp" -ef "$p" ] || [ "$hp" -ef "$g" ] || [ "$hp" -ef "$src" ] || return 1\n'
    '  k=0; last=-1\n'
    '  until [ -f "$src" ]; do\n'
    '    [ "$hp" -ef "$p" ] || [ "$hp" -ef "$g" ] || break\n'
    '    k=$((k + 1))\n'
    '    if [ $((k % 20)) -eq 0 ]; then\n'
    '      n=$(wc -c < "$hp"); n=$((n))\n'
    '      if [ "$n" -ne "$last" ]; then last=$n; k=0\n'
    '      elif [ "$k" -ge $((stall * 20)) ]; then echo "relay: no new bytes for ${stall}s" >&2; echo "short $n"; exit 0\n'
    '      fi\n'
    '    fi\n'
    '    sleep 0.05\n'
    '  done\n'
    '  if [ "$hp" -ef "$src" ]; then mv -f -- "$hp" "$hf" && echo "ok ${want%% *}" && exit 0; fi\n'
    '  rm -f -- "$hp"; off=0; return 1\n'  # the relay's copy was sent again meanwhile: copy the new one
    '}\n'
    'if [ -n "$here" ]; then\n'
    '  h=${want#sha256:}; hf=${here%/*}/blobs/sha256/${h%% *}.${want##* }; hp=$hf.partial\n'
    '  linked\n'
    '  follow | SSH_ORIGINAL_COMMAND=$want sh "$here"; exit\n'
    'fi\n'
    'follow | ssh -T -F /dev/null -i "$d/key" -p "$port" -o BatchMode=yes -o IdentitiesOnly=yes'
    ' -o IdentityAgent=none -o ForwardAgent=no -o ClearAllForwardings=yes -o StrictHostKeyChecking=yes'
    ' -o UserKnownHostsFile="$d/known_hosts" -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10'
    ' -o ServerAliveInterval=10 -o ServerAliveCountMax=3 -o Compression=no -o LogLevel=ERROR'
    ' -o Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com'
    ' -o ControlMaster=auto -o ControlPath="$cp" -o ControlPersist=30'
    ' -- "$dest" "$want"'
)


def forward_argv(relay_staging_dir: str, digest: str, codec: str, size: int | str, offset: int | str, ship_dir: str,
                 dest: str, port: int, stall_s: int | str, slot: int | str = 0, here: str = "",
                 growing: str = "") -> tuple[str, ...]:
    """Pass the relay's blob (as it arrives) from OFFSET on to DEST's forced receive over the LAN.

    The relay's ssh keeps one connection per host (SLOT) for all of the ship's blobs. HERE: the
    receiver's path when the relay is the target itself (no ssh then). GROWING: where the relay's
    copy lands while the blob is still being compressed (ship.growing_path), before its name."""
    src = cmd.blob_path(relay_staging_dir, digest, codec)
    want = f"{digest} {size} {suffix(codec)}"
    return ("sh", "-c", _FORWARD, "sh", src, str(size), str(offset), ship_dir, dest, str(port), str(stall_s), want,
            control_path(ship_dir, slot), here, *((growing,) if growing else ()))


SOCKET_PATH_MAX = 100  # a unix socket's path has room for 107 bytes; ssh adds a random suffix while binding


def control_path(ship_dir: str, slot: int | str) -> str:
    """The relay's ssh control socket for one host, or `none` (no sharing) when the path is too long."""
    path = posixpath.join(ship_dir, f"cm{slot}")
    return path if len(path) + 20 <= SOCKET_PATH_MAX else "none"


def suffix(codec: str) -> str:
    return cmd.SUFFIX.get(codec, codec)


# -- the hosts ---------------------------------------------------------------------------------

# The forced command: SSH_ORIGINAL_COMMAND must be exactly `sha256:<64 hex> <size> <suffix>`;
# the blob lands in the staging dir this script lives in, by the workstation's own receive.
RECEIVER_SCRIPT = (
    'set -f\n'
    'set -- $SSH_ORIGINAL_COMMAND\n'
    'refuse() { echo "relay-receive: refused: $1" >&2; exit 2; }\n'
    '[ "$#" -eq 3 ] || refuse "want: DIGEST SIZE SUFFIX"\n'
    'hex=${1#sha256:}\n'
    '[ "$hex" != "$1" ] && [ "${#hex}" -eq 64 ] || refuse "digest"\n'
    'case $hex in *[!0-9a-f]*) refuse "digest";; esac\n'
    'case $2 in ""|*[!0-9]*) refuse "size";; esac\n'
    'case $3 in zst|gz) ;; *) refuse "suffix";; esac\n'
    'b=$(dirname -- "$0")/blobs/sha256/$hex.$3\n'
    'set -f -- "$b.partial" "$b" "$1" "$2"\n'
) + cmd.RECEIVE_SCRIPT + '\n'

# Args: staging, authorized_keys file, the line, the forced command's script. Writes the script
# and appends the line, if any (O_APPEND: lines other tools add meanwhile are kept).
_AUTHORIZE = (
    'st=$1; ak=$2; line=$3\n'
    'case $ak in "~/"*) ak=$HOME/${ak#"~/"};; esac\n'
    'umask 077\n'
    'mkdir -p -- "$st/blobs/sha256" || exit 3\n'
    'printf "%s" "$4" > "$st/relay-receive.sh.new" && mv -f -- "$st/relay-receive.sh.new" "$st/relay-receive.sh" || exit 3\n'
    '[ -n "$line" ] || exit 0\n'
    'mkdir -p -- "$(dirname -- "$ak")" && printf "%s\\n" "$line" >> "$ak" || exit 3\n'
)


def authorize_argv(staging: str, authorized_keys: str, line: str) -> tuple[str, ...]:
    """Install the forced receive under STAGING and authorize the ship's key (LINE) for it; an
    empty LINE only installs the receive (a node that feeds its own staging from its copy)."""
    return ("sh", "-c", _AUTHORIZE, "sh", staging, authorized_keys, line, RECEIVER_SCRIPT)


# Remove this ship's line (a line a killed ship left behind stops working at its expiry-time).
_REVOKE = (
    'ak=$1; mark=$2\n'
    'case $ak in "~/"*) ak=$HOME/${ak#"~/"};; esac\n'
    '[ -f "$ak" ] || exit 0\n'
    'grep -qF -- " $mark" "$ak" || exit 0\n'
    'tmp=$ak.deployer-$$\n'
    'grep -vF -- " $mark" "$ak" > "$tmp"; rc=$?\n'
    'if [ "$rc" -gt 1 ]; then rm -f -- "$tmp"; exit 3; fi\n'
    'chmod 600 "$tmp" && mv -f -- "$tmp" "$ak"'
)


def revoke_argv(authorized_keys: str, ship_id: str) -> tuple[str, ...]:
    """Remove the ship's authorized_keys line on a host (idempotent)."""
    return ("sh", "-c", _REVOKE, "sh", authorized_keys, f"{MARK}:{ship_id}")


# A tree node's forced receive (in the relay dir) goes with the last ship that set the node up.
_CLEANUP = (
    'd=$1; shift\n'
    'for s in "$d"/cm*; do [ -S "$s" ] && ssh -o ControlPath="$s" -O exit x >/dev/null 2>&1; done\n'
    'rm -rf -- "$d" "$@" || exit 3\n'
    'r=${d%/*}\n'
    'for o in "$r"/ship-*; do [ -d "$o" ] && exit 0; done\n'
    'rm -f -- "$r/relay-receive.sh"'
)


def cleanup_argv(ship_dir: str, blobs: Iterable[str]) -> tuple[str, ...]:
    """On a relay (or tree node): end the ship's ssh connections, remove its key dir and the given
    blobs (.partial too), and the node's forced receive unless another ship still uses the node."""
    paths: list[str] = []
    for b in blobs:
        paths += [b, b + ".partial"]
    return ("sh", "-c", _CLEANUP, "sh", ship_dir, *paths)


# -- pure helpers ------------------------------------------------------------------------------

_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]*$")


def plain_path(path: str) -> bool:
    """A path that may go into authorized_keys' command="..." as it is (no quotes, spaces or `~`)."""
    return bool(_PLAIN_PATH.match(path))


def key_line(public_key: str, ship_id: str, staging: str, *, source: str | None, expires: datetime) -> str:
    """The authorized_keys line that lets the ship's key only run the forced receive."""
    if not plain_path(staging):
        raise ValueError(f"staging dir {staging!r} is not a plain absolute path")
    options = []
    if source:
        options.append(f'from="{source}"')
    options += [f'expiry-time="{expires:%Y%m%d%H%M}"', "restrict", f'command="sh {receiver_path(staging)}"']
    key_type, key = public_key.split()[:2]  # its own comment, if any, gives way to the ship's mark
    return f"{','.join(options)} {key_type} {key} {MARK}:{ship_id}"


def known_hosts_line(address: str, port: int, key_type: str, key_base64: str) -> str:
    """A known_hosts line for how the relay names the host (`[addr]:port` off port 22)."""
    name = address if port == 22 else f"[{address}]:{port}"
    return f"{name} {key_type} {key_base64}"


def ssh_dest(user: str | None, address: str) -> str:
    return f"{user}@{address}" if user else address
