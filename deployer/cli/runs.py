"""`deploy runs` commands (wiring only)."""
from __future__ import annotations
