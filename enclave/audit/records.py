"""Audit records: canonical JSON, hash-chained, one per event. The format is documented in audit/README.md.

A record is a JSON object with `seq` (1, 2, 3, ... with no gaps), `time` (UTC, ISO 8601), `actor`,
`event` (one of EVENT_TYPES), `decision`, `reasons` and event-specific fields, plus `prev_hash`, the
hash of the record before it (64 zeros for the first). Its own hash is SHA-256 of its canonical JSON
(keys sorted, no spaces, UTF-8), so editing any field, removing a record or swapping two breaks the
chain at that record. Records never hold a true (un-noised) value or a row of data.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

GENESIS = "0" * 64

# event -> what it records; README.md and audit/README.md document each (a test checks it).
EVENT_TYPES: dict[str, str] = {
    "grant.created": "A steward granted a researcher a dataset: purpose, dates, ε and δ caps, ad-hoc or not.",
    "grant.revoked": "A steward revoked a grant, with the reason; it takes effect at the next query.",
    "template.proposed": "A query template was proposed (SQL, parameters, per-run ε, run limit).",
    "template.approved": "A reviewer approved a template (it runs once enough reviewers have), with a reason.",
    "template.rejected": "A reviewer rejected a template, with a reason.",
    "template.revoked": "A reviewer revoked an approved template, with a reason; it no longer runs.",
    "template.run": "A researcher ran an approved template with parameters; the query's own events follow.",
    "principal.roles": "A principal was created or given roles (researcher, reviewer, steward, auditor).",
    "key.issued": "An API key was issued to a principal (its id only; the secret is never recorded).",
    "key.revoked": "An API key was revoked.",
    "data.delivered": "A contributor's delivery was validated, loaded and linked: per file its kind, SHA-256 and "
    "row count (never its contents), the linkage counts and the data version it made.",
    "data.refused": "A delivery was refused: its problems (code, file, row, column; no values). Nothing was loaded.",
    "data.linked": "Rosters were linked again at a threshold the steward set; a new data version.",
    "data.rekeyed": "The person key was rotated (its fingerprint only): every person key changed; a new data version.",
    "data.version": "A data version became current: why, the analysis build and its row counts per table.",
    "consent.given": "Consent was recorded for a person and purpose (a keyed pseudonym, never a local ID), with "
    "its given and expiry dates; a new data version.",
    "consent.imported": "A batch of consent statements was imported from a contributor: how many, how many "
    "revocations, and a SHA-256 of them all; a new data version.",
    "consent.revoked": "Consent was revoked for a person and purpose; it takes effect at the next query; a new "
    "data version.",
    "query.refused": "A query was refused before anything ran (check, plan or budget), with its reasons.",
    "query.charged": "A query's privacy cost was reserved; written before the query executes.",
    "query.failed": "A charged query failed during execution or protection; its charge stays spent.",
    "query.released": "A protected result was released: its cells, suppressed cells and payload hash.",
    "query.replayed": "An identical request got the already released answer again; nothing was spent.",
    "query.queued": "An asynchronous query was checked, planned, admitted and queued; nothing is charged yet.",
    "query.retried": "An asynchronous query was started again after its worker stopped; it re-uses its charge.",
    "query.cancelled": "A researcher cancelled an asynchronous query; spent only if it was charged already.",
    "query.abandoned": "An asynchronous query was given up after its workers stopped too often; nothing was "
    "released, a recorded charge stays spent.",
}


def canonical(record: dict[str, object]) -> bytes:
    """The bytes that are hashed and signed: sorted keys, compact separators, UTF-8, no NaN."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def record_hash(record: dict[str, object]) -> str:
    """SHA-256 of a record's canonical JSON (the record holds its predecessor's hash, not its own)."""
    return hashlib.sha256(canonical(record)).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
