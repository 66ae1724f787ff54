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
