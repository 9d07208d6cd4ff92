"""CPU architectures as the kernel (`uname -m`), Docker (Architecture) and BuildKit (--platform) name them (pure)."""
from __future__ import annotations

# `uname -m` (and Docker's Architecture, which uses the GOARCH names) -> the OCI platform
PLATFORMS = {
    "x86_64": "linux/amd64", "amd64": "linux/amd64",
    "aarch64": "linux/arm64", "arm64": "linux/arm64", "armv8l": "linux/arm/v7",
    "armv7l": "linux/arm/v7", "armv6l": "linux/arm/v6", "arm": "linux/arm/v7",
    "ppc64le": "linux/ppc64le", "s390x": "linux/s390x", "riscv64": "linux/riscv64",
    "i386": "linux/386", "i686": "linux/386", "386": "linux/386", "loongarch64": "linux/loong64",
}


def platform_of(arch: str | None) -> str | None:
    """`linux/arm64` for `aarch64` (uname -m or Docker's Architecture); None when unknown."""
    return PLATFORMS.get((arch or "").strip().lower())


def goarch_of(arch: str | None) -> str | None:
    """The name image configs use (`arm64` for `aarch64`); None when unknown."""
    platform = platform_of(arch)
    return platform.split("/")[1] if platform else None
