"""The Merkle Tree Hash of RFC 9162 (Certificate Transparency 2.0), section 2.1.1.

A checkpoint signs the root of the tree over every audit record up to a sequence number, so an auditor
holding only the public key can check that an exported log is the one that was signed. The hashing is
the standard one, not a variant: leaves are SHA-256(0x00 || leaf), interior nodes SHA-256(0x01 || left
|| right), split at the largest power of two smaller than the size. tests/audit/test_merkle.py checks it
against the published Certificate Transparency vectors, which another implementation can use too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly smaller than size (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def root_of_hashes(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaves given as their leaf hashes (recursion depth is log2 of the size)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root_of_hashes(leaves[:k]), root_of_hashes(leaves[k:]))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 for the raw leaves D."""
    return root_of_hashes([leaf_hash(leaf) for leaf in leaves])


# A frontier: the roots of the perfect subtrees that the leaves so far decompose into, left to right, as
# (height, hash) with heights strictly decreasing (one per 1-bit of the size). Appending a leaf merges
# equal heights, so it costs O(log n) amortised O(1); the MTH of all the leaves folds the frontier from
# the right: the largest power of two below the size is exactly the first subtree (RFC 9162, 2.1.1).
Frontier = list[tuple[int, bytes]]


def push(frontier: Frontier, leaf: bytes) -> Frontier:
    """The frontier after one more leaf (given as its leaf hash)."""
    grown = [*frontier, (0, leaf)]
    while len(grown) > 1 and grown[-1][0] == grown[-2][0]:
        (height, left), (_, right) = grown[-2], grown[-1]
        grown[-2:] = [(height + 1, node_hash(left, right))]
    return grown


def root_of_frontier(frontier: Frontier) -> bytes:
    """MTH of the leaves the frontier was pushed: the same as `root_of_hashes` over them."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1][1]
    for _, subtree in reversed(frontier[:-1]):
        root = node_hash(subtree, root)
    return root
