"""Base images on the workstation daemon, made without any registry: busybox-static via
`docker import`, then a small multi-layer sample image built from it. Cached as a `docker save` tarball,
one per image store (a containerd-store save is an OCI layout with other image ids)."""
from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .config import BASE_IMAGE, SAMPLE_IMAGE, STORES, Paths, Store
from .daemons import docker_api, docker_cli

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
BUSYBOX = Path("/bin/busybox")
PAYLOAD_BYTES = 1 << 20


def images_present(p: Paths) -> bool:
    return all(docker_api(p, "ws", f"/images/{name}/json")[0] == 200 for name in (BASE_IMAGE, SAMPLE_IMAGE))


def busybox_rootfs() -> bytes:
    """A tar of a minimal root filesystem: busybox-static with every applet linked in /bin."""
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, check=True).stdout.decode().split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin", "etc", "root",
                  "dev", "proc", "sys", "var", "var/log", "home"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
                tar.addfile(link)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        add_file("etc/hostname", b"sample\n")
    return buf.getvalue()


def payload() -> bytes:
    """1 MiB of deterministic, incompressible bytes so the sample has a layer worth transferring."""
    out, block, i = bytearray(), b"deployer-testbed", 0
    while len(out) < PAYLOAD_BYTES:
        block = hashlib.sha256(block + i.to_bytes(4, "big")).digest()
        out += block
        i += 1
    return bytes(out[:PAYLOAD_BYTES])


def inputs_key() -> str:
    """Changes when anything the images are made from changes (invalidates the cache)."""
    h = hashlib.sha256(BUSYBOX.read_bytes())
    for f in sorted(SAMPLE_DIR.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def ensure_images(p: Paths, store: Store = "overlay2") -> str:
    """Make both images exist on the ws daemon (on `store`): from the cache tarball if current, else build.
    Returns how. The legacy builder (DOCKER_BUILDKIT=0) builds on both stores of Docker 28 (checked)."""
    if images_present(p):
        return "present"
    key = inputs_key()
    cache = p.cache / f"images-{store}-{key}.tar"
    if cache.exists():
        docker_cli(p, "ws", "load", "-q", "-i", str(cache))
        if images_present(p):
            return "loaded from cache"
    docker_cli(p, "ws", "import", "--change", 'CMD ["/bin/sh"]', "--change",
               "ENV PATH=/usr/local/bin:/bin:/usr/bin:/sbin:/usr/sbin", "-", BASE_IMAGE, input=busybox_rootfs())
    with tempfile.TemporaryDirectory(prefix="dtb-sample-") as ctx:
        for f in SAMPLE_DIR.iterdir():
            shutil.copy(f, Path(ctx) / f.name)
        (Path(ctx) / "sample.sh").chmod(0o755)
        (Path(ctx) / "payload.bin").write_bytes(payload())
        docker_cli(p, "ws", "build", "-q", "-t", SAMPLE_IMAGE, ctx, timeout=180)
    p.cache.mkdir(parents=True, exist_ok=True)
    for old in p.cache.glob("images-*.tar"):
        if old.name not in {f"images-{s}-{key}.tar" for s in STORES}:  # keeps the other store's current cache
            old.unlink()
    tmp = cache.with_suffix(".tmp")
    docker_cli(p, "ws", "save", "-o", str(tmp), BASE_IMAGE, SAMPLE_IMAGE)
    tmp.rename(cache)
    return "built"

