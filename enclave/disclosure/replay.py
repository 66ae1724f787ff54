"""Released answers, kept so that an identical request gets the same answer and spends nothing.

Without this, asking the same query again and again would draw fresh noise each time, and the average
of the answers would converge on the true value. A request is identical when the researcher, dataset,
data version, canonical SQL, ε and output weights are. Its key is claimed in the same transaction as its charge, so a
second identical request arriving while the first runs waits for that answer instead of paying again.

A release keeps the audit record of its request (what the check, rewrite and plan decided), and every
request as sent that it answered names it by an alias (`alias_key`: the researcher, dataset, data version
and rules, with the SQL text, ε, weights and accuracy targets as sent, or the template and its parameters).
So a repeated request is answered from its alias before it is parsed, checked, rewritten, bound or planned
again; a request whose text differs but whose checked form is the same is answered after the check alone
(`request_key`). Its `query.replayed` record is the one a replay after the whole pipeline would write.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
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


def request_key(researcher: str, dataset: str, data_version: str, canonical_sql: str, epsilon: float,
                weights: Mapping[str, float] | None = None) -> str:
    """The key of a release: the same query at other weights splits ε otherwise, so it is another release.
    Weights are keyed sorted (json's sort_keys), and only when given, so an unweighted request keeps the
    key it had before weights existed."""
    identity: dict[str, object] = {"researcher": researcher, "dataset": dataset, "data_version": data_version,
                                   "sql": canonical_sql, "epsilon": epsilon}
    if weights:
        identity["weights"] = {column: float(w) for column, w in weights.items()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def alias_key(researcher: str, dataset: str, data_version: str, rules_sha256: str,
              sent: Mapping[str, object]) -> str:
    """The key of a request as sent: a repeat of the same text (or template run) under the same rules."""
    identity = {"researcher": researcher, "dataset": dataset, "data_version": data_version,
                "rules_sha256": rules_sha256, "sent": sent}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Released:
    """A released answer and the audit record of the request that it answered."""

    request_key: str
    payload: str
    record: dict[str, object]


def released(connection: Connection, researcher: str, key: str) -> Released | None:
    """The researcher's released answer of a request key, with its record (None for a release recorded
    before releases kept their records: the whole pipeline replays those)."""
    row = connection.execute("SELECT payload, record FROM releases WHERE request_key = ? AND researcher = ? AND "
                             "status = 'released' AND record IS NOT NULL", (key, researcher)).fetchone()
    return Released(key, row[0], json.loads(row[1])) if row else None


def aliased(connection: Connection, researcher: str, alias: str) -> Released | None:
    """The researcher's released answer that a request as sent (`alias_key`) was answered with."""
    row = connection.execute("SELECT request_key FROM replay_aliases WHERE alias = ?", (alias,)).fetchone()
    return released(connection, researcher, row[0]) if row else None


def remember(tx: Transaction, alias: str, key: str) -> None:
    """Name, by the alias of a request as sent, the release it was answered with."""
    tx.connection.execute("INSERT INTO replay_aliases (alias, request_key) VALUES (?, ?) "
                          "ON CONFLICT (alias) DO NOTHING", (alias, key))


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
                          "payload = NULL, claimed_at = excluded.claimed_at, seq = NULL, record = NULL",
                          (key, query_id, researcher, time.time()))


def seq_of(connection: Connection, query_id: str) -> int | None:
    """The audit record number a query's answer was released under."""
    row = connection.execute("SELECT seq FROM releases WHERE query_id = ? AND status = 'released'",
                             (query_id,)).fetchone()
    return row[0] if row else None


def of_researcher(tx: Transaction, researcher: str) -> list[tuple[str, str, str | None]]:
    """(query_id, status, payload) of a researcher's queries, newest first."""
    return tx.connection.execute("SELECT query_id, status, payload FROM releases WHERE researcher = ? "
                                 "ORDER BY claimed_at DESC", (researcher,)).fetchall()


def complete(tx: Transaction, key: str, payload: str, seq: int, record: Mapping[str, object]) -> None:
    tx.connection.execute("UPDATE releases SET status = 'released', payload = ?, seq = ?, record = ? "
                          "WHERE request_key = ?", (payload, seq, json.dumps(record, sort_keys=True), key))


def fail(tx: Transaction, key: str) -> None:
    tx.connection.execute("UPDATE releases SET status = 'failed' WHERE request_key = ?", (key,))
