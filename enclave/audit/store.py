"""The embedded audit store: an append-only, hash-chained log in SQLite, with the state it governs.

One SQLite database holds the log (events), its signed checkpoints, and the privacy state that the log
is the system of record for: grants, budget charges, released answers, data versions and consents, and
the asynchronous queries' jobs (enclave.jobs).
Keeping them together makes
write-ahead exact: a charge and the record of it commit in one transaction, before the query executes,
or neither does. Each transaction opens its own connection with `BEGIN IMMEDIATE` (one writer at a
time, across threads and processes), WAL journaling and `synchronous=FULL` (committed means on disk).

Triggers refuse UPDATE and DELETE on events; someone editing the file directly is caught by `verify`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from enclave.audit.merkle import leaf_hash, root_of_hashes
from enclave.audit.records import GENESIS, canonical, now, record_hash
from enclave.audit.signing import Signer, key_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, record TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    researcher TEXT NOT NULL, dataset TEXT NOT NULL, epsilon_cap INTEGER NOT NULL, delta_cap INTEGER NOT NULL,
    purpose TEXT NOT NULL DEFAULT '', starts TEXT NOT NULL DEFAULT '', expires TEXT NOT NULL DEFAULT '',
    adhoc INTEGER NOT NULL DEFAULT 1, revoked INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL, PRIMARY KEY (researcher, dataset));
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY, body TEXT NOT NULL, proposer TEXT NOT NULL, status TEXT NOT NULL,
    approvals TEXT NOT NULL DEFAULT '[]', seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS template_runs (
    template_id INTEGER NOT NULL, researcher TEXT NOT NULL, query_id TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS principals (name TEXT PRIMARY KEY, roles TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, principal TEXT NOT NULL, digest TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS charges (
    query_id TEXT PRIMARY KEY, researcher TEXT NOT NULL, dataset TEXT NOT NULL,
    epsilon INTEGER NOT NULL, delta INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS data_versions (
    dataset TEXT NOT NULL, version INTEGER NOT NULL, build TEXT NOT NULL, database TEXT NOT NULL,
    reason TEXT NOT NULL, consent_seq INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (dataset, version));
CREATE TABLE IF NOT EXISTS consents (
    id INTEGER PRIMARY KEY, dataset TEXT NOT NULL, subject TEXT NOT NULL, purpose TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('give', 'revoke')), given TEXT, expires TEXT, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS consents_by_purpose ON consents (dataset, purpose, subject, id);
CREATE TRIGGER IF NOT EXISTS consents_append_only_update BEFORE UPDATE ON consents
    BEGIN SELECT RAISE(ABORT, 'the consent registry is append-only'); END;
CREATE TRIGGER IF NOT EXISTS consents_append_only_delete BEFORE DELETE ON consents
    BEGIN SELECT RAISE(ABORT, 'the consent registry is append-only'); END;
CREATE TRIGGER IF NOT EXISTS data_versions_append_only_update BEFORE UPDATE ON data_versions
    BEGIN SELECT RAISE(ABORT, 'data versions are append-only'); END;
CREATE TABLE IF NOT EXISTS releases (
    request_key TEXT PRIMARY KEY, query_id TEXT NOT NULL, researcher TEXT NOT NULL, status TEXT NOT NULL,
    payload TEXT, claimed_at REAL NOT NULL, seq INTEGER);
CREATE TABLE IF NOT EXISTS jobs (
    query_id TEXT PRIMARY KEY, researcher TEXT NOT NULL, dataset TEXT NOT NULL, sql TEXT NOT NULL,
    epsilon REAL, adhoc INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'executing', 'released', 'failed', 'cancelled')),
    request_key TEXT, charged INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    deadline_seconds REAL NOT NULL, answer_at REAL, error_code TEXT, error_message TEXT,
    submitted_at REAL NOT NULL, updated_at REAL NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
"""


class Transaction:
    """One write transaction: append records, checkpoint, and read or change the governed state."""

    def __init__(self, connection: sqlite3.Connection, store: AuditStore) -> None:
        self.connection = connection
        self._store = store

    def append(self, event: str, actor: str, decision: str, reasons: list[str] | None = None,
               **fields: object) -> dict[str, object]:
        """Append one record after the current head; it commits with the transaction or not at all."""
        seq, prev = self._head()
        record = {**fields, "seq": seq + 1, "time": now(), "actor": actor, "event": event,
                  "decision": decision, "reasons": reasons or [], "prev_hash": prev}
        digest = record_hash(record)
        self.connection.execute("INSERT INTO events (seq, hash, record) VALUES (?, ?, ?)",
                                (seq + 1, digest, canonical(record).decode()))
        if (seq + 1) % self._store.checkpoint_every == 0:
            self.checkpoint()
        return {**record, "hash": digest}

    def _head(self) -> tuple[int, str]:
        row = self.connection.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    def checkpoint(self, size: int | None = None) -> dict[str, object] | None:
        """Sign the Merkle root of records 1..size (default: the head), unless that is signed already.

        Signing a size below the head later is sound: the root covers exactly those records, and the
        checkpoint's time says when it was signed.
        """
        head, _ = self._head()
        size = head if size is None else min(size, head)
        if size == 0 or self.connection.execute(
                "SELECT 1 FROM checkpoints WHERE size = ?", (size,)).fetchone():
            return None
        leaves = [leaf_hash(row[0].encode()) for row in
                  self.connection.execute("SELECT record FROM events WHERE seq <= ? ORDER BY seq", (size,))]
        body = {"size": size, "root": root_of_hashes(leaves).hex(), "time": now(),
                "key_id": key_id(self._store.signer.public)}
        signed = {"checkpoint": body, "signature": self._store.signer.sign(canonical(body))}
        self.connection.execute("INSERT INTO checkpoints (size, record) VALUES (?, ?)",
                                (size, json.dumps(signed, sort_keys=True)))
        return signed


SCHEMA_VERSION = 6  # 6: records carry every field the governed tables are rebuilt from


class StoreError(RuntimeError):
    """The store cannot be used as it is (for example, it was written by another schema version)."""


class AuditStore:
    def __init__(self, path: Path, signer: Signer, checkpoint_every: int = 64) -> None:
        self.path = path
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode = WAL")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            has_tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if has_tables and version != SCHEMA_VERSION:
                raise StoreError(f"{path} has schema version {version}; this enclave needs {SCHEMA_VERSION}. "
                                 "Export and verify the old log, then start a new store.")
            connection.executescript(SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA busy_timeout = 60000")
        return connection

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """BEGIN IMMEDIATE ... COMMIT: serialised with every other writer, durable once it returns."""
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(connection, self)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        connection = self._connect()
        try:
            yield connection
        finally:
            connection.close()

    def records(self, start: int = 1, end: int | None = None) -> list[dict[str, object]]:
        with self.reading() as connection:
            rows = connection.execute("SELECT hash, record FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq",
                                      (start, end if end is not None else 2**62)).fetchall()
        return [{**json.loads(record), "hash": digest} for digest, record in rows]

    def checkpoint_head(self) -> dict[str, object] | None:
        """Sign the head (unless it is signed already) and return the latest signed checkpoint, the one an
        auditor keeps to check later exports against (`enclave audit verify --trusted`)."""
        with self.transaction() as tx:
            tx.checkpoint()
        found = self.checkpoints()
        return found[-1] if found else None

    def checkpoints(self) -> list[dict[str, object]]:
        with self.reading() as connection:
            return [json.loads(r) for (r,) in connection.execute("SELECT record FROM checkpoints ORDER BY size")]

    def export(self, out: TextIO, start: int = 1, end: int | None = None) -> int:
        """Write records start..end as JSONL with their checkpoints, after checkpointing the head.

        A range that does not start at 1 begins with a `prefix` line: the leaf hashes of the records
        before it and the hash of the last of them, so its checkpoints can still be verified.
        """
        with self.transaction() as tx:
            tx.checkpoint(end)
        with self.reading() as connection:
            last = end if end is not None else 2**62
            if start > 1:
                before = connection.execute("SELECT hash, record FROM events WHERE seq < ? ORDER BY seq",
                                            (start,)).fetchall()
                out.write(json.dumps({"kind": "prefix", "size": len(before),
                                      "last_hash": before[-1][0] if before else GENESIS,
                                      "leaf_hashes": [leaf_hash(r.encode()).hex() for _, r in before]}) + "\n")
            checkpoints = dict(connection.execute("SELECT size, record FROM checkpoints WHERE size >= ? AND size <= ?",
                                                  (start, last)).fetchall())
            written = 0
            for seq, digest, record in connection.execute(
                    "SELECT seq, hash, record FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq", (start, last)):
                out.write(json.dumps({"kind": "event", "hash": digest, "record": json.loads(record)},
                                     ensure_ascii=False) + "\n")
                if seq in checkpoints:
                    out.write(json.dumps({"kind": "checkpoint", **json.loads(checkpoints[seq])}) + "\n")
                written += 1
        return written
