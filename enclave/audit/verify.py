"""Offline verification of an exported audit log: nothing needed but the export and the public key.

Checks, in order, and names the first record or checkpoint that fails: sequence continuity (no gap,
no reordering), each record's hash, each record's link to the one before, each checkpoint's Ed25519
signature and key, each checkpoint's Merkle root over the records it covers, and that the last record
is covered by a signed checkpoint (otherwise a tail could be cut off or rewritten unnoticed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

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

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.records} records, {self.checkpoints} signed checkpoints verified"
        return f"FAILED at line {self.line}: {self.problem}"


def verify_lines(lines: Iterable[str], public: Ed25519PublicKey) -> Report:
    """Verify an export (JSONL lines, as `enclave audit export` writes them)."""
    leaves: list[bytes] = []
    expected_seq, prev_hash = 1, GENESIS
    records = checkpoints = covered = 0
    number = 0

    def failed(problem: str) -> Report:
        return Report(False, records, checkpoints, problem, number)

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            kind = entry["kind"]
        except (ValueError, KeyError, TypeError):
            return failed("not a log entry (malformed JSON)")
        if kind == "prefix":
            if number != 1 or records:
                return failed("a prefix may only open an export")
            leaves = [bytes.fromhex(h) for h in entry["leaf_hashes"]]
            expected_seq, prev_hash = entry["size"] + 1, entry["last_hash"]
            if len(leaves) != entry["size"]:
                return failed("prefix size does not match its leaf hashes")
        elif kind == "event":
            record, stated = entry.get("record"), entry.get("hash")
            if not isinstance(record, dict):
                return failed("an event without a record")
            seq = record.get("seq")
            if seq != expected_seq:
                return failed(f"record {seq} found where record {expected_seq} belongs "
                              "(a record is missing, duplicated or out of order)")
            if record_hash(record) != stated:
                return failed(f"record {seq} does not match its hash (edited)")
            if record.get("prev_hash") != prev_hash:
                return failed(f"record {seq} does not link to record {seq - 1} (chain broken)")
            leaves.append(leaf_hash(canonical(record)))
            expected_seq, prev_hash = seq + 1, stated
            records += 1
        elif kind == "checkpoint":
            body, signature = entry.get("checkpoint") or {}, entry.get("signature", "")
            size = body.get("size")
            if body.get("key_id") != key_id(public):
                return failed(f"checkpoint at {size} is signed by another key")
            if not verify_signature(public, canonical(body), signature):
                return failed(f"checkpoint at {size} has an invalid signature")
            if not isinstance(size, int) or size != len(leaves):
                return failed(f"checkpoint at {size} does not follow record {size}")
            if root_of_hashes(leaves).hex() != body.get("root"):
                return failed(f"checkpoint at {size}: the records 1..{size} are not the ones that were signed")
            checkpoints += 1
            covered = size
        else:
            return failed(f"unknown entry kind {kind!r}")
    if records == 0:
        return failed("no records")
    if covered != expected_seq - 1:
        return failed(f"records {covered + 1}..{expected_seq - 1} are not covered by a signed checkpoint")
    return Report(True, records, checkpoints)
