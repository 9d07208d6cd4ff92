"""OCI ChainIDs: the identity under which Docker's layer store keeps a stack of layers."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence


def chain_ids(diff_ids: Sequence[str]) -> tuple[str, ...]:
    """ChainID of every prefix: chain[0] = diff[0]; chain[i] = sha256(chain[i-1] + " " + diff[i])."""
    chains: list[str] = []
    for diff in diff_ids:
        if not chains:
            chains.append(diff)
        else:
            digest = hashlib.sha256(f"{chains[-1]} {diff}".encode()).hexdigest()
            chains.append(f"sha256:{digest}")
    return tuple(chains)
