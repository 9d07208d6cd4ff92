"""`deploy bundle` commands (wiring only)."""
from __future__ import annotations
