"""Connection values (`ansible_host`, `ansible_port`, `ansible_user`, key file) as Ansible uses them.

Ansible templates these with the host's vars when it connects, so `ansible_port: "{{ ssh_port }}"`
is the host's `ssh_port`. Rendering is lazy (a var used by the template may itself be a template),
sandboxed, and strict (an undefined var is an error); `!unsafe` text is used as written. Errors
name the host and the var; they arise only when the value is asked for (check, ship, run).
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from deployer.errors import InventoryError
from deployer.inventory.values import Encrypted, Unsafe

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

_MAX_DEPTH = 50

# Each setting and the vars that give it, first found wins (ansible_ssh_* are the older spellings).
SOURCES = {
    "address": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "key_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "timeout": ("ansible_ssh_timeout",),  # seconds to wait for the connection (Ansible's ssh `timeout`)
}


@functools.lru_cache(maxsize=1)
def _env() -> SandboxedEnvironment:
    # Loaded only when a value is a template: listing hosts must stay light (test_cli_startup).
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


class TemplateFailure(Exception):
    """A value could not be rendered; the message says why."""


def is_template(value: Any) -> bool:
    return isinstance(value, str) and not isinstance(value, Unsafe) and any(m in value for m in ("{{", "{%", "{#"))


class _LazyVars(Mapping[str, Any]):
    """The host's vars for a template: each value rendered when a template first uses it."""

    def __init__(self, vars: Mapping[str, Any], magic: Mapping[str, Any]) -> None:
        self._vars, self._magic = vars, magic
        self._done: dict[str, Any] = {}
        self._busy: list[str] = []

    def __getitem__(self, key: str) -> Any:
        if key in self._magic:
            return self._magic[key]
        if key in self._done:
            return self._done[key]
        value = self._vars[key]
        if key in self._busy:
            chain = " -> ".join([*self._busy[self._busy.index(key):], key])
            raise TemplateFailure(f"variables refer to each other in a loop: {chain}")
        self._busy.append(key)
        try:
            self._done[key] = self.render(value)
        finally:
            self._busy.pop()
        return self._done[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._magic
        yield from (k for k in self._vars if k not in self._magic)

    def __len__(self) -> int:
        return len(set(self._vars) | set(self._magic))

    def __contains__(self, key: object) -> bool:
        return key in self._magic or key in self._vars

    def render(self, value: Any) -> Any:
        if isinstance(value, Encrypted):
            raise TemplateFailure("the value is vault-encrypted (!vault); deployer reads no vault password")
        if isinstance(value, dict):
            return {k: self.render(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v) for v in value]
        if not is_template(value):
            return str(value) if isinstance(value, Unsafe) else value
        if len(self._busy) > _MAX_DEPTH:
            raise TemplateFailure(f"templates nest more than {_MAX_DEPTH} deep")
        import jinja2

        env = _env()
        try:
            template = env.from_string(value)
            context = template.new_context(cast("dict[str, Any]", self), shared=True)
            return env.concat(template.root_render_func(context))  # type: ignore[attr-defined]
        except TemplateFailure:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateFailure(f"cannot render {value!r}: {exc.message or exc}") from exc
        except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError) as exc:
            raise TemplateFailure(f"cannot render {value!r}: {exc}") from exc


def raw(vars: Mapping[str, Any], setting: str) -> tuple[str | None, Any]:
    """(var name, value as written) of a connection setting, or (None, None) when no var sets it."""
    for key in SOURCES[setting]:
        value = vars.get(key)
        if value or value == 0:
            return key, value
    return None, None


def _magic(name: str, groups: tuple[str, ...]) -> dict[str, Any]:
    return {"inventory_hostname": name, "inventory_hostname_short": name.split(".")[0], "group_names": list(groups)}


def rendered(name: str, vars: Mapping[str, Any], groups: tuple[str, ...], keys: tuple[str, ...]) -> dict[str, Any]:
    """`vars` with `keys` templated (when set); InventoryError naming the host and var if one fails."""
    out = dict(vars)
    lazy = _LazyVars(vars, _magic(name, groups))
    for key in keys:
        if is_template(vars.get(key)):
            try:
                out[key] = lazy.render(vars[key])
            except TemplateFailure as exc:
                raise InventoryError(f"host {name}: {key}: {exc}") from None
    return out


def value(name: str, vars: Mapping[str, Any], groups: tuple[str, ...], setting: str) -> Any:
    """The host's connection setting, templated as Ansible does; None when unset; InventoryError if it fails."""
    key, written = raw(vars, setting)
    if key is None:
        return None
    try:
        result = _LazyVars(vars, _magic(name, groups)).render(written)
    except TemplateFailure as exc:
        raise InventoryError(f"host {name}: {key}: {exc}",
                             hint="define the variables it uses for this host, or write the value itself") from None
    if setting == "port":
        return _port(name, key, written, result)
    if setting == "timeout":
        return _seconds(name, key, written, result)
    text = str(result)
    if setting == "address" and (not text.strip() or any(c.isspace() for c in text.strip())):
        raise InventoryError(f"host {name}: {key} {written!r} gives {text!r}, which is not a host name or address")
    return text.strip() if setting == "address" else text


def _shown(written: Any, rendered: Any) -> str:
    """A value as the inventory wrote it, and what its template gave if that differs."""
    return repr(written) if written == rendered else f"{written!r} (rendered: {rendered!r})"


def _seconds(name: str, key: str, written: Any, rendered: Any) -> float:
    shown = _shown(written, rendered)
    try:
        seconds = float(str(rendered).strip()) if not isinstance(rendered, bool) else 0.0
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise InventoryError(f"host {name}: {key} {shown} is not a number of seconds above 0")
    return seconds


def _port(name: str, key: str, written: Any, rendered: Any) -> int:
    shown = _shown(written, rendered)
    try:
        port = int(str(rendered).strip()) if not isinstance(rendered, bool) else -1
    except ValueError:
        port = -1
    if port == -1:
        raise InventoryError(f"host {name}: {key} {shown} is not a number, so not a TCP port")
    if not 0 < port < 65536:
        raise InventoryError(f"host {name}: {key} {shown} is not a TCP port (1-65535)")
    return port
