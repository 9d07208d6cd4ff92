"""Defer a module's import until it is first used.

paramiko imports invoke (installed with fabric) at start-up, only to evaluate `Match exec` lines of
an ssh_config; that import costs every `deploy ship` a tenth of a second. Deferred, invoke loads
when such a line is evaluated, and never otherwise.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _Deferred(types.ModuleType):
    """Stands in for a module until an attribute is read: then the module is imported (replacing
    this stand-in in sys.modules) and every read is passed on to it. (importlib's LazyLoader does
    not fit: the import statement itself reads the module's __spec__, which loads it at once.)"""

    def __getattr__(self, attr: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_real"] = real
        return getattr(real, attr)


def defer(name: str) -> None:
    """Make `import NAME` give a stand-in that imports NAME on first use (a no-op when NAME is
    imported already or not installed)."""
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    sys.modules[name] = _Deferred(name)
