"""The Merkle Tree Hash of RFC 9162 (Certificate Transparency 2.0), section 2.1.1.

A checkpoint signs the root of the tree over every audit record up to a sequence number, so an auditor
holding only the public key can check that an exported log is the one that was signed. The hashing is
the standard one, not a variant: leaves are SHA-256(0x00 || leaf), interior nodes SHA-256(0x01 || left
|| right), split at the largest power of two smaller than the size. tests/audit/test_merkle.py checks it
against the published Certificate Transparency vectors, which another implementation can use too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise

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


# The log keeps the root of every complete subtree of 2^NODE_HEIGHT leaves and more, as appends make them
# (`made`): a thousandth of the leaves' number, and with them a proof reads O(log n) stored nodes and at
# most a few hundred leaves, however long the log (`subtree_root`).
NODE_HEIGHT = 8


def made(frontier: Frontier, leaf: bytes) -> tuple[Frontier, list[tuple[int, int, bytes]]]:
    """The frontier after one more leaf, and (height, position, root) of each complete subtree of height
    NODE_HEIGHT or more that the leaf completed; the subtree at (h, i) holds leaves i * 2^h .. (i+1) * 2^h."""
    grown = [*frontier, (0, leaf)]
    size = sum(1 << height for height, _ in grown)
    nodes = []
    while len(grown) > 1 and grown[-1][0] == grown[-2][0]:
        (height, left), (_, right) = grown[-2], grown[-1]
        grown[-2:] = [(height + 1, node_hash(left, right))]
        if height + 1 >= NODE_HEIGHT:
            nodes.append((height + 1, (size >> (height + 1)) - 1, grown[-1][1]))
    return grown, nodes


def subtree_root(start: int, end: int, leaves: Callable[[int, int], Sequence[bytes]],
                 stored: Callable[[int, int], bytes | None]) -> bytes:
    """MTH(D[start:end]) for a range of RFC 9162's recursion (every complete subtree in it is aligned):
    a complete subtree of NODE_HEIGHT or more from `stored` (height, position) when it has it, else from
    its halves; a smaller one from `leaves(start, end)`, the leaf hashes of that range."""
    size = end - start
    if size & (size - 1) == 0:  # complete, so aligned
        height = size.bit_length() - 1
        if height >= NODE_HEIGHT and (found := stored(height, start >> height)) is not None:
            return found
        if height <= NODE_HEIGHT:
            hashes = leaves(start, end)
            if len(hashes) != size:
                raise ValueError(f"the tree has {start + len(hashes)} leaves, not {end}")
            return root_of_hashes(hashes)
    k = _split(size)
    return node_hash(subtree_root(start, start + k, leaves, stored), subtree_root(start + k, end, leaves, stored))


def grow(frontier: Frontier, leaf: bytes) -> None:
    """One more leaf, in place: a pass over millions of leaves (verify) copies no list per leaf."""
    frontier.append((0, leaf))
    while len(frontier) > 1 and frontier[-1][0] == frontier[-2][0]:
        (height, left), (_, right) = frontier[-2], frontier[-1]
        frontier[-2:] = [(height + 1, node_hash(left, right))]


def frontier_size(frontier: Frontier) -> int | None:
    """How many leaves a frontier stands for, or None if it is not one (heights not strictly decreasing)."""
    heights = [height for height, _ in frontier]
    if any(h < 0 for h in heights) or any(a <= b for a, b in pairwise(heights)):
        return None
    return sum(1 << h for h in heights)


def frontier_json(frontier: Frontier) -> list[list[object]]:
    """A frontier as JSON: `[[height, hex], ...]`, as an export's prefix line carries it."""
    return [[height, subtree.hex()] for height, subtree in frontier]


def frontier_of_json(entries: Iterable[Sequence[object]]) -> Frontier:
    return [(int(height), bytes.fromhex(str(subtree))) for height, subtree in entries]  # type: ignore[call-overload]


def root_of_frontier(frontier: Frontier) -> bytes:
    """MTH of the leaves the frontier was pushed: the same as `root_of_hashes` over them."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1][1]
    for _, subtree in reversed(frontier[:-1]):
        root = node_hash(subtree, root)
    return root


# Inclusion proofs (RFC 9162, 2.1.3). The audit path of leaf m in the tree of size n is the list of the roots
# of the subtrees beside the path from the leaf up to the root, bottom first: PATH(m, D[n]) = PATH(m, D[0:k])
# : MTH(D[k:n]) if m < k, else PATH(m - k, D[k:n]) : MTH(D[0:k]), with k the split of n.


def _sibling_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges [start, end) whose roots make up PATH(index, D[size]), bottom first."""
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return ranges[::-1]


def inclusion_proof(index: int, size: int, leaves: Callable[[int, int], Sequence[bytes]],
                    stored: Callable[[int, int], bytes | None] = lambda height, position: None) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 2.1.3.1: the roots of the sibling ranges (`subtree_root`), from the
    leaf hashes of a range (`leaves`) and the complete subtrees the log keeps (`stored`)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    return [subtree_root(start, end, leaves, stored) for start, end in _sibling_ranges(index, size)]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether `proof` is the audit path of leaf hash `leaf` at `index` in the tree of `size` leaves whose
    root is `root`: the verification algorithm of RFC 9162 2.1.3.2, step by step."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root
