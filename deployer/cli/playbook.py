"""`deploy playbook` commands (wiring only)."""
from __future__ import annotations
