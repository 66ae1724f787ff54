"""Offline verification of an exported audit log: nothing needed but the export and the public key.

Checks, in order, and names the first record or checkpoint that fails: sequence continuity (no gap,
no reordering), each record's hash, each record's link to the one before, each checkpoint's Ed25519
signature and key, each checkpoint's Merkle root over the records it covers, and that the last record
is covered by a signed checkpoint (otherwise a tail could be cut off or rewritten unnoticed).

A log cut back to an earlier checkpoint is a shorter signed log, which nothing in the export alone can
tell apart from the real one. A `trusted` checkpoint (one the auditor kept earlier, `enclave audit
checkpoint --out head.json`) closes that: the export must hold at least its `size` records, and the
RFC 9162 root over its first `size` leaves (the prefix's included) must be the signed root. The stream
is verified in one pass holding O(log n): a Merkle frontier of the leaves so far (a range export's prefix
line gives the frontier of the records before it), from which each checkpoint's root, and the trusted
one's when the stream passes its size, is folded; no list of leaves is kept. So a trusted checkpoint
must lie at or after a range's prefix.

An inclusion proof (`enclave audit prove`) is checked by `verify_proof`: one record, its RFC 9162 audit
path and the signed checkpoint the path leads to, with the same checks of the checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave.audit.merkle import (
    Frontier,
    frontier_of_json,
    frontier_size,
    grow,
    leaf_hash,
    root_of_frontier,
    verify_inclusion,
)
from enclave.audit.records import GENESIS, canonical, record_hash
from enclave.audit.signing import key_id, verify_signature


@dataclass(frozen=True)
class Report:
    ok: bool
    records: int
    checkpoints: int
    problem: str | None = None
    line: int | None = None
    trusted: int | None = None

    def summary(self) -> str:
        if self.ok:
            consistent = f"; consistent with the trusted checkpoint at {self.trusted}" if self.trusted else ""
            return f"ok: {self.records} records, {self.checkpoints} signed checkpoints verified{consistent}"
        if self.line is None:
            return f"FAILED: {self.problem}"
        return f"FAILED at line {self.line}: {self.problem}"


def verify_lines(lines: Iterable[str], public: Ed25519PublicKey, trusted: object = None) -> Report:
    """Verify an export (JSONL lines, as `enclave audit export` writes them), and that it extends the
    `trusted` signed checkpoint (as `enclave audit checkpoint` writes it) when one is given."""
    state = _State(trusted_size=_size_of(trusted))
    number = 0

    def failed(problem: str) -> Report:
        return Report(False, state.records, state.checkpoints, problem, number)

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            kind = entry["kind"]
        except (ValueError, KeyError, TypeError):
            return failed("not a log entry (malformed JSON)")
        try:
            problem = _check_entry(kind, entry, number, state, public)
        except (KeyError, TypeError, ValueError, AttributeError):
            problem = f"a malformed {kind!r} entry"
        if problem is not None:
            return failed(problem)
    if state.records == 0:
        return failed("no records")
    if state.covered != state.expected_seq - 1:
        return failed(f"records {state.covered + 1}..{state.expected_seq - 1} are not covered by a signed checkpoint")
    if trusted is None:
        return Report(True, state.records, state.checkpoints)
    try:
        problem = _check_trusted(trusted, state, public)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError):
        problem = "the trusted checkpoint is malformed"
    if problem is not None:
        return Report(False, state.records, state.checkpoints, problem)
    return Report(True, state.records, state.checkpoints, trusted=int(trusted["checkpoint"]["size"]))  # type: ignore[index]


def signature_problem(signed: dict[str, Any], public: Ed25519PublicKey, name: str) -> str | None:
    """Why `signed` (`{"checkpoint": body, "signature": hex}`) is not a checkpoint signed by `public`, or None."""
    body, signature = signed["checkpoint"], str(signed.get("signature", ""))
    if body.get("key_id") != key_id(public):
        return f"{name} is signed by another key"
    if not verify_signature(public, canonical(body), signature):
        return f"{name} has an invalid signature"
    return None


def _size_of(trusted: object) -> int | None:
    """The trusted checkpoint's size, to catch its root as the stream passes it (None: malformed, reported
    after the stream as before)."""
    try:
        size = trusted["checkpoint"]["size"]  # type: ignore[index]
    except (KeyError, TypeError, IndexError):
        return None
    return size if isinstance(size, int) else None


def _check_trusted(trusted: dict, state: _State, public: Ed25519PublicKey) -> str | None:
    """Whether the log's first `size` leaves are the ones the trusted checkpoint signed."""
    body, size = trusted["checkpoint"], trusted["checkpoint"]["size"]
    problem = signature_problem(trusted, public, "the trusted checkpoint")
    if problem is not None or not isinstance(size, int):
        return problem or "the trusted checkpoint has an invalid signature"
    if state.size < size:
        return (f"the log is shorter than the trusted checkpoint: {state.size} records, the checkpoint signed "
                f"{size} (truncated)")
    if size < state.prefix:
        return (f"the trusted checkpoint at {size} lies inside the export's prefix (records 1..{state.prefix}): "
                f"check it against an export that starts at or before record {size + 1}")
    if state.trusted_root != body.get("root"):
        return f"records 1..{size} are not the ones the trusted checkpoint signed (rewritten)"
    return None


@dataclass
class _State:
    """What a pass over an export keeps: O(log n), whatever the log's size."""

    frontier: Frontier = field(default_factory=list)
    size: int = 0  # leaves in the frontier: the prefix's and the records'
    prefix: int = 0
    expected_seq: int = 1
    prev_hash: str = GENESIS
    records: int = 0
    checkpoints: int = 0
    covered: int = 0
    trusted_size: int | None = None
    trusted_root: str | None = None  # the root at trusted_size, once the stream has passed it

    def passed(self) -> None:
        """Note the root at the trusted checkpoint's size when the frontier reaches it."""
        if self.size == self.trusted_size:
            self.trusted_root = root_of_frontier(self.frontier).hex()


def _check_entry(kind: str, entry: dict, number: int, state: _State, public: Ed25519PublicKey) -> str | None:
    """The problem with one entry, or None; malformed fields raise and are reported by the caller."""
    if kind == "prefix":
        if number != 1 or state.records:
            return "a prefix may only open an export"
        state.frontier = frontier_of_json(entry["frontier"])
        size = int(entry["size"])
        if frontier_size(state.frontier) != size:
            return "prefix size does not match its frontier"
        state.size = state.prefix = size
        state.expected_seq, state.prev_hash = size + 1, str(entry["last_hash"])
        state.passed()
        return None
    if kind == "event":
        record, stated = entry.get("record"), entry.get("hash")
        if not isinstance(record, dict):
            return "an event without a record"
        seq = record.get("seq")
        if seq != state.expected_seq:
            return (f"record {seq} found where record {state.expected_seq} belongs "
                    "(a record is missing, duplicated or out of order)")
        if record_hash(record) != stated:
            return f"record {seq} does not match its hash (edited)"
        if record.get("prev_hash") != state.prev_hash:
            return f"record {seq} does not link to record {seq - 1} (chain broken)"
        grow(state.frontier, leaf_hash(canonical(record)))
        state.size += 1
        state.passed()
        state.expected_seq, state.prev_hash = seq + 1, str(stated)
        state.records += 1
        return None
    if kind == "checkpoint":
        body = entry["checkpoint"]
        size = body.get("size")
        problem = signature_problem(entry, public, f"checkpoint at {size}")
        if problem is not None:
            return problem
        if not isinstance(size, int) or size != state.size:
            return f"checkpoint at {size} does not follow record {size}"
        if root_of_frontier(state.frontier).hex() != body.get("root"):
            return f"checkpoint at {size}: the records 1..{size} are not the ones that were signed"
        state.checkpoints += 1
        state.covered = size
        return None
    return f"unknown entry kind {kind!r}"


@dataclass(frozen=True)
class ProofReport:
    ok: bool
    problem: str | None = None
    seq: int | None = None
    size: int | None = None

    def summary(self) -> str:
        if self.ok:
            return f"ok: record {self.seq} is in the log the checkpoint at {self.size} signed (an RFC 9162 audit path)"
        return f"FAILED: {self.problem}"


def verify_proof(proof: object, public: Ed25519PublicKey) -> ProofReport:
    """Verify an inclusion proof (as `enclave audit prove` and `GET /v1/audit/proof/{seq}` give it) offline:
    the record is canonical and hashes to its stated hash, its leaf hash and audit path lead to the signed
    root (RFC 9162 2.1.3.2), and the checkpoint is signed by `public`."""
    try:
        problem = _proof_problem(proof, public)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError):
        problem = "a malformed proof (not what `enclave audit prove` writes)"
    if problem is not None:
        return ProofReport(False, problem)
    return ProofReport(True, seq=proof["seq"], size=proof["tree_size"])  # type: ignore[index]


def _proof_problem(proof: dict[str, Any], public: Ed25519PublicKey) -> str | None:
    text, seq, index, size = proof["record"], proof["seq"], proof["leaf_index"], proof["tree_size"]
    signed = proof["checkpoint"]
    if not isinstance(text, str) or not all(isinstance(n, int) for n in (seq, index, size)):
        raise TypeError("a proof's record is text and its numbers are integers")
    record = json.loads(text)
    if not isinstance(record, dict) or canonical(record) != text.encode():
        return f"record {seq} is not in its canonical form (edited)"
    if record_hash(record) != proof["hash"]:
        return f"record {seq} does not match its hash (edited)"
    if record.get("seq") != seq or index != seq - 1:
        return f"record {record.get('seq')} is not leaf {index} of the proof for record {seq}"
    problem = signature_problem(signed, public, f"the checkpoint at {signed['checkpoint'].get('size')}")
    if problem is not None:
        return problem
    body = signed["checkpoint"]
    if body.get("size") != size:
        return f"the proof is for a tree of {size} records, the checkpoint signed {body.get('size')}"
    path = [bytes.fromhex(node) for node in proof["path"]]
    if not verify_inclusion(leaf_hash(text.encode()), index, size, path, bytes.fromhex(body["root"])):
        return (f"the audit path does not lead from record {seq} to the root the checkpoint at {size} signed "
                "(the record or the path was changed)")
    return None
