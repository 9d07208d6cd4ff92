"""The local Docker client, and the one place docker SDK errors become LocalError.

Other packages hold a `Client` only to hand it back to functions of deployer.local; they never
call the SDK themselves (unit tests use deployer.local.fake.FakeClient in its place).
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, Protocol

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.constants import MINIMUM_DOCKER_API_VERSION

from deployer.background import in_background
from deployer.errors import LocalError

# `docker save` of a multi-GB image can stall longer than the SDK's 60 s read timeout
# before the first byte (and between layers); this is a per-read timeout, not a total.
SAVE_TIMEOUT = 1800.0


class Client(Protocol):
    """The local Docker as deployer.local uses it: a docker.DockerClient or a FakeClient."""

    @property
    def api(self) -> Any: ...  # the SDK's low-level APIClient

    def info(self) -> dict[str, Any]: ...


def daemon_info(client: Any) -> dict[str, Any]:
    """`docker info` of the local daemon, asked once per client: a ship reads it in several places
    (the image store, the layer store's root, the content store's, the registry settings), each a
    request of 5-25 ms. A client lives for one command, so its answer is never older than that.
    A prefetch_info still under way is waited for (and asked again if it failed)."""
    known = getattr(client, "_deployer_info", None)
    if isinstance(known, dict):
        return known
    if isinstance(known, Future):
        try:
            known = known.result()
        except Exception:  # noqa: BLE001 - asked again below, where its error is the caller's to translate
            known = None
    if not isinstance(known, dict):
        known = client.info()
    try:
        client._deployer_info = known
    except AttributeError:  # a client that takes no attributes is asked every time
        pass
    return known  # type: ignore[no-any-return]


def prefetch_info(client: Any) -> None:
    """Ask `docker info` (daemon_info) in the background now, while the command's first requests
    (the image's inspect and history) go on: the export and the registry push need its answer
    (the layer store's root, the insecure registries), 5-25 ms of the daemon's time, a little later."""
    if getattr(client, "_deployer_info", None) is not None or not callable(getattr(client, "info", None)):
        return
    try:
        client._deployer_info = in_background("docker-info", client.info)
    except AttributeError:  # a client that takes no attributes: asked when needed
        pass


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or "the default socket"


def docker_client(timeout: float = SAVE_TIMEOUT) -> Client:
    """A client for the local Docker from the environment (DOCKER_HOST, DOCKER_TLS_VERIFY...).

    Its API version is the daemon's, read from a ping as the docker CLI reads it: the SDK's own
    negotiation asks /version, which costs the daemon 5-15 ms more on every command."""
    try:
        client = docker.from_env(timeout=int(timeout), version=MINIMUM_DOCKER_API_VERSION)  # no request yet
        version = pinged_version(client.api.get(client.api.base_url + "/_ping", timeout=int(timeout)))
        if version is not None:
            client.api._version = version  # what the SDK's "auto" sets, with the answer of /version
        if client.api.api_version != version:  # no version in the answer, or an SDK that keeps it elsewhere
            client = docker.from_env(timeout=int(timeout))
    except docker.errors.DockerException as exc:
        raise LocalError(
            f"local Docker is not reachable at {_where()}: {exc}",
            hint="start Docker (or set DOCKER_HOST) and check `docker info` works",
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise LocalError(
            f"local Docker is not reachable at {_where()}: {exc}",
            hint="start Docker (or set DOCKER_HOST) and check `docker info` works",
        ) from exc
    return client


def pinged_version(res: requests.Response) -> str | None:
    """The API version a daemon's answer to /_ping names (its Api-Version header), if it is one."""
    version = res.headers.get("Api-Version", "")
    return version if res.ok and re.fullmatch(r"\d+\.\d+", version) else None


@contextlib.contextmanager
def translated(what: str, hint: str | None = None) -> Iterator[None]:
    """Run a block of docker SDK calls; any SDK/HTTP failure becomes LocalError(what ...)."""
    try:
        yield
    except LocalError:
        raise
    except docker.errors.NotFound as exc:
        raise LocalError(f"local Docker: {what}: {_explain(exc)}", hint=hint) from exc
    except docker.errors.DockerException as exc:
        raise LocalError(
            f"local Docker: {what}: {_explain(exc)}",
            hint=hint or f"check the local Docker daemon ({_where()}) with `docker info`",
        ) from exc
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
        # urllib3 errors escape requests while a streamed body (docker save) is being read
        raise LocalError(
            f"local Docker: {what}: connection failed: {exc}",
            hint=hint or f"check the local Docker daemon ({_where()}) with `docker info`",
        ) from exc


def _explain(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
