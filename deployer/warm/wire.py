"""Where a warm server listens, and what `deploy` and the server say to each other.

Standard library only: the client side runs before anything heavy is imported.

The conversation, over one Unix stream socket:
  client -> server  a request frame (argv, cwd, environment, umask), its stdin/stdout/stderr as
                    SCM_RIGHTS on the frame's first bytes
  server -> client  STALE (the server's code changed: run cold) or READY (a child has the command)
  client -> child   GO, only after READY arrived in time (so a command never runs twice)
  client -> child   SIGNAL + the number, for each signal the client gets (Ctrl-C and the like)
  child -> client   EXIT + the exit code, after the child flushed its output
"""
from __future__ import annotations

import os
import stat
import struct
import sys
import zlib
from _collections_abc import Mapping  # what collections.abc re-exports, without importing collections (1.5 ms)

STALE, READY, GO, SIGNAL, EXIT = b"S", b"R", b"G", b"K", b"X"
HEADER = struct.Struct(">I")
CODE = struct.Struct(">i")
MAX_FRAME = 16 << 20

# What shapes a Python process before any of deployer's code runs: a server started under other
# values would not behave as `deploy` would here, so each set of values has its own server.
_SHAPING_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "PYTHONHOME", "PYTHONIOENCODING", "PYTHONUTF8",
                "PYTHONSAFEPATH", "PYTHONNOUSERSITE", "PYTHONUSERBASE", "PYTHONWARNINGS", "PYTHONDONTWRITEBYTECODE")


class Request:
    """One command for the server: what the cold process would have had.

    Its frame is NUL-separated fields (no argument, path or environment string holds a NUL), each
    UTF-8 with surrogate escapes, so undecodable bytes of argv or env arrive intact: a version, the
    umask, the working dir, the number of arguments, the arguments, then `NAME=value` per variable.
    (No json, typing or hashlib: `deploy` imports this before every command.)"""

    __slots__ = ("argv", "cwd", "env", "umask")
    __hash__ = None  # type: ignore[assignment]  # mutable: compared, never hashed

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str], umask: int) -> None:
        self.argv, self.cwd, self.env, self.umask = argv, cwd, env, umask

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and (self.argv, self.cwd, self.env, self.umask) == (
            other.argv, other.cwd, other.env, other.umask)

    def __repr__(self) -> str:
        return f"Request(argv={self.argv!r}, cwd={self.cwd!r}, env=<{len(self.env)} vars>, umask={self.umask:o})"

    def frame(self) -> bytes:
        fields = [_VERSION, str(self.umask), self.cwd, str(len(self.argv)), *self.argv,
                  *(f"{k}={v}" for k, v in self.env.items())]
        if any("\0" in f for f in fields) or any("=" in k or not k for k in self.env):
            raise ValueError("a NUL in an argument, the working dir or the environment, or an odd variable name")
        body = "\0".join(fields).encode("utf-8", "surrogateescape")
        return HEADER.pack(len(body)) + body

    @classmethod
    def parse(cls, body: bytes) -> Request:
        fields = body.decode("utf-8", "surrogateescape").split("\0")
        if len(fields) < 4 or fields[0] != _VERSION:
            raise ValueError("not a request frame of this version")
        umask, cwd, n = int(fields[1]), fields[2], int(fields[3])
        if n < 0 or len(fields) < 4 + n:
            raise ValueError("a request frame cut short")
        env = dict(f.split("=", 1) for f in fields[4 + n:])
        return cls(argv=fields[4:4 + n], cwd=cwd, env=env, umask=umask)


_VERSION = "deployer-warm-1"


def enabled(env: Mapping[str, str]) -> bool:
    """Warm start is on unless DEPLOY_WARM=0 (or off/no/false); Linux only (WSL2 included)."""
    return sys.platform.startswith("linux") and env.get("DEPLOY_WARM", "1").strip().lower() not in (
        "0", "off", "no", "false")


def idle_seconds(env: Mapping[str, str]) -> float:
    """How long a server waits for a command before it exits (DEPLOY_WARM_IDLE_S, default 600)."""
    try:
        return max(1.0, float(env.get("DEPLOY_WARM_IDLE_S", "600")))
    except ValueError:
        return 600.0


def server_key(python: str, package_dir: str, env: Mapping[str, str]) -> str:
    """One server per Python (its binary and prefix: a venv), deployer install and process-shaping
    environment (pure)."""
    shaping = "\0".join([python, package_dir] + [f"{k}={env.get(k, '')}" for k in _SHAPING_ENV])
    data = shaping.encode(errors="surrogateescape")
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"  # 64 bits to tell a user's few servers apart


def socket_dir(env: Mapping[str, str]) -> str:
    """$XDG_RUNTIME_DIR/deployer, else $TMPDIR (or /tmp)/deployer-<uid>: private to this user."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "deployer")
    tmp = env.get("TMPDIR")
    return os.path.join(tmp if tmp and os.path.isabs(tmp) else "/tmp", f"deployer-{os.getuid()}")


def socket_path(env: Mapping[str, str]) -> str:
    """The socket of the server that matches this process."""
    package_dir = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    python = f"{os.path.realpath(sys.executable)}:{sys.prefix}"  # a venv's python and python3 are one
    return os.path.join(socket_dir(env), f"warm-{server_key(python, package_dir, env)}.sock")


def private_dir(path: str) -> bool:
    """Make path (mode 0700) if missing; True only if it is a directory of ours nobody else can use."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
