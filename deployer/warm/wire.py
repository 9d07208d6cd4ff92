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

import hashlib
import json
import os
import stat
import struct
import sys
from collections.abc import Mapping
from typing import NamedTuple

STALE, READY, GO, SIGNAL, EXIT = b"S", b"R", b"G", b"K", b"X"
HEADER = struct.Struct(">I")
CODE = struct.Struct(">i")
MAX_FRAME = 16 << 20

# What shapes a Python process before any of deployer's code runs: a server started under other
# values would not behave as `deploy` would here, so each set of values has its own server.
_SHAPING_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "PYTHONHOME", "PYTHONIOENCODING", "PYTHONUTF8",
                "PYTHONSAFEPATH", "PYTHONNOUSERSITE", "PYTHONUSERBASE", "PYTHONWARNINGS", "PYTHONDONTWRITEBYTECODE")


class Request(NamedTuple):
    """One command for the server: what the cold process would have had."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    umask: int

    def frame(self) -> bytes:
        # ensure_ascii keeps undecodable bytes of argv or env (surrogate escapes) intact in JSON
        body = json.dumps({"argv": self.argv, "cwd": self.cwd, "env": self.env, "umask": self.umask},
                          ensure_ascii=True).encode()
        return HEADER.pack(len(body)) + body

    @classmethod
    def parse(cls, body: bytes) -> Request:
        raw = json.loads(body)
        return cls(argv=[str(a) for a in raw["argv"]], cwd=str(raw["cwd"]),
                   env={str(k): str(v) for k, v in raw["env"].items()}, umask=int(raw["umask"]))


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
    shaping = [python, package_dir] + [f"{k}={env.get(k, '')}" for k in _SHAPING_ENV]
    return hashlib.sha256("\0".join(shaping).encode(errors="surrogateescape")).hexdigest()[:20]


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
