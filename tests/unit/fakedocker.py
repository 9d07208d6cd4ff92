"""A strict stand-in `docker` for the load scripts, and a small staged image to load.

The stand-in reads the load tar the way `docker load` does (manifest, config, each layer file
checked against its diff id, layers it already holds may be absent) and keeps images, labels and
tags in a JSON file (one call at a time, under a lock), so tests see exactly what the host's Docker would be left with. An OCI
layout is read as the containerd image store reads it: blobs go to a content store, the image's
id is its manifest digest, a layer it already holds needs no blob, and an image whose manifest
names a blob the content store lacks loads but is incomplete (untagged it is not listed by
`images -aq`; inspect shows it with no layers).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

from deployer.commands import load as ld
from deployer.commands import ship as cmd
from deployer.local.cache import Blob
from deployer.local.image import ImageInfo

FAKE_DOCKER = r'''
import fcntl, hashlib, json, sys, tarfile
state_path = sys.argv[1]
args = sys.argv[2:]
# one call at a time, as the daemon serialises its own state (the install runs some at once)
_lock = open(state_path + ".lock", "w")
fcntl.flock(_lock, fcntl.LOCK_EX)
with open(state_path + ".calls", "a") as calls:  # what the scripts asked, in order
    calls.write(" ".join(args[:2]) + "\n")
try:
    state = json.load(open(state_path))
except FileNotFoundError:
    state = {"images": {}, "chains": [], "tags": {}}
def save():
    json.dump(state, open(state_path, "w"))
def chain(diffs):
    c = None
    for d in diffs:
        c = d if c is None else "sha256:" + hashlib.sha256(f"{c} {d}".encode()).hexdigest()
    return c
state.setdefault("content", [])
state.setdefault("manifests", {})
def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()
def load_oci(files):
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            if sha(data) != "sha256:" + name.rsplit("/", 1)[1]:
                sys.exit(f"content digest mismatch for {name}")
            if sha(data) not in state["content"]:
                state["content"].append(sha(data))
    desc = json.loads(files["index.json"])["manifests"][0]
    man = json.loads(files["blobs/sha256/" + desc["digest"][7:]])
    config = files["blobs/sha256/" + man["config"]["digest"][7:]]
    cfg = json.loads(config)
    diffs = cfg["rootfs"]["diff_ids"]
    for i, (d, layer) in enumerate(zip(diffs, man["layers"])):
        if chain(diffs[: i + 1]) in state["chains"]:
            continue
        blob = files.get("blobs/sha256/" + layer["digest"][7:])
        if blob is None:
            sys.exit(f"failed to get reader from content store: content digest {layer['digest']} not found")
        if layer["mediaType"].endswith("+gzip"):
            import gzip
            blob = gzip.decompress(blob)
        elif layer["mediaType"].endswith("+zstd"):
            import zstandard
            blob = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        if sha(blob) != d:
            sys.exit(f'invalid diffID for layer {i}: expected "{d}", got "{sha(blob)}"')
        state["chains"].append(chain(diffs[: i + 1]))
    state["images"][desc["digest"]] = (cfg.get("config") or {}).get("Labels") or {}
    state["manifests"][desc["digest"]] = [layer["digest"] for layer in man["layers"]]
    # named by the index (fully qualified), an image is tagged by its familiar name, even one it
    # holds only in part; unnamed, it loads by id
    names = [m["annotations"]["io.containerd.image.name"] for m in json.loads(files["index.json"])["manifests"]
             if "io.containerd.image.name" in (m.get("annotations") or {})]
    for name in names:
        state["tags"][name.removeprefix("docker.io/").removeprefix("library/")] = desc["digest"]
    save()
    for name in names:
        print(f"Loaded image: {name.removeprefix('docker.io/').removeprefix('library/')}")
    if not names:
        print(f"Loaded image ID: {desc['digest']}")
if args[0] == "load":
    files = {}
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
        for m in tar:
            files[m.name] = tar.extractfile(m).read() if m.isfile() else b""
    if "index.json" in files:
        load_oci(files)
        sys.exit(0)
    manifest = json.loads(files["manifest.json"])[0]
    config = files[manifest["Config"]]
    cfg = json.loads(config)
    diffs = cfg["rootfs"]["diff_ids"]
    for i, (d, path) in enumerate(zip(diffs, manifest["Layers"])):
        if chain(diffs[: i + 1]) in state["chains"]:
            continue
        if path not in files:
            sys.exit(f"open {path}: no such file or directory")
        actual = "sha256:" + hashlib.sha256(files[path]).hexdigest()
        if actual != d:
            sys.exit(f'invalid diffID for layer {i}: expected "{d}", got "{actual}"')
        state["chains"].append(chain(diffs[: i + 1]))
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    state["images"][image_id] = (cfg.get("config") or {}).get("Labels") or {}
    for tag in manifest.get("RepoTags") or ():
        state["tags"][tag] = image_id
    save()
    for tag in manifest.get("RepoTags") or ():
        print(f"Loaded image: {tag}")
    if not manifest.get("RepoTags"):
        print(f"Loaded image ID: {image_id}")
elif args[:2] == ["image", "inspect"]:
    fmt = args[args.index("--format") + 1] if "--format" in args else "{{.Id}}"
    refs = [a for a in args[2:] if a != "--format" and a != fmt]
    missing = False
    for ref in refs:  # one line per image found, in the order asked; the others on stderr
        ref = state["tags"].get(ref, ref)
        if ref not in state["images"]:
            print(f"Error: No such image: {ref}", file=sys.stderr)
            missing = True
            continue
        # the containerd store shows no layers for an incomplete image
        layers = state["manifests"].get(ref)
        count = 0 if layers and not all(d in state["content"] for d in layers) else len(layers or [1])
        line = fmt
        for field, value in {"{{.Id}}": ref, "{{len .RootFS.Layers}}": str(count)}.items():
            line = line.replace(field, value)
        print(line)
    sys.exit(1 if missing else 0)
elif args[:2] == ["images", "-aq"]:
    for image_id in state["images"]:
        if all(d in state["content"] for d in state["manifests"].get(image_id, [])):
            print(image_id)
elif args[0] == "images":
    key, _, value = args[-1].removeprefix("label=").partition("=")
    for image_id, labels in state["images"].items():
        if labels.get(key) == value:
            print(image_id)
elif args[:2] == ["image", "rm"]:  # like Docker's: every image named, then exit 1 if one was missing
    missing = []
    for ref in args[2:]:
        if ref in state["tags"]:  # a name: untagged, and its image goes with its last name
            target = state["tags"].pop(ref)
            if target not in state["tags"].values():
                state["images"].pop(target, None)
        elif state["images"].pop(ref, None) is None:
            missing.append(ref)
    save()
    for ref in missing:
        print(f"Error: No such image: {ref}", file=sys.stderr)
    sys.exit(1 if missing else 0)
elif args[0] == "tag":
    state["tags"][args[2]] = args[1]
    save()
else:
    sys.exit(f"unexpected docker call {args}")
'''


def fake_docker(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    script = tmp_path / "fake_docker.py"
    script.write_text(FAKE_DOCKER)
    state = tmp_path / "docker-state.json"
    return (sys.executable, str(script), str(state)), state


def calls(state: Path) -> list[str]:
    """The docker calls made so far (their first two words), in order."""
    path = Path(f"{state}.calls")
    return path.read_text().splitlines() if path.exists() else []


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Image:
    """Four small layers, staged as gzip blobs in a staging dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.staging = str(tmp_path / "staging")
        self.layers = [b"base" * 300, b"libs" * 700, b"base" * 300 + b"!", b"code" * 5]
        self.diff_ids = [sha(x) for x in self.layers]
        self.config = json.dumps({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": self.diff_ids}}).encode()
        self.id = sha(self.config)
        blobs = Path(cmd.blob_dir(self.staging))
        blobs.mkdir(parents=True)
        self.files: list[ld.LoadFile] = []
        self.names: list[str] = []
        self.blobs: list[Blob] = []
        for d, raw in zip(self.diff_ids, self.layers):
            blob = gzip.compress(raw, mtime=0)
            path = cmd.blob_path(self.staging, sha(blob), "gzip")
            Path(path).write_bytes(blob)
            self.files.append(ld.LoadFile(d, path, len(raw)))
            self.names.append(Path(path).name)
            self.blobs.append(Blob(d, "gzip", 6, Path(path), sha(blob), len(blob), len(raw)))
        self.info = ImageInfo("t:v", self.id, tuple(self.diff_ids), 0, "linux", "amd64", ())

    def head_path(self) -> str:
        return cmd.load_head_path(self.staging, self.id)


