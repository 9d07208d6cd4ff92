"""deployer.local.client: the local Docker client takes its API version from a ping, against a
loopback daemon that answers /_ping and /version (DOCKER_HOST=tcp://...)."""
from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from loopback import serving

from deployer.local.client import daemon_info, docker_client, prefetch_info


class Daemon(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api_version: ClassVar[str | None] = "1.47"  # what its ping names (None: no such header, as very old daemons)
    asked: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.asked.append(self.path)
        body = b"OK"
        if self.path == "/version":
            body = b'{"ApiVersion": "1.41", "Version": "20.10.24"}'
        elif self.path.endswith("/info"):
            body = b'{"Driver": "overlay2"}'
        elif self.path != "/_ping":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if self.api_version and self.path == "/_ping":
            self.send_header("Api-Version", self.api_version)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Daemon]]:
    handler = type("Handler", (Daemon,), {"asked": []})
    with serving(handler) as address:
        monkeypatch.setenv("DOCKER_HOST", f"tcp://{address}")
        for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
            monkeypatch.delenv(name, raising=False)
        yield handler


def test_the_api_version_is_the_one_the_daemons_ping_names(daemon: type[Daemon]) -> None:
    client = docker_client()
    assert client.api.api_version == "1.47" and daemon.asked == ["/_ping"]  # no /version asked
    assert client.info() == {"Driver": "overlay2"} and daemon.asked[-1] == "/v1.47/info"


def test_a_ping_without_a_version_falls_back_to_asking_version(daemon: type[Daemon]) -> None:
    daemon.api_version = None
    client = docker_client()
    assert client.api.api_version == "1.41" and daemon.asked == ["/_ping", "/version"]


def test_docker_info_asked_ahead_is_asked_once_and_waited_for(daemon: type[Daemon]) -> None:
    client = docker_client()
    prefetch_info(client)
    assert daemon_info(client) == {"Driver": "overlay2"} and daemon_info(client) == {"Driver": "overlay2"}
    assert daemon.asked.count("/v1.47/info") == 1  # the prefetch's answer, kept for the command


def test_a_prefetch_that_failed_is_asked_again() -> None:
    class Flaky:
        calls = 0

        def info(self) -> dict[str, str]:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("the daemon was restarting")
            return {"Driver": "overlay2"}

    client = Flaky()
    prefetch_info(client)
    assert daemon_info(client) == {"Driver": "overlay2"} and client.calls == 2
