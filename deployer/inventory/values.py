"""Typing of INI inventory values, the way Ansible's ini plugin types them.

`n=5` is the int 5, `b=True` a bool, `l="[1, 2]"` a list, `t=true` the *string* "true"
(Python literals, not YAML ones); anything `ast.literal_eval` rejects stays a string.
"""
from __future__ import annotations

import ast
import warnings
from typing import Any


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
        return value.decode("utf-8", errors="surrogateescape")
    return value
