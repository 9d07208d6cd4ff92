"""The dry run lists the very steps the executor runs: each route run for real (the remote scripts
by a local sh, a stand-in `docker`), its commands compared with ship.steps.transfer_steps."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from fakedocker import Image, fake_docker
from test_ship_transfer import LocalSession

from deployer.codec import CodecChoice
from deployer.commands import ship as cmd
from deployer.inventory.host import Host
from deployer.local.cache import Blob
from deployer.local.image import ImageInfo
from deployer.ship import steps
from deployer.ship.conn import HostConn
from deployer.ship.plan import ShipPlan
from deployer.ship.progress import NullReporter
from deployer.ship.registry import PushStats
from deployer.ship.route import Leg, run_registry, run_tarball
from deployer.ship.tarball import Counter, tag_and_verify
from deployer.transport.fake import FakeSession
from deployer.transport.result import Result


class Recording(LocalSession):
    """A LocalSession that keeps every argv it ran, in order."""

    def __init__(self) -> None:
        super().__init__([])
        self.argvs: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], **kw: object) -> Result:  # type: ignore[override]
        self.argvs.append(tuple(argv))
        return super().run(argv, **kw)  # type: ignore[arg-type]

    def send(self, argv: Sequence[str], chunks: Iterable[bytes], **kw: object) -> Result:  # type: ignore[override]
        self.argvs.append(tuple(argv))
        return super().send(argv, chunks, **kw)  # type: ignore[arg-type]


class Exported:
    """The export side of a tarball ship, already done: every blob compressed in the local cache
    (moved out of the host's staging dir, where fakedocker's Image puts them), the config known."""

    level, cache = 3, None

    def __init__(self, img: Image, cache: Path) -> None:
        cache.mkdir()
        self.config_bytes = img.config
        self.blobs = []
        for b in img.blobs:
            path = cache / b.path.name
            b.path.rename(path)
            self.blobs.append(dataclasses.replace(b, path=path))

    def ready(self) -> Iterator[Blob]:
        yield from self.blobs

    def next_blob(self, codec: str, order: Sequence[str], taken: set[str], stream: bool) -> Blob | None:
        return next((b for d in order for b in self.blobs if b.diff_id == d and d not in taken), None)

    def blob(self, diff_id: str, codec: str) -> Blob:
        return next(b for b in self.blobs if b.diff_id == diff_id)

    def config(self) -> bytes:
        return self.config_bytes

    def cached(self, diff_id: str, codec: str) -> None:
        return None

    def wait_blob(self, diff_id: str, codec: str, timeout: float) -> Blob:
        return self.blob(diff_id, codec)


def _plan(img: Image, host: Host, **kw: object) -> ShipPlan:
    fields: dict = dict(host=host.name, ref="t:v", image_id=img.id, route="tarball", via="tarball", reason="test",
                        layers_total=len(img.diff_ids), missing=tuple(range(len(img.diff_ids))),
                        codec=CodecChoice("gzip", host_decompress=True), diff_ids=tuple(img.diff_ids))
    return ShipPlan(**{**fields, **kw})


def _filled(planned: steps.Step, img: Image) -> tuple[str, ...]:
    """A planned step's argv with the dry run's placeholders replaced by this image's values."""
    out = []
    for arg in planned.argv:
        for i, blob in enumerate(img.blobs):
            arg = arg.replace(steps.blob_placeholder("gzip", i), blob.digest)
            arg = arg.replace(steps.blob_placeholder("gzip", i)[7:], blob.digest[7:])
        out.append(arg)
    return tuple(out)


def test_a_tarball_ship_runs_the_dry_runs_steps(tmp_path: Path) -> None:
    img = Image(tmp_path)
    docker, state = fake_docker(tmp_path)
    host = Host("local", vars={"deploy_staging_dir": img.staging, "deploy_docker": " ".join(docker)})
    session = Recording()
    plan = _plan(img, host)
    counter = Counter()
    leg = Leg(host, HostConn(host, session=session), img.info, plan, counter)
    exported = Exported(img, tmp_path / "cache")
    assert run_tarball(leg, exported, NullReporter()) == img.id  # type: ignore[arg-type]
    assert json.loads(state.read_text())["tags"] == {"t:v": img.id}
    assert counter.layers == 4 and counter.sent > 0

    planned = steps.transfer_steps(plan, host)
    ran = session.argvs
    scripts = [a[2] for a in ran]
    # the loader may register the layers in one or more stand-in loads (or leave them to install)
    stand_in = planned[-2].argv[2]
    collapsed = [s for k, s in enumerate(scripts) if s != stand_in or k == 0 or scripts[k - 1] != stand_in]
    assert [s.argv[2] for s in planned if s.argv[2] != stand_in] == [s for s in collapsed if s != stand_in]
    assert ran[0] == planned[0].argv  # prepare
    receives = [a for a in ran if a[2] == planned[1].argv[2]]
    assert receives == [_filled(s, img)[:-2] + (str(b.size), "0") for s, b in zip(planned[1:5], exported.blobs)]
    installed, expected = ran[-1], _filled(planned[-1], img)
    assert installed[:9] == expected[:9] and installed[-len(docker):] == docker  # all but the blob names' order


def test_a_registry_ship_runs_the_dry_runs_steps() -> None:
    host = Host("gpu01", vars={"deploy_registry": "r:5000"})
    pulled = "sha256:" + "b" * 64
    fake = FakeSession("gpu01")  # the pull-and-install script, as it reports the pulled image's id
    fake.on(["sh", "-c"], prefix=True, stdout=f"abc: Pull complete\npulled-id {pulled}\ntagged {pulled}\n")

    class Pushed:  # the push itself is the local Docker's (tests/integration)
        def stages(self, registry: str) -> Iterator[tuple[str, int]]:
            return iter(())  # a push without stages (deployer.local.stages): the dry run's steps alone

        def pushed(self, registry: str) -> bool:
            return False

        def push(self, registry: str, on_bytes: object) -> tuple[PushStats, bool]:
            return PushStats("r:5000/t:v", 1, 0, 100, digest=pulled, wire_bytes=10), True

    plan = ShipPlan(host="gpu01", ref="t:v", image_id="sha256:" + "a" * 64, route="registry", via="registry",
                    reason="test", layers_total=1, registry_ref="r:5000/t:v", diff_ids=("sha256:" + "c" * 64,))
    info = ImageInfo("t:v", plan.image_id, plan.diff_ids, 0, "linux", "amd64", ())
    leg = Leg(host, HostConn(host, session=fake), info, plan, Counter())
    assert run_registry(leg, Pushed(), NullReporter()) == pulled  # type: ignore[arg-type]
    ids = " ".join((info.config_digest, pulled))  # the likeliest first: the classic store's id
    expected = [tuple(a.replace(steps.EXPECTED_IDS, ids).replace(steps.PUSHED, pulled) for a in s.argv)
                for s in steps.transfer_steps(plan, host)]
    assert fake.argvs() == expected


@pytest.mark.parametrize("route", ["tag", "noop"])
def test_tag_and_noop_routes(route: str) -> None:
    host = Host("gpu01")
    image_id = "sha256:" + "a" * 64
    plan = ShipPlan(host="gpu01", ref="t:v", image_id=image_id, route=route, via=None, reason="test",
                    layers_total=1, host_id=image_id)
    fake = FakeSession("gpu01").on(["sh", "-c"], prefix=True, stdout=image_id + "\n")
    if route == "tag":
        assert tag_and_verify(HostConn(host, session=fake), host.docker, image_id, "t:v", image_id)
    assert fake.argvs() == [s.argv for s in steps.transfer_steps(plan, host)]
    assert cmd.tag_verify_argv(host.docker, image_id, "t:v") in fake.argvs() or route == "noop"


def test_a_detached_session_is_the_callers_and_a_dead_one_is_not_handed_on() -> None:
    host = Host("gpu01", {"ansible_host": "10.0.0.1"})
    live = FakeSession("gpu01")
    conn = HostConn(host, session=live)
    assert conn.detach() is live and not live.closed
    conn.close()  # the conn forgot it: closing the conn leaves the caller's session open
    assert not live.closed
    dead = FakeSession("gpu01")
    dead.alive = False  # type: ignore[attr-defined]
    assert HostConn(host, session=dead).detach() is None and dead.closed
