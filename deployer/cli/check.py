"""`deploy check` commands (wiring only)."""
from __future__ import annotations
