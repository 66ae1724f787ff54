"""The consent registry: per person and purpose, consent given (with dates) or revoked.

Consent arrives by a contributor's local ID (imported with a delivery or recorded through the API) and
is stored against the entry's consent subject, a keyed pseudonym (identity.py), so neither the registry
nor the audit log holds a local ID. The registry is append-only, in the audit store: a change and its
audit record commit together, and the latest statement about a person for a purpose is the one that
holds. Which subjects are one person is the linkage's business, so consent survives re-linking: at
query time (`consented_keys`) the latest statement among all of a person's entries decides.

A person counts for purpose P on day D when that latest statement gives consent with given <= D and
(no expiry or D <= expires). A revocation is always the latest statement from the moment it is made.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from enclave.audit.store import Connection, Transaction

Action = Literal["give", "revoke"]


@dataclass(frozen=True)
class Statement:
    subject: str
    purpose: str
    action: Action
    given: dt.date | None = None
    expires: dt.date | None = None


def record(tx: Transaction, dataset: str, statement: Statement, seq: int) -> int:
    """Append one statement (after its audit record `seq`); returns its id, the consent sequence."""
    cursor = tx.connection.execute(
        "INSERT INTO consents (id, dataset, subject, purpose, action, given, expires, seq) "
        "VALUES ((SELECT coalesce(max(id), 0) + 1 FROM consents), ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (dataset, statement.subject, statement.purpose, statement.action,
         statement.given.isoformat() if statement.given else None,
         statement.expires.isoformat() if statement.expires else None, seq))
    return int(cursor.fetchone()[0])


def latest(connection: Connection, dataset: str, purpose: str, upto: int) -> list[tuple]:
    """(subject, id, action, given, expires) of the latest statement per subject, among ids <= upto."""
    return connection.execute(
        """SELECT subject, id, action, given, expires FROM consents c WHERE dataset = ? AND purpose = ? AND id <= ?
           AND id = (SELECT max(id) FROM consents d WHERE d.dataset = c.dataset AND d.purpose = c.purpose
                     AND d.subject = c.subject AND d.id <= ?)""", (dataset, purpose, upto, upto)).fetchall()
