"""Jump hosts from inventory vars: `deploy_jump`, or ProxyJump / -J / ProxyCommand in ssh args.

Pure parsing; the transport opens the jump connection. A jump is returned in ssh's
ProxyJump form, `[user@]host[:port]` (several hops comma-separated).
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

SSH_ARG_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
JUMP_VARS = ("deploy_jump", *SSH_ARG_VARS)  # the vars jump_of reads
_HOP = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@\s/]+)@)?(?P<host>\[[^\]]+\]|[^:@\s/]+)(?::(?P<port>[0-9]+))?/?$")


def normalize(spec: str) -> str | None:
    """'ssh://u@h:2' -> 'u@h:2'; 'none' -> None; raises ValueError on a malformed hop."""
    spec = spec.strip()
    if not spec or spec.lower() == "none":
        return None
    hops = []
    for hop in spec.split(","):
        m = _HOP.match(hop.strip())
        if not m:
            raise ValueError(f"not a jump host: {hop!r} (expected [user@]host[:port])")
        text = m.group("host")
        if m.group("user"):
            text = f"{m.group('user')}@{text}"
        if m.group("port"):
            text = f"{text}:{m.group('port')}"
        hops.append(text)
    return ",".join(hops)


def from_ssh_args(args: str) -> str | None:
    """The jump named by ssh arguments (`-J`, `-o ProxyJump=`, `-o ProxyCommand="ssh -W %h:%p ..."`)."""
    try:
        tokens = shlex.split(args)
    except ValueError:
        return None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        value: str | None = None
        if tok == "-J" and i + 1 < len(tokens):
            return normalize(tokens[i + 1])
        if tok.startswith("-J") and len(tok) > 2:
            return normalize(tok[2:])
        if tok == "-o" and i + 1 < len(tokens):
            value = tokens[i + 1]
            i += 1
        elif tok.startswith("-o") and len(tok) > 2:
            value = tok[2:]
        if value:
            key, _, opt = value.partition("=") if "=" in value else value.partition(" ")
            key = key.strip().lower()
            if key == "proxyjump":
                return normalize(opt)
            if key == "proxycommand":
                return _from_proxy_command(opt)
        i += 1
    return None


def _from_proxy_command(command: str) -> str | None:
    # Only the classic `ssh [-p P] [-l U] -W %h:%p [user@]bastion` form maps to a jump host.
    try:
        tokens = shlex.split(command)
    except ValueError:
        return None
    if not tokens or not tokens[0].endswith("ssh") or "-W" not in tokens:
        return None
    user = port = None
    host = None
    i = 1
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("-p", "-l", "-W", "-i", "-o", "-F") and i + 1 < len(tokens):
            if tok == "-p":
                port = tokens[i + 1]
            elif tok == "-l":
                user = tokens[i + 1]
            i += 2
            continue
        if not tok.startswith("-"):
            host = tok
        i += 1
    if not host:
        return None
    if "@" in host:
        user, host = host.split("@", 1)
    spec = f"{user}@{host}" if user else host
    return normalize(f"{spec}:{port}" if port else spec)


def jump_of(vars: Mapping[str, Any]) -> str | None:
    """`deploy_jump` if set, else the jump in ansible_ssh_common_args / ansible_ssh_extra_args."""
    explicit = vars.get("deploy_jump")
    if explicit:
        return normalize(str(explicit))
    for key in SSH_ARG_VARS:
        args = vars.get(key)
        if args:
            found = from_ssh_args(str(args))
            if found:
                return found
    return None
