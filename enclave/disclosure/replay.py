"""Released answers, kept so that an identical request gets the same answer and spends nothing.

Without this, asking the same query again and again would draw fresh noise each time, and the average
of the answers would converge on the true value. A request is identical when the researcher, dataset,
data version, canonical SQL and ε are. Its key is claimed in the same transaction as its charge, so a
second identical request arriving while the first runs waits for that answer instead of paying again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from enclave.audit.store import Connection, Transaction

# A claim older than this is taken to belong to a process that died before releasing.
ABANDONED_AFTER_SECONDS = 300.0


@dataclass(frozen=True)
class Claim:
    query_id: str
    status: str
    payload: str | None
    claimed_at: float


def request_key(researcher: str, dataset: str, data_version: str, canonical_sql: str, epsilon: float) -> str:
    identity = {"researcher": researcher, "dataset": dataset, "data_version": data_version,
                "sql": canonical_sql, "epsilon": epsilon}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def find(tx: Transaction, key: str) -> Claim | None:
    row = tx.connection.execute("SELECT query_id, status, payload, claimed_at FROM releases WHERE request_key = ?",
                                (key,)).fetchone()
    return Claim(*row) if row else None


def released_payload(connection: Connection, key: str) -> str | None:
    """The released answer of a request key, if there is one."""
    row = connection.execute("SELECT payload FROM releases WHERE request_key = ? AND status = 'released'",
                             (key,)).fetchone()
    return row[0] if row else None


def is_live(claim: Claim) -> bool:
    return claim.status == "pending" and time.time() - claim.claimed_at < ABANDONED_AFTER_SECONDS


def claim(tx: Transaction, key: str, query_id: str, researcher: str) -> None:
    tx.connection.execute("INSERT INTO releases (request_key, query_id, researcher, status, payload, claimed_at) "
                          "VALUES (?, ?, ?, 'pending', NULL, ?) ON CONFLICT (request_key) DO UPDATE SET "
                          "query_id = excluded.query_id, researcher = excluded.researcher, status = 'pending', "
                          "payload = NULL, claimed_at = excluded.claimed_at, seq = NULL",
                          (key, query_id, researcher, time.time()))


def of_researcher(tx: Transaction, researcher: str) -> list[tuple[str, str, str | None]]:
    """(query_id, status, payload) of a researcher's queries, newest first."""
    return tx.connection.execute("SELECT query_id, status, payload FROM releases WHERE researcher = ? "
                                 "ORDER BY claimed_at DESC", (researcher,)).fetchall()


def complete(tx: Transaction, key: str, payload: str, seq: int) -> None:
    tx.connection.execute("UPDATE releases SET status = 'released', payload = ?, seq = ? WHERE request_key = ?",
                          (payload, seq, key))


def fail(tx: Transaction, key: str) -> None:
    tx.connection.execute("UPDATE releases SET status = 'failed' WHERE request_key = ?", (key,))
