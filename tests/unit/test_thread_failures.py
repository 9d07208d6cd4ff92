"""No thread dies silently: a failure injected at each stage of the export, and of a transfer that
waits on it, ends in a clear LocalError for every consumer, never in a hang.

The export runs in its own thread; senders wait on it (ready(), blob(), config()) and
`deploy bundle` polls it. Each test has a timeout: on failure it hangs instead of failing."""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from test_local_savestream import FakeClient, image, layer_tar, save_legacy, save_oci

from deployer.errors import LocalError
from deployer.inventory.host import Host
from deployer.local import export
from deployer.local.bundle import write_bundle
from deployer.local.cache import Cache
from deployer.local.export import Exporter
from deployer.ship.conn import HostConn
from deployer.ship.exports import ExportPool
from deployer.ship.tarball import Counter, stage_blob
from deployer.transport.fake import Call, FakeSession
from deployer.transport.result import Result

LAYERS = [layer_tar(i) for i in range(3)]
INFO, CONFIG = image(LAYERS)
D = INFO.diff_ids
pytestmark = pytest.mark.timeout(20)


def _failing_compressor(fail_on: str) -> Callable[..., Any]:
    """export.compressor, except that the compressor of layer FAIL_ON's blob raises zstd's own error."""
    real = export.compressor

    def make(codec: str, level: int, writer: Any) -> Any:
        comp = real(codec, level, writer)
        if writer.diff_id != fail_on:
            return comp

        class Broken:
            def write(self, data: bytes) -> None:
                raise zstandard.ZstdError("zstd compress error: Allocation error : not enough memory")

            def finish(self) -> None:
                comp.finish()

        return Broken()

    return make


def _corrupt_gzip_stream() -> bytes:
    """An OCI save (containerd store: gzip layer blobs) in which one blob is cut and garbled."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [(f"blobs/sha256/{INFO.id_hex}", CONFIG),
                           ("blobs/sha256/" + "e" * 64, gzip.compress(LAYERS[0], mtime=0)[:40] + b"\xff" * 4096)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _consumers_all_raise(exp: Exporter, match: str, failed: str = D[2]) -> LocalError:
    """Every way of waiting on EXP raises a clear LocalError (none of them with a timeout); the
    blobs it made before the failure stay usable."""
    made = []
    with pytest.raises(LocalError, match=match) as raised:
        for blob in exp.ready():
            made.append(blob)
    for wait in (lambda: exp.blob(failed, "zstd"), exp.wait):
        with pytest.raises(LocalError, match=match):
            wait()
    assert exp.done and failed not in {b.diff_id for b in made}
    assert [exp.blob(b.diff_id, "zstd") for b in made] == made
    return raised.value


def test_the_compressor_raising(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "compressor", _failing_compressor(D[1]))
    exp = Exporter(INFO, {"zstd": set(D)}, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)),  # type: ignore[arg-type]
                   cache=Cache(tmp_path), use_store=False).start()
    err = _consumers_all_raise(exp, "exporting example/app:v1 failed: ZstdError: .*not enough memory", D[1])
    assert isinstance(err.__cause__, zstandard.ZstdError) and err.hint and "memory" in err.hint
    assert [p.name for p in (tmp_path / "sha256").iterdir() if p.name.startswith(".tmp")] == []


def test_a_corrupt_save_stream(tmp_path: Path) -> None:
    exp = Exporter(INFO, {"zstd": set(D)}, client=FakeClient(_corrupt_gzip_stream()),  # type: ignore[arg-type]
                   cache=Cache(tmp_path), use_store=False).start()
    err = _consumers_all_raise(exp, "exporting example/app:v1 failed: error: .*")
    assert isinstance(err.__cause__, zlib.error) and err.hint and "corrupt" in err.hint
    assert exp.config() == CONFIG


def test_a_bug_in_classification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def classify(*_: object) -> None:
        raise KeyError("kind")

    monkeypatch.setattr(export, "classify", classify)
    exp = Exporter(INFO, {"zstd": set(D)}, client=FakeClient(save_oci(INFO, CONFIG, LAYERS)),  # type: ignore[arg-type]
                   cache=Cache(tmp_path), use_store=False).start()
    err = _consumers_all_raise(exp, "failed: KeyError: 'kind'")
    assert err.hint and "bug" in err.hint and isinstance(err.__cause__, KeyError)
    with pytest.raises(LocalError, match="KeyError"):
        exp.config()


def test_the_bundle_does_not_spin_on_a_dead_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "compressor", _failing_compressor(D[0]))
    out = tmp_path / "app.tar.zst"
    seen: list[str] = []
    with pytest.raises(LocalError, match="ZstdError"):
        write_bundle(INFO, out, client=FakeClient(save_legacy(INFO, CONFIG, LAYERS)),  # type: ignore[arg-type]
                     cache=Cache(tmp_path / "cache"), progress=lambda phase, *_: seen.append(phase))
    assert not out.exists() and not (tmp_path / "app.tar.zst.partial").exists()


def _receiving_host() -> tuple[HostConn, FakeSession]:
    """A host whose `receive` script stores whatever is sent and answers `ok DIGEST`."""
    fake = FakeSession("gpu01", strict=False)

    def receive(call: Call) -> Result:
        return Result.of(call.argv, 0, f"ok sha256:{hashlib.sha256(call.sent).hexdigest()}\n")

    fake.on(["sh", "-c"], prefix=True, handler=receive)
    return HostConn(Host("gpu01"), connector=lambda _h: fake), fake  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("stage", ["compressor", "stream", "bug"])
def test_a_sender_waiting_on_a_failing_export_gets_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """The transfer side: a host sends each blob as the shared export finishes it (through the fake
    transport); when the export dies part-way, the sender stops with the export's error."""
    monkeypatch.setenv("DEPLOYER_CACHE_DIR", str(tmp_path / "cache"))
    stream = save_oci(INFO, CONFIG, LAYERS)  # layers in the order D[2], D[1], D[0]
    if stage == "compressor":
        monkeypatch.setattr(export, "compressor", _failing_compressor(D[0]))
    elif stage == "stream":
        stream = stream[: len(stream) * 2 // 3]  # the daemon died mid-save
    else:
        monkeypatch.setattr(export, "sniff", lambda *_: 1 // 0)
    pool = ExportPool(INFO, 3, expected=1, grace_s=0.1, client=FakeClient(stream))  # type: ignore[arg-type]
    conn, fake = _receiving_host()
    sent: list[str] = []
    try:
        exp = pool.join("zstd", D)
        with pytest.raises(LocalError, match="example/app:v1") as raised:
            for blob in exp.ready():
                stage_blob(conn, "/staging", blob, Counter(), listed={})
                sent.append(blob.diff_id)
    finally:
        pool.close()
    assert "\n" not in str(raised.value).split("\n  hint:")[0]  # one line, then the hint
    if stage == "compressor":
        # what was ready went out: both, in completion order, or the lower first when both were
        # ready at once (Exporter.ready: the host registers layers bottom-up)
        assert sent in ([D[2], D[1]], [D[1], D[2]]) and len(fake.sent_bytes()) > 0
    if stage == "bug":
        assert isinstance(raised.value.__cause__, ZeroDivisionError) and not sent
