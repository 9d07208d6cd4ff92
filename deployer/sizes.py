"""Byte counts for people: the one formatter every table, progress line and message uses (pure)."""
from __future__ import annotations

_SI = ("B", "KB", "MB", "GB", "TB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: float, *, binary: bool = False) -> str:
    """'2.0 KB' (powers of 1000); with binary, '2.0 KiB' (powers of 1024, as df and free show disks)."""
    units, step = (_BINARY, 1024) if binary else (_SI, 1000)
    for unit in units[:-1]:
        if abs(n) < step:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= step
    return f"{n:.1f} {units[-1]}"
