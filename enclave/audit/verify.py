"""Offline verification of an exported audit log: nothing needed but the export and the public key.

Checks, in order, and names the first record or checkpoint that fails: sequence continuity (no gap,
no reordering), each record's hash, each record's link to the one before, each checkpoint's Ed25519
signature and key, each checkpoint's Merkle root over the records it covers, and that the last record
is covered by a signed checkpoint (otherwise a tail could be cut off or rewritten unnoticed).

A log cut back to an earlier checkpoint is a shorter signed log, which nothing in the export alone can
tell apart from the real one. A `trusted` checkpoint (one the auditor kept earlier, `enclave audit
checkpoint --out head.json`) closes that: the export must hold at least its `size` records, and the
RFC 9162 root over its first `size` leaves (the prefix's leaves included) must be the signed root. With
the full prefix at hand, recomputing that root is the consistency check; no proof is needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave.audit.merkle import leaf_hash, root_of_hashes
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
    state = _State()
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
        problem = _check_trusted(trusted, state.leaves, public)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError):
        problem = "the trusted checkpoint is malformed"
    if problem is not None:
        return Report(False, state.records, state.checkpoints, problem)
    return Report(True, state.records, state.checkpoints, trusted=int(trusted["checkpoint"]["size"]))  # type: ignore[index]


def _check_trusted(trusted: dict, leaves: list[bytes], public: Ed25519PublicKey) -> str | None:
    """Whether the log's first `size` leaves are the ones the trusted checkpoint signed."""
    body, signature = trusted["checkpoint"], str(trusted.get("signature", ""))
    size = body["size"]
    if body.get("key_id") != key_id(public):
        return "the trusted checkpoint is signed by another key"
    if not verify_signature(public, canonical(body), signature) or not isinstance(size, int):
        return "the trusted checkpoint has an invalid signature"
    if len(leaves) < size:
        return (f"the log is shorter than the trusted checkpoint: {len(leaves)} records, the checkpoint signed "
                f"{size} (truncated)")
    if root_of_hashes(leaves[:size]).hex() != body.get("root"):
        return f"records 1..{size} are not the ones the trusted checkpoint signed (rewritten)"
    return None


@dataclass
class _State:
    leaves: list[bytes] = field(default_factory=list)
    expected_seq: int = 1
    prev_hash: str = GENESIS
    records: int = 0
    checkpoints: int = 0
    covered: int = 0


def _check_entry(kind: str, entry: dict, number: int, state: _State, public: Ed25519PublicKey) -> str | None:
    """The problem with one entry, or None; malformed fields raise and are reported by the caller."""
    if kind == "prefix":
        if number != 1 or state.records:
            return "a prefix may only open an export"
        state.leaves = [bytes.fromhex(h) for h in entry["leaf_hashes"]]
        if len(state.leaves) != int(entry["size"]):
            return "prefix size does not match its leaf hashes"
        state.expected_seq, state.prev_hash = int(entry["size"]) + 1, str(entry["last_hash"])
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
        state.leaves.append(leaf_hash(canonical(record)))
        state.expected_seq, state.prev_hash = seq + 1, str(stated)
        state.records += 1
        return None
    if kind == "checkpoint":
        body, signature = entry["checkpoint"], str(entry.get("signature", ""))
        size = body.get("size")
        if body.get("key_id") != key_id(public):
            return f"checkpoint at {size} is signed by another key"
        if not verify_signature(public, canonical(body), signature):
            return f"checkpoint at {size} has an invalid signature"
        if not isinstance(size, int) or size != len(state.leaves):
            return f"checkpoint at {size} does not follow record {size}"
        if root_of_hashes(state.leaves).hex() != body.get("root"):
            return f"checkpoint at {size}: the records 1..{size} are not the ones that were signed"
        state.checkpoints += 1
        state.covered = size
        return None
    return f"unknown entry kind {kind!r}"
