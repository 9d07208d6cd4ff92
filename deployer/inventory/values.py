"""Inventory values: INI typing as Ansible's ini plugin does it, and the marked strings YAML tags make.

`n=5` is the int 5, `b=True` a bool, `l="[1, 2]"` a list, `t=true` the *string* "true"
(Python literals, not YAML ones); anything `ast.literal_eval` rejects stays a string.
`!unsafe` strings are never templated and `!vault` strings stay encrypted; `jsonable()` shows
both (and dates) the way `ansible-inventory --list` prints them.
"""
from __future__ import annotations

import ast
import datetime
import json
import warnings
from typing import Any


class Unsafe(str):
    """A string loaded under YAML's `!unsafe` tag: its text is used as is, never rendered as a template."""


class Encrypted(str):
    """A `!vault` value: the ciphertext, which deployer cannot decrypt (it reads no vault password)."""


def ini_value(text: str) -> Any:
    """Type one INI value: a Python literal when it is one, else the text itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value: Any = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = text
    return _coerce(value)


def _coerce(value: Any) -> Any:
    # Ansible turns tuples/sets into lists and the literal types it cannot store into text.
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_coerce(v) for v in value]
    if isinstance(value, dict):
        return {_coerce(k): _coerce(v) for k, v in value.items()}
    if value is Ellipsis:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        # ansible-core 2.19 does not trust a bytes literal as a template: it lists it as unsafe text.
        return Unsafe(value.decode("utf-8", errors="surrogateescape"))
    return value


def var_name(key: Any) -> str:
    """A variable name as ansible-inventory's JSON shows a non-string key (1 -> '1', None -> 'null')."""
    if isinstance(key, str):
        return str(key)
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    if isinstance(key, (datetime.date, datetime.time)):
        return key.isoformat()
    return str(key)


def jsonable(value: Any) -> Any:
    """`value` as `ansible-inventory --list` prints it: dates in ISO form, unsafe and vault strings tagged."""
    if isinstance(value, Unsafe):
        return {"__ansible_unsafe": str(value)}
    if isinstance(value, Encrypted):
        return {"__ansible_vault": str(value)}
    if isinstance(value, dict):
        return {var_name(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value
