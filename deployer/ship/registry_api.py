"""Reading a pushed manifest through the registry HTTP API (v2), with the credentials Docker uses.

Only GETs of manifests and image configs: enough to learn the compressed size of each pushed layer,
and the layers (diff IDs) of a base image a build declared (deployer.ship.origin). Credentials
come from the user's Docker config / credential helpers (deployer.local.push); they go only to
the registry and the token realm it names, never into logs or messages.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3

from deployer import layercache
from deployer.local.client import Client
from deployer.local.push import registry_config, registry_credentials, repository_name

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
_HUB = "docker.io"
_HUB_API = "registry-1.docker.io"
_MAX_CHILDREN = 16  # an index with more platforms than this is not something we pushed
_MAX_CONFIG_BYTES = 4 * 1024**2  # an image config is a few KB; a CUDA image's some 30 KB


class RegistryAPIError(Exception):
    """The manifest could not be read (message is safe to show: no credentials)."""


class RegistryUnreachable(RegistryAPIError):
    """No connection to the registry at all (asking it about another image is no use either)."""


@dataclass(frozen=True)
class Repo:
    index: str  # as Docker names it: 10.0.0.5:5000, docker.io
    path: str   # team/trainer (library/x on Docker Hub)

    @property
    def api_host(self) -> str:
        return _HUB_API if self.index == _HUB else self.index


def split_repo(name: str) -> Repo:
    """Registry and repository path of a pushed name without tag (`10.0.0.5:5000/t/x`) (pure)."""
    index, path = repository_name(name)
    if index == _HUB and "/" not in path:
        path = f"library/{path}"
    return Repo(index, path)


def is_insecure(registry_config: Mapping[str, Any], index: str) -> bool:
    """Docker's rule: listed as not Secure, or an IP inside InsecureRegistryCIDRs (pure)."""
    configs = registry_config.get("IndexConfigs") or {}
    if index in configs:
        return not configs[index].get("Secure", True)
    host = index.rsplit(":", 1)[0] if index.count(":") == 1 else index
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    for cidr in registry_config.get("InsecureRegistryCIDRs") or []:
        try:
            if ip in ipaddress.ip_network(cidr, strict=False):
                return True
        except ValueError:
            continue
    return False


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer'|'basic', params) of a WWW-Authenticate header (pure)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


_R = TypeVar("_R", bound="ManifestReader")


class ManifestReader:
    """GETs manifests of one repository, answering the registry's auth challenge once."""

    def __init__(self, repo: Repo, creds: Mapping[str, str], insecure: bool, timeout: float = 30.0) -> None:
        self.repo = repo
        self.timeout = timeout
        self._creds = dict(creds)
        # Docker's order: https first; an insecure registry may skip verification or be plain http
        self._bases = [(f"https://{repo.api_host}", not insecure)]
        if insecure:
            self._bases.append((f"http://{repo.api_host}", True))
        self._session = requests.Session()
        self._session.trust_env = False  # talk to the registry as the daemon did, not through a proxy
        self._auth_header: dict[str, str] = {}
        self._challenge = ""  # the challenge the auth header answers
        self._by_digest: dict[str, dict[str, Any]] = {}  # a digest names the same manifest forever

    @classmethod
    def for_docker(cls: type[_R], client: Client, repo: Repo, timeout: float = 30.0) -> _R:
        """A reader with the credentials and the insecure-registry setting of the local Docker."""
        config = registry_config(client)
        return cls(repo, registry_credentials(client, repo.index), is_insecure(config, repo.index), timeout)

    def close(self) -> None:
        """Close its connections (the registry's keep-alive ones)."""
        self._session.close()

    def settle(self) -> None:
        """Find which scheme the registry answers on (GET /v2/, Docker's order) so that later reads
        go straight there: a plain-http registry no longer costs every read a failed TLS handshake.
        An insecure registry found on plain http is remembered (deployer.layercache): the next
        ship's first request skips the TLS attempt (some 40 ms, most of it making the TLS context).
        No answer on either: both are tried again at each read (which reports the error)."""
        if len(self._bases) < 2:
            return
        plain, known = self._bases[-1], layercache.recalled_scheme(self.repo.api_host)
        if known == "http" and self._answers(*plain) is True:
            self._bases = [plain]
            return
        for base, verify in self._bases:
            answered = self._answers(base, verify)
            if answered is None:
                return
            if answered:
                self._bases = [(base, verify)]
                scheme = "http" if (base, verify) == plain else "https"
                if scheme != known:
                    layercache.remember_scheme(self.repo.api_host, scheme)
                return

    def _answers(self, base: str, verify: bool) -> bool | None:
        """Whether the registry answers GET /v2/ at BASE (False: no connection; None: an error
        that another scheme would not mend)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                self._session.get(f"{base}/v2/", timeout=self.timeout, verify=verify).close()
        except requests.exceptions.ConnectionError:  # SSLError included
            return False
        except requests.exceptions.RequestException:
            return None
        return True

    def manifest(self, reference: str) -> dict[str, Any]:
        """The manifest (or index) named by digest or tag (one named by digest is read once)."""
        if reference in self._by_digest:
            return self._by_digest[reference]
        url, res = self._fetch("manifests", reference, ", ".join(MANIFEST_TYPES))
        body = _json_object(res, f"GET {url}")
        if reference.startswith("sha256:"):
            self._by_digest[reference] = body
        return body

    def config(self, digest: str) -> dict[str, Any]:
        """The image config blob at DIGEST (JSON), checked against its digest."""
        url, res = self._fetch("blobs", digest, "application/vnd.oci.image.config.v1+json, application/json")
        if res.status_code == 200 and (len(res.content) > _MAX_CONFIG_BYTES
                                       or f"sha256:{hashlib.sha256(res.content).hexdigest()}" != digest):
            raise RegistryAPIError(f"GET {url} answered a blob that is not the config {digest}")
        return _json_object(res, f"GET {url}")

    def _fetch(self, kind: str, reference: str, accept: str) -> tuple[str, requests.Response]:
        """GET /v2/<repo>/<kind>/<reference> over https, then (an insecure registry) http."""
        last: Exception | None = None
        for base, verify in self._bases:
            url = f"{base}/v2/{self.repo.path}/{kind}/{reference}"
            try:
                return url, self._response(url, verify, accept)
            except requests.exceptions.ConnectionError as exc:  # SSLError included
                last = exc
        raise RegistryUnreachable(f"{self.repo.index} not reachable over {' or '.join(b for b, _ in self._bases)}: "
                               f"{type(last).__name__}")

    def _response(self, url: str, verify: bool, accept: str) -> requests.Response:
        return self._send("GET", url, verify, {"Accept": accept})

    def _send(self, method: str, url: str, verify: bool, headers: Mapping[str, str],
              data: Any = None) -> requests.Response:
        """One request, answering a 401 challenge once: the first one, or one that asks for more
        (a push's token must allow `push` where the reads' allowed `pull`). DATA goes again with
        the answer (a blob's body reads its file anew); an upload's POST, which has no body,
        meets the push's challenge first (deployer.ship.blobpush)."""
        # the login goes to the registry only: not to another host an upload URL may point to
        ours = urlsplit(url).netloc == self.repo.api_host
        auth = self._auth_header if ours else {}
        with warnings.catch_warnings():
            # unverified https is what Docker itself does for a registry marked insecure
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            res = self._session.request(method, url, headers={**headers, **auth}, data=data,
                                        timeout=self.timeout, verify=verify, allow_redirects=method in ("GET", "HEAD"))
            challenge = res.headers.get("WWW-Authenticate", "")
            if res.status_code == 401 and ours and (not auth or challenge != self._challenge):
                self._challenge = challenge
                self._auth_header = self._answer(challenge, verify)
                res = self._session.request(method, url, headers={**headers, **self._auth_header}, data=data,
                                            timeout=self.timeout, verify=verify,
                                            allow_redirects=method in ("GET", "HEAD"))
        return res

    def _answer(self, challenge: str, verify: bool) -> dict[str, str]:
        """The Authorization header for a 401 challenge (basic, or a bearer token from the realm)."""
        scheme, params = parse_challenge(challenge)
        user, password, refresh = self._creds.get("username"), self._creds.get("password"), self._creds.get("identitytoken")
        if scheme == "basic":
            if not (user and password):
                raise RegistryAPIError(f"{self.repo.index} wants a login and Docker has none for it")
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryAPIError(f"{self.repo.index} asked for unsupported auth {scheme or 'none'!r}")
        scope = params.get("scope") or f"repository:{self.repo.path}:pull"
        query = {"service": params.get("service", ""), "scope": scope}
        if refresh:  # an OAuth2 refresh token from `docker login` with an identity provider
            res = self._session.post(params["realm"], timeout=self.timeout, verify=verify, data={
                **query, "grant_type": "refresh_token", "refresh_token": refresh, "client_id": "deployer"})
        else:
            auth = (user, password) if user and password else None
            res = self._session.get(params["realm"], params=query, auth=auth, timeout=self.timeout, verify=verify)
        body = _json_object(res, f"token request to {params['realm']}")
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryAPIError(f"{params['realm']} gave no token")
        return {"Authorization": f"Bearer {token}"}


def _json_object(res: requests.Response, what: str) -> dict[str, Any]:
    """The JSON object an HTTP 200 answer carries; RegistryAPIError for anything else."""
    if res.status_code != 200:
        raise RegistryAPIError(f"{what} answered HTTP {res.status_code}")
    try:
        body = res.json()
    except ValueError as exc:
        raise RegistryAPIError(f"{what} did not answer JSON") from exc
    if not isinstance(body, dict):
        raise RegistryAPIError(f"{what} answered {type(body).__name__}, not a JSON object")
    return body


def image_manifest(reader: ManifestReader, digest: str, config_digest: str) -> dict[str, Any]:
    """The image manifest at digest; for an index, the child whose config is config_digest."""
    top = reader.manifest(digest)
    if "layers" in top:
        return top
    for found in _children(reader, top):
        if (found.get("config") or {}).get("digest") == config_digest and "layers" in found:
            return found
    raise RegistryAPIError(f"{digest} lists no manifest for config {config_digest}")


def other_manifests(reader: ManifestReader, digest: str, image: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The manifests the index at DIGEST lists besides IMAGE (an image's attestation); none when
    DIGEST is IMAGE itself."""
    return [found for found in _children(reader, reader.manifest(digest)) if found != image]


def _children(reader: ManifestReader, top: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The manifests an index lists, read one by one as they are asked for (none for a manifest)."""
    for child in (top.get("manifests") or [])[:_MAX_CHILDREN]:
        ref = child.get("digest") if isinstance(child, dict) else None
        if ref:
            yield reader.manifest(str(ref))


def platform_child(index: Mapping[str, Any], platform: str) -> str | None:
    """The digest of the manifest an index lists for PLATFORM (`linux/arm64[/v8]`), None if none (pure).
    A variant counts only when both name one (arm64's v8 is often left out)."""
    os_, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    for child in (index.get("manifests") or [])[:_MAX_CHILDREN * 4]:
        if not isinstance(child, Mapping) or not child.get("digest"):
            continue
        p = child.get("platform") or {}
        if p.get("os") == os_ and p.get("architecture") == arch and \
                (not variant or not p.get("variant") or p.get("variant") == variant):
            return str(child["digest"])
    return None


def platform_manifest(reader: ManifestReader, digest: str, platform: str) -> tuple[str, dict[str, Any]]:
    """(its digest, the image manifest) at DIGEST; for an index, its manifest for PLATFORM."""
    top = reader.manifest(digest)
    if "layers" in top:
        return digest, top
    child = platform_child(top, platform)
    if child is None:
        raise RegistryAPIError(f"{digest} lists no manifest for {platform}")
    found = reader.manifest(child)
    if "layers" not in found:
        raise RegistryAPIError(f"{child} is not an image manifest")
    return child, found
