"""Pure builders of the synthetic ML-shaped image: a layer plan from a size, and its Dockerfiles.

The base mixes incompressible bytes (weights, .so blobs) with compressible ones (copies of a real
binary, Python-like source), like a CUDA + PyTorch image; v1 and v2 differ only in the code layer.
"""
from __future__ import annotations

from dataclasses import dataclass

BASE_IMAGE = "deployer-testbed/busybox:latest"
REPO = "deployer-bench/ml"
GENERATOR = "2"  # bump when the recipe changes, so a cached image from an old recipe is rebuilt
CHUNK = 64 * 1024 * 1024  # random files are written in pieces no larger than this


@dataclass(frozen=True)
class Part:
    """One kind of content inside a layer: 'random', 'binary' (busybox copies) or 'text'."""

    kind: str
    path: str
    size: int


@dataclass(frozen=True)
class Layer:
    name: str
    parts: tuple[Part, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)


def plan(size_bytes: int) -> tuple[Layer, ...]:
    """The layers of v1 for a total of about size_bytes: four base layers, deps, code."""
    s = max(size_bytes, 4 * 1024 * 1024)
    code = max(256 * 1024, s // 200)

    def pct(p: float) -> int:
        return int(s * p)

    return (
        Layer("cuda-libs", (Part("random", "/usr/local/cuda/lib64", pct(0.17)),
                            Part("binary", "/usr/local/cuda/bin", pct(0.17)))),
        Layer("python-stdlib", (Part("text", "/usr/lib/python3/stdlib", pct(0.13)),
                                Part("binary", "/usr/lib/python3/lib-dynload", pct(0.04)))),
        Layer("torch", (Part("random", "/usr/lib/python3/site-packages/torch/lib", pct(0.20)),
                        Part("text", "/usr/lib/python3/site-packages/torch", pct(0.06)))),
        Layer("model-assets", (Part("random", "/opt/models", pct(0.10)),)),
        Layer("deps", (Part("text", "/usr/lib/python3/site-packages/deps", pct(0.06)),
                       Part("random", "/usr/lib/python3/site-packages/deps/_native", pct(0.06)))),
        code_layer(code, "v1"),
    )


def code_layer(size: int, version: str) -> Layer:
    """The app's own code: mostly source text with a small data file; differs per version."""
    return Layer(f"code-{version}", (Part("text", "/app/src", size - size // 5),
                                     Part("random", "/app/assets", size // 5)))


def part_script(part: Part, seed: str) -> str:
    """A busybox sh snippet that writes part.size bytes of part.kind under part.path."""
    d, n = part.path, part.size
    if part.kind == "random":
        full, rest = divmod(n, CHUNK)
        loop = (f"i=0; while [ $i -lt {full} ]; do "
                f"head -c {CHUNK} /dev/urandom > {d}/blob$i.bin; i=$((i+1)); done")
        lines = [f"mkdir -p {d}", loop]
        if rest:
            lines.append(f"head -c {rest} /dev/urandom > {d}/blob_tail.bin")
        return " && ".join(lines)
    if part.kind == "binary":
        # Whole copies of a real binary, then a partial one to hit the size exactly.
        return (f"mkdir -p {d} && b=$(wc -c < /bin/busybox) && k=$(({n} / b)) && i=0 && "
                f"while [ $i -lt $k ]; do cp /bin/busybox {d}/lib$i.so; i=$((i+1)); done && "
                f"head -c $(({n} - k * b)) /bin/busybox > {d}/lib_tail.so")
    if part.kind == "text":
        return f"mkdir -p {d} && awk -v n={n} -v d={d} -v seed={seed} '{_AWK_TEXT}'"
    raise ValueError(f"unknown part kind {part.kind!r}")


# Python-looking modules of ~160 KB each; lines vary with the seed so that versions differ.
_AWK_TEXT = (
    'BEGIN { s = 0; i = 0; f = ""; '
    'while (s < n) { '
    'g = sprintf("%s/mod_%s_%d.py", d, seed, int(i / 2000)); '
    'if (g != f) { if (f != "") close(f); f = g } '
    'line = sprintf("def fn_%s_%d(x, y=%d):\\n    \\"\\"\\"Return item %d of the %s table.\\"\\"\\"\\n'
    '    return (x * %d + y) %% %d\\n\\n", seed, i, i % 97, i, seed, (i * 31) % 1009, i % 13 + 2); '
    'if (s + length(line) > n) line = substr(line, 1, n - s); '
    'printf "%s", line > f; s += length(line); i++ } }'
)


def layer_run(layer: Layer, seed: str) -> str:
    """One RUN instruction (= one image layer) that writes every part of the layer."""
    return "RUN " + " && ".join(part_script(p, seed) for p in layer.parts)


def base_dockerfile(layers: tuple[Layer, ...], size_bytes: int) -> str:
    """The shared base: every layer but the code layer."""
    lines = [f"FROM {BASE_IMAGE}",
             f'LABEL deployer.bench.generator="{GENERATOR}" deployer.bench.size="{size_bytes}"']
    lines += [layer_run(layer, layer.name) for layer in layers if not layer.name.startswith("code-")]
    return "\n".join(lines) + "\n"


def app_dockerfile(base_ref: str, code: Layer, version: str) -> str:
    """v1 or v2: the base plus one code layer."""
    return "\n".join([
        f"FROM {base_ref}",
        f"{layer_run(code, version)} && echo {version} > /app/VERSION",
        f'LABEL deployer.bench.version="{version}"',
        'CMD ["sh", "-c", "cat /app/VERSION"]',
    ]) + "\n"


def base_ref(size_bytes: int) -> str:
    return f"{REPO}:base-{size_bytes}-g{GENERATOR}"


def app_ref(size_bytes: int, version: str) -> str:
    return f"{REPO}:{version}-{size_bytes}-g{GENERATOR}"
