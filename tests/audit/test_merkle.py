"""RFC 9162 Merkle Tree Hash and inclusion proofs against the Certificate Transparency reference vectors
(transparency-dev/merkle: testonly's leaves and the root of every size 0..8, and proof/verify_test.go's
inclusion proofs with the corruptions that must fail)."""

from __future__ import annotations

import pytest

from enclave.audit.merkle import (
    EMPTY_ROOT,
    NODE_HEIGHT,
    frontier_size,
    inclusion_proof,
    leaf_hash,
    made,
    merkle_root,
    node_hash,
    root_of_frontier,
    root_of_hashes,
    verify_inclusion,
)

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
        frontier, _ = made(frontier, leaf_hash(bytes.fromhex(leaf)))
    assert root_of_frontier(frontier).hex() == ROOTS[size]


def test_the_frontier_equals_the_recursive_root_at_every_size_and_stays_logarithmic():
    leaves = [leaf_hash(f"record-{i}".encode()) for i in range(1100)]
    frontier: list[tuple[int, bytes]] = []
    for size, leaf in enumerate(leaves, start=1):
        frontier, _ = made(frontier, leaf)
        assert root_of_frontier(frontier) == root_of_hashes(leaves[:size])
        assert [height for height, _ in frontier] == [h for h in range(size.bit_length()) if size >> h & 1][::-1]


# (leaf index, tree size, audit path): transparency-dev/merkle proof/verify_test.go `inclusionProofs` (whose leaf
# numbers are 1-based), over the LEAVES above
PROOFS = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _leaf(index: int) -> bytes:
    return leaf_hash(bytes.fromhex(LEAVES[index]))


def _corruptions(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes) -> dict[str, tuple]:
    """The reference's corrupted probes (verify_test.go `corruptInclusionProof`): each must fail."""
    probes = {
        "index - 1": (leaf, index - 1, size, proof, root), "index + 1": (leaf, index + 1, size, proof, root),
        "index ^ 2": (leaf, index ^ 2, size, proof, root), "size * 2": (leaf, index, size * 2, proof, root),
        "size / 2": (leaf, index, size // 2, proof, root), "wrong leaf": (b"WrongLeaf", index, size, proof, root),
        "empty root": (leaf, index, size, proof, EMPTY_ROOT), "random root": (leaf, index, size, proof, SOME_HASH),
        "trailing garbage": (leaf, index, size, [*proof, b""], root),
        "trailing root": (leaf, index, size, [*proof, root], root),
        "preceding garbage": (leaf, index, size, [b"", *proof], root),
        "preceding root": (leaf, index, size, [root, *proof], root),
    }
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes[f"proof[{i}] bit 3"] = (leaf, index, size, flipped, root)
    if proof:
        probes["removed component"] = (leaf, index, size, proof[:-1], root)
    if len(proof) > 1:
        probes["inserted component"] = (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root)
    return probes


@pytest.mark.parametrize(("index", "size", "path"), PROOFS)
def test_the_inclusion_proof_is_the_published_vector_and_only_it_verifies(index, size, path):
    leaves = [_leaf(i) for i in range(size)]
    root = bytes.fromhex(ROOTS[size])
    proof = inclusion_proof(index, size, _over(leaves))
    assert [p.hex() for p in proof] == path
    assert verify_inclusion(_leaf(index), index, size, proof, root)
    accepted = [name for name, probe in _corruptions(index, size, proof, root, _leaf(index)).items()
                if verify_inclusion(*probe)]
    assert accepted == []


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_an_index_outside_the_tree_never_verifies(index, size):
    for leaf, root in [(SOME_HASH, b""), (b"", EMPTY_ROOT), (SOME_HASH, EMPTY_ROOT)]:
        assert not verify_inclusion(leaf, index, size, [], root)


def test_a_one_leaf_tree_has_an_empty_path():
    leaf = leaf_hash(b"data")
    assert inclusion_proof(0, 1, _over([leaf])) == []
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(b"", 0, 1, [], leaf)


def test_every_leaf_of_every_size_proves_and_a_change_fails():
    for size in range(1, 70):
        leaves = [leaf_hash(f"record-{size}-{i}".encode()) for i in range(size)]
        root = root_of_hashes(leaves)
        for index in range(size):
            proof = inclusion_proof(index, size, _over(leaves))
            assert len(proof) <= size.bit_length()
            assert verify_inclusion(leaves[index], index, size, proof, root), (index, size)
            accepted = [name for name, probe in _corruptions(index, size, proof, root, leaves[index]).items()
                        if name not in ("index - 1", "index + 1", "index ^ 2") and verify_inclusion(*probe)]
            assert accepted == [], (index, size)
            others = [i for i in (index - 1, index + 1, index ^ 2) if 0 <= i < size and leaves[i] != leaves[index]]
            assert not any(verify_inclusion(leaves[index], i, size, proof, root) for i in others)


def _over(leaves: list[bytes]):
    """The leaf hashes of a range, from a list of them (no stored subtrees)."""
    return lambda start, end: leaves[start:end]


def test_a_proof_reads_only_the_tree_and_refuses_a_short_one():
    leaves = [leaf_hash(bytes([i])) for i in range(10)]
    assert inclusion_proof(3, 7, _over(leaves)) == inclusion_proof(3, 7, _over(leaves[:7]))
    with pytest.raises(ValueError, match="the tree has 6 leaves, not 7"):
        inclusion_proof(3, 7, _over(leaves[:6]))
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(7, 7, _over(leaves))


def test_the_subtrees_appends_keep_give_the_same_proofs_reading_few_leaves():
    """A proof from the complete subtrees kept as the leaves were appended (NODE_HEIGHT and up) is the
    proof from the leaves, and reads at most a few hundred leaves of a tree of thousands."""
    size = 5 * 2**NODE_HEIGHT + 77
    leaves = [leaf_hash(f"record-{i}".encode()) for i in range(size)]
    frontier: list[tuple[int, bytes]] = []
    kept: dict[tuple[int, int], bytes] = {}
    for leaf in leaves:
        frontier, nodes = made(frontier, leaf)
        kept.update({(height, position): root for height, position, root in nodes})
    assert root_of_frontier(frontier) == root_of_hashes(leaves)
    assert sorted(kept) == [(8, 0), (8, 1), (8, 2), (8, 3), (8, 4), (9, 0), (9, 1), (10, 0)]
    assert kept[(8, 3)] == root_of_hashes(leaves[3 * 256:4 * 256])
    read: list[int] = []

    def counted(start: int, end: int) -> list[bytes]:
        read.append(end - start)
        return leaves[start:end]

    for index in (0, 255, 256, 700, 1279, 1280, size - 1):
        read.clear()
        proof = inclusion_proof(index, size, counted, lambda height, position: kept.get((height, position)))
        assert proof == inclusion_proof(index, size, _over(leaves))
        assert verify_inclusion(leaves[index], index, size, proof, root_of_hashes(leaves))
        assert sum(read) <= 2 * 2**NODE_HEIGHT, (index, read)
    missing = inclusion_proof(700, size, _over(leaves), lambda height, position: None)  # none kept: from leaves
    assert missing == inclusion_proof(700, size, _over(leaves), lambda height, position: kept.get((height, position)))


def test_frontier_size_reads_the_decomposition_and_refuses_other_shapes():
    frontier: list[tuple[int, bytes]] = []
    for i in range(13):
        frontier, _ = made(frontier, leaf_hash(bytes([i])))
    assert frontier_size(frontier) == 13
    assert frontier_size([]) == 0
    assert frontier_size([(0, b"a"), (0, b"b")]) is None
    assert frontier_size([(0, b"a"), (2, b"b")]) is None
    assert frontier_size([(-1, b"a")]) is None
