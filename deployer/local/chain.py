"""Kept for old imports: chain_ids is pure and lives in deployer.chain (so commands/ needs no local/)."""
from __future__ import annotations

from deployer.chain import chain_ids

__all__ = ["chain_ids"]
