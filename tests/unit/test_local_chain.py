from __future__ import annotations

import hashlib

from deployer.chain import chain_ids

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def test_empty() -> None:
    assert chain_ids([]) == ()


def test_first_chain_is_the_first_diff_id() -> None:
    assert chain_ids([A]) == (A,)


def test_chain_is_sha256_of_parent_space_diff() -> None:
    ab = "sha256:" + hashlib.sha256(f"{A} {B}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {C}".encode()).hexdigest()
    assert chain_ids([A, B, C]) == (A, ab, abc)


def test_known_vector() -> None:
    # Computed once with `printf '%s %s' A B | sha256sum`: guards the exact byte format.
    assert chain_ids([A, B])[1] == "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c"


def test_order_matters() -> None:
    assert chain_ids([A, B])[1] != chain_ids([B, A])[1]
