"""The docker SDK half of the registry route: push with the user's Docker login, and what reading
the pushed manifest back needs (the registry's digest, the credentials, the insecure-registry setting).

deployer.ship.registry reads the push stream; deployer.ship.registry_api talks HTTP to the registry.
Credentials come from the user's Docker config / credential helpers and are only handed back to
the caller, never logged.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker.auth
import docker.errors

from deployer.errors import LocalError
from deployer.local.client import Client, daemon_info, translated


def push_stream(client: Client, image_id: str, remote_ref: str, hint: str) -> Iterator[dict[str, Any]]:
    """Tag image_id as remote_ref (REPO:TAG) and push it: the decoded progress records as Docker sends
    them. SDK failures, also while the stream is read, become LocalError("... pushing REMOTE_REF ...")."""
    repo, tag = remote_ref.rsplit(":", 1)
    with translated(f"pushing {remote_ref}", hint=hint):
        client.api.tag(image_id, repo, tag)
        yield from client.api.push(repo, tag, stream=True, decode=True)


def distribution_digest(client: Client, remote_ref: str) -> str:
    """The digest the registry gives remote_ref, asked through the local daemon (KeyError if it names none)."""
    with translated(f"asking the registry for {remote_ref}"):
        return str(client.api.inspect_distribution(remote_ref)["Descriptor"]["digest"])


def repository_name(name: str) -> tuple[str, str]:
    """(index, path) of a repository name without tag, by Docker's rule (pure):
    `10.0.0.5:5000/t/x` -> ('10.0.0.5:5000', 't/x'); `busybox` -> ('docker.io', 'busybox')."""
    try:
        index, path = docker.auth.resolve_repository_name(name)
    except docker.errors.InvalidRepository as exc:
        raise LocalError(f"{name} is not a repository name: {exc}") from exc
    return str(index), str(path)


def registry_credentials(client: Client, index: str) -> dict[str, str]:
    """The auth entry `docker push` used for index, keys lower-cased ({} when anonymous)."""
    with translated(f"reading the Docker login for {index}"):
        config = docker.auth.load_config(credstore_env=client.api.credstore_env)
        entry = docker.auth.resolve_authconfig(config, index, credstore_env=client.api.credstore_env) or {}
    return {k.lower(): str(v) for k, v in entry.items() if v}


def registry_config(client: Client) -> dict[str, Any]:
    """The local daemon's registry settings (`docker info` RegistryConfig: insecure registries...)."""
    with translated("reading docker info"):
        return dict(daemon_info(client).get("RegistryConfig") or {})
