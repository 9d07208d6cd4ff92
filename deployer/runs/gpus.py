"""`--gpus` values, parsed exactly as `docker run --gpus` parses them (docker/cli opts/gpus.go).

The value is one CSV record (Go encoding/csv rules): `all`, `2`, `count=2`, `device=1`,
`"device=0,2"` (quoted, so the comma stays inside the field), `device=GPU-uuid`,
`"capabilities=compute,utility"`, `driver=nvidia`, `options=...`. We keep docker's result
(a DeviceRequest) so preflight can check it against the host's GPUs, and pass the user's
text to `docker run --gpus` unchanged so the daemon sees the very same request.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from deployer.errors import SpecError

_QUOTE_HINT = "a value holding commas must be quoted, e.g. --gpus '\"device=0,2\"'"


@dataclass(frozen=True)
class GpuRequest:
    """docker's container.DeviceRequest for a --gpus value (count -1 means all)."""

    text: str
    driver: str = ""
    count: int = 0
    device_ids: tuple[str, ...] | None = None
    capabilities: tuple[tuple[str, ...], ...] = (("gpu",),)
    options: tuple[tuple[str, str], ...] = ()

    @property
    def all(self) -> bool:
        return self.device_ids is None and self.count < 0

    def describe(self) -> str:
        """Short canonical form for labels and tables: all, count=2, device=1,3."""
        if self.device_ids is not None:
            return "device=" + ",".join(self.device_ids)
        return "all" if self.count < 0 else f"count={self.count}"

    def visible_devices(self, host_gpu_count: int | None = None) -> tuple[str, ...]:
        """What NVIDIA_VISIBLE_DEVICES lists, as the daemon computes it (daemon/nvidia_linux.go)."""
        if self.device_ids is not None:
            return self.device_ids
        if self.count > 0:
            return tuple(str(i) for i in range(self.count))
        if self.count < 0:
            if host_gpu_count is None:
                return ("all",)
            return tuple(str(i) for i in range(host_gpu_count))
        return ()


def read_csv_record(text: str) -> list[str]:
    """The first record of text, with Go encoding/csv's default rules (strict quotes)."""
    if not text:
        raise ValueError("EOF")
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            i += 1
            buf = []
            while True:
                j = text.find('"', i)
                if j < 0:
                    raise ValueError(f'extraneous or missing " in quoted-field (column {n})')
                buf.append(text[i:j])
                i = j + 1
                if text.startswith('"', i):  # "" is an escaped quote
                    buf.append('"')
                    i += 1
                    continue
                break
            fields.append("".join(buf))
            if i >= n or text.startswith(("\n", "\r\n"), i):
                return fields
            if text[i] != ",":
                raise ValueError(f'extraneous or missing " in quoted-field (column {i + 1})')
            i += 1
            continue
        j = i
        while j < n and text[j] not in ",\n":
            j += 1
        field = text[i:j].removesuffix("\r")
        if '"' in field:
            raise ValueError(f'bare " in non-quoted-field (column {i + field.index(chr(34)) + 1})')
        fields.append(field)
        if j >= n or text[j] == "\n":
            return fields
        i = j + 1


def _parse_count(value: str) -> int:
    if value == "all":
        return -1
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise SpecError(f'--gpus: invalid count ({value}): value must be either "all" or an integer',
                        hint=_QUOTE_HINT if value.isalpha() else None)
    return int(value)


def parse_gpus(value: str) -> GpuRequest:
    """Parse a --gpus value the way docker does; SpecError (exit 2) for what docker would refuse.

    Beyond the CLI's own checks we also refuse what the daemon refuses at start
    ("cannot set both Count and DeviceIDs"), e.g. the unquoted `device=0,2`.
    """
    text = value
    try:
        fields = read_csv_record(value)
    except ValueError as exc:
        raise SpecError(f"--gpus {value!r}: {exc}", hint=_QUOTE_HINT) from exc
    seen: set[str] = set()
    driver, count = "", 0
    device_ids: tuple[str, ...] | None = None
    caps: tuple[tuple[str, ...], ...] | None = None
    options: tuple[tuple[str, str], ...] = ()
    for field in fields:
        key, sep, val = field.partition("=")
        if key in seen:
            raise SpecError(f"--gpus {value!r}: gpu request key '{key}' can be specified only once",
                            hint=_QUOTE_HINT if key == "count" else None)
        seen.add(key)
        if not sep:
            seen.add("count")
            count = _parse_count(key)
            continue
        if key == "driver":
            driver = val
        elif key == "count":
            count = _parse_count(val)
        elif key == "device":
            device_ids = tuple(val.split(","))
        elif key == "capabilities":
            caps = ((*val.split(","), "gpu"),)
        elif key == "options":
            try:
                opt_fields = read_csv_record(val)
            except ValueError as exc:
                raise SpecError(f"--gpus {value!r}: failed to read gpu options: {exc}") from exc
            opts: dict[str, str] = {}
            for item in opt_fields:
                k, _, v = item.partition("=")
                opts[k] = v
            options = tuple(opts.items())
        else:
            raise SpecError(f"--gpus {value!r}: unexpected key '{key}' in '{field}'",
                            hint="keys are count, device, capabilities, driver, options")
    if "count" not in seen and device_ids is None:
        count = 1
    req = GpuRequest(text, driver, count, device_ids, caps or (("gpu",),), options)
    if req.device_ids is not None and req.count != 0:
        raise SpecError(
            f"--gpus {value!r}: docker reads this as device={req.device_ids[0]} plus a count, "
            "and the daemon refuses both (cannot set both Count and DeviceIDs on device request)",
            hint=_QUOTE_HINT,
        )
    if req.device_ids is not None and any(not d.strip() for d in req.device_ids):
        raise SpecError(f"--gpus {value!r}: empty device id", hint=_QUOTE_HINT)
    return req


def check_against(req: GpuRequest, gpus: Sequence[object]) -> str | None:
    """Why req cannot be met by a host with these GPUs (objects with .index/.uuid), or None."""
    n = len(gpus)
    if req.count < 0 and n == 0:
        return "--gpus all, but nvidia-smi lists no GPUs on this host"
    if req.count > n:
        return f"--gpus asks for {req.count} GPU(s) but this host has {n}"
    if req.device_ids is None:
        return None
    uuids = {str(getattr(g, "uuid", "")) for g in gpus}
    bad = []
    for dev in req.device_ids:
        if dev.isdigit():
            if int(dev) >= n:
                bad.append(dev)
        elif dev.startswith("GPU-") and dev not in uuids:
            bad.append(dev)
        # MIG ids (MIG-..., 0:1) are not listed by the basic query; the runtime checks them.
    if bad:
        have = ", ".join(f"{getattr(g, 'index', i)}" for i, g in enumerate(gpus)) or "none"
        return f"--gpus device {', '.join(bad)} not on this host (GPUs: {have})"
    return None
