"""RFC 9162 Merkle Tree Hash against the Certificate Transparency reference vectors
(transparency-dev/merkle testonly constants: the leaves and the root of every size 0..8)."""

from __future__ import annotations

import pytest

from enclave.audit.merkle import leaf_hash, merkle_root, node_hash, push, root_of_frontier, root_of_hashes

LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("size", range(9))
def test_root_matches_the_published_vector(size):
    assert merkle_root([bytes.fromhex(h) for h in LEAVES[:size]]).hex() == ROOTS[size]


def test_any_change_of_a_leaf_or_the_order_changes_the_root():
    leaves = [f"record-{i}".encode() for i in range(37)]
    root = merkle_root(leaves)
    for i in range(len(leaves)):
        changed = list(leaves)
        changed[i] = b"tampered"
        assert merkle_root(changed) != root
    swapped = [leaves[1], leaves[0], *leaves[2:]]
    assert merkle_root(swapped) != root
    assert merkle_root(leaves[:-1]) != root


def test_leaf_and_node_hashes_are_domain_separated():
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) != leaf_hash(a + b)


@pytest.mark.parametrize("size", range(9))
def test_the_frontier_gives_the_published_root(size):
    frontier: list[tuple[int, bytes]] = []
    for leaf in LEAVES[:size]:
        frontier = push(frontier, leaf_hash(bytes.fromhex(leaf)))
    assert root_of_frontier(frontier).hex() == ROOTS[size]


def test_the_frontier_equals_the_recursive_root_at_every_size_and_stays_logarithmic():
    leaves = [leaf_hash(f"record-{i}".encode()) for i in range(1100)]
    frontier: list[tuple[int, bytes]] = []
    for size, leaf in enumerate(leaves, start=1):
        frontier = push(frontier, leaf)
        assert root_of_frontier(frontier) == root_of_hashes(leaves[:size])
        assert [height for height, _ in frontier] == [h for h in range(size.bit_length()) if size >> h & 1][::-1]
