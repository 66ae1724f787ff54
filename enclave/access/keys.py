"""Principals, roles and API keys.

A principal (a person or a service) holds one or more roles: researcher, reviewer, steward, auditor.
An API key is `enc_<key id>_<secret>`: random (`secrets`), shown once when issued, stored only as an
HMAC-SHA-256 of the secret under the enclave's key pepper, compared in constant time, and revocable.
Issuing and revoking keys, and creating principals, are audit events.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from hashlib import sha256
from typing import Literal

from enclave.audit.store import AuditStore, Transaction

Role = Literal["researcher", "reviewer", "steward", "auditor"]
ROLES: tuple[Role, ...] = ("researcher", "reviewer", "steward", "auditor")
PREFIX = "enc"


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    key_id: str

    def has(self, role: Role) -> bool:
        return role in self.roles


def _digest(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode(), sha256).hexdigest()


def ensure_principal(tx: Transaction, actor: str, name: str, roles: set[str]) -> None:
    """Create a principal or add roles to it (recorded); roles are never silently removed."""
    unknown = roles - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"roles must be among {', '.join(ROLES)}")
    row = tx.connection.execute("SELECT roles FROM principals WHERE name = ?", (name,)).fetchone()
    held = set(row[0].split(",")) if row else set()
    if roles <= held:
        return
    record = tx.append("principal.roles", actor, "allow", [], principal=name, roles=sorted(held | roles))
    tx.connection.execute("INSERT INTO principals (name, roles, seq) VALUES (?, ?, ?) "
                          "ON CONFLICT (name) DO UPDATE SET roles = excluded.roles, seq = excluded.seq",
                          (name, ",".join(sorted(held | roles)), record["seq"]))


def issue_key(tx: Transaction, pepper: bytes, actor: str, principal: str) -> str:
    """A new key for an existing principal; the only time its secret exists outside the caller."""
    if tx.connection.execute("SELECT 1 FROM principals WHERE name = ?", (principal,)).fetchone() is None:
        raise LookupError(f"no principal named {principal!r}")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    digest = _digest(pepper, secret)  # recorded so the key table can be checked against the log
    record = tx.append("key.issued", actor, "allow", [], principal=principal, key_id=key_id, digest=digest)
    tx.connection.execute("INSERT INTO api_keys (key_id, principal, digest, seq) VALUES (?, ?, ?, ?)",
                          (key_id, principal, digest, record["seq"]))
    return f"{PREFIX}_{key_id}_{secret}"


def revoke_key(tx: Transaction, actor: str, key_id: str) -> bool:
    if tx.connection.execute("SELECT 1 FROM api_keys WHERE key_id = ? AND revoked = 0", (key_id,)).fetchone() is None:
        return False
    tx.append("key.revoked", actor, "allow", [], key_id=key_id)
    tx.connection.execute("UPDATE api_keys SET revoked = 1 WHERE key_id = ?", (key_id,))
    return True


def authenticate(store: AuditStore, pepper: bytes, presented: str) -> Principal | None:
    """The principal of a presented key, or None (unknown, malformed, wrong secret or revoked)."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    _, key_id, secret = parts
    with store.glancing() as connection:  # one statement
        row = connection.execute(
            "SELECT k.digest, k.revoked, p.name, p.roles FROM api_keys k JOIN principals p ON p.name = k.principal "
            "WHERE k.key_id = ?", (key_id,)).fetchone()
    if row is None:
        _digest(pepper, secret)  # same work for an unknown key id as for a known one
        return None
    digest, revoked, name, roles = row
    if not hmac.compare_digest(digest, _digest(pepper, secret)) or revoked:
        return None
    return Principal(name, frozenset(roles.split(",")), key_id)


def principal_of_key(store: AuditStore, key_id: str) -> Principal | None:
    """The principal of an active key, by its id alone: a web session holds the id, never the secret,
    and is looked up again on every page so that a revoked key or a changed role takes effect at once."""
    with store.glancing() as connection:
        row = connection.execute(
            "SELECT p.name, p.roles FROM api_keys k JOIN principals p ON p.name = k.principal "
            "WHERE k.key_id = ? AND k.revoked = 0", (key_id,)).fetchone()
    return Principal(row[0], frozenset(row[1].split(",")), key_id) if row is not None else None
