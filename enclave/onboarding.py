"""Onboarding: deliveries, linkage, re-keying and consent, each recorded and made a new data version.

Every operation changes the identity store inside one transaction that commits only after the audit
log has recorded the change and the new data version; a failure anywhere before that leaves the
identity store, the analysis databases in use and the log as they were. A refused delivery is
recorded too (what was wrong and where, never a value).

Re-keying (documented in README.md): `rekey` draws a new person key (kept in the enclave's secrets as
`person-key-<dataset>-<n>`), recomputes every person key from the unchanged surrogates, builds a new
analysis database and makes it current. Answers already released keep the old keys' data version, so
none is replayed afterwards; consent, held by keyed pseudonyms of local IDs, is unaffected.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import duckdb

from enclave.catalog import versions
from enclave.catalog.demo import DEFAULT_SEED, demo_key
from enclave.catalog.versions import DataVersion
from enclave.consent import registry
from enclave.intake.delivery import DeliveryFile, DeliveryRefused, Problem, consent_spec, stage
from enclave.intake.identity import IdentityStore, Linked, Receipt
from enclave.pipeline import Enclave


@dataclass(frozen=True)
class Onboarded:
    """What an onboarding operation made: the new data version and, where it ran, the linkage."""

    version: DataVersion
    linked: Linked | None = None
    receipt: Receipt | None = None


def _key_version(cursor: duckdb.DuckDBPyConnection) -> int:
    rows = cursor.execute("SELECT value FROM state WHERE name = 'key_version'").fetchall()
    return int(rows[0][0]) if rows else 1


def _person_key(enclave: Enclave, dataset: str, version: int) -> bytes:
    if dataset == "demo" and version == 1:
        return demo_key(DEFAULT_SEED, "person")
    return enclave.settings.secret(f"person-key-{dataset}-{version}")


def fingerprint(key: bytes) -> str:
    """Which key is in use, for the log: a hash of the key, which says nothing about it."""
    return hashlib.sha256(b"enclave-key-fingerprint\x1f" + key).hexdigest()[:16]


def _publish(enclave: Enclave, store: IdentityStore, cursor: duckdb.DuckDBPyConnection, steward: str, dataset: str,
             reason: str, event: str, **fields: object) -> DataVersion:
    """Build the analysis database from the change in `cursor`'s transaction, then record the event and the
    new data version (one audit transaction). The caller's transaction commits after; if anything fails
    first, the new database is removed and nothing refers to it."""
    build = secrets.token_hex(8)
    database = store.path.parent / "analysis" / f"{build}.duckdb"
    try:
        rows = store.build_analysis(cursor, database, build)
        with enclave.audit.transaction() as tx:
            version = versions.record(tx, steward, dataset, reason, build=build, database=database, rows=rows)
            tx.append(event, steward, "allow", [], dataset=dataset, **fields, data_version=version.label)
    except BaseException:
        database.unlink(missing_ok=True)
        raise
    return version


def _linkage(linked: Linked) -> dict[str, object]:
    return {"threshold": linked.threshold, "records": linked.records, "persons": linked.persons,
            "keys_kept": linked.kept, "seconds": round(linked.seconds, 1)}


def ingest(enclave: Enclave, steward: str, dataset: str, contributor: str, files: list[DeliveryFile],
           threshold: float | None = None) -> Onboarded:
    """Validate, load and link one contributor's delivery and make the result the current data version."""
    store = enclave.identity(dataset)
    try:
        with store.transaction() as cursor:
            receipt = store.load(cursor, contributor, files)
            linked = store.link(cursor, threshold)
            store.set_person_keys(cursor, _person_key(enclave, dataset, _key_version(cursor)))
            version = _publish(enclave, store, cursor, steward, dataset, f"delivery from {contributor}",
                               "data.delivered", contributor=contributor, files=[f.__dict__ for f in receipt.files],
                               linkage=_linkage(linked))
    except DeliveryRefused as refused:
        with enclave.audit.transaction() as tx:
            tx.append("data.refused", steward, "deny", [f"{p.code}: {p.message}" for p in refused.problems[:10]],
                      dataset=dataset, contributor=contributor, problems=refused.total,
                      files=[{"kind": f.kind, "name": f.name, "sha256": f.digest} for f in files])
        raise
    return Onboarded(version, linked, receipt)


def relink(enclave: Enclave, steward: str, dataset: str, threshold: float) -> Onboarded:
    """Link again at another threshold (the steward's call, after reading the quality report)."""
    store = enclave.identity(dataset)
    with store.transaction() as cursor:
        linked = store.link(cursor, threshold)
        store.set_person_keys(cursor, _person_key(enclave, dataset, _key_version(cursor)))
        version = _publish(enclave, store, cursor, steward, dataset, f"linked at threshold {threshold}", "data.linked",
                           linkage=_linkage(linked))
    return Onboarded(version, linked)


def rekey(enclave: Enclave, steward: str, dataset: str) -> Onboarded:
    """Rotate the person key: every person key changes, the linkage does not."""
    store = enclave.identity(dataset)
    with store.transaction() as cursor:
        number = _key_version(cursor) + 1
        key = _person_key(enclave, dataset, number)
        cursor.execute("INSERT OR REPLACE INTO state VALUES ('key_version', ?)", [str(number)])
        store.set_person_keys(cursor, key)
        version = _publish(enclave, store, cursor, steward, dataset, f"person key {number}", "data.rekeyed",
                           key_version=number, key_fingerprint=fingerprint(key))
    return Onboarded(version)


@dataclass(frozen=True)
class ConsentChange:
    """A consent statement as a steward or contributor gives it: by local ID."""

    contributor: str
    local_id: str
    purpose: str
    action: registry.Action
    given: dt.date | None = None
    expires: dt.date | None = None


class ConsentRefused(Exception):
    """A consent change that names no roster entry, or has impossible dates; nothing was recorded."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].message)
        self.problems = problems


def record_consent(enclave: Enclave, steward: str, dataset: str, changes: list[ConsentChange],
                   source: str = "api") -> DataVersion:
    """Record consent statements (all or none) and make a new data version; later queries see them."""
    store = enclave.identity(dataset)
    problems: list[Problem] = []
    subjects: dict[tuple[str, str], str] = {}
    for contributor in {c.contributor for c in changes}:
        wanted = [c.local_id for c in changes if c.contributor == contributor]
        subjects.update({(contributor, k): v for k, v in store.subjects(contributor, wanted).items()})
    for row, change in enumerate(changes, 1):
        if (change.contributor, change.local_id) not in subjects:
            problems.append(Problem("unknown_local_id", source, f"statement {row}: the local ID is not on "
                                    f"{change.contributor}'s roster", row, "local_id"))
        if change.action == "give" and change.given is None:
            problems.append(Problem("missing_value", source, f"statement {row}: consent needs its given date",
                                    row, "given"))
        if change.given and change.expires and change.expires < change.given:
            problems.append(Problem("out_of_range", source, f"statement {row}: consent expires before it is given",
                                    row, "expires"))
    if problems or not changes:
        raise ConsentRefused(problems or [Problem("empty_file", source, "no consent statements")])
    statements = [registry.Statement(subjects[(c.contributor, c.local_id)], c.purpose, c.action, c.given, c.expires)
                  for c in changes]
    with enclave.audit.transaction() as tx:
        if len(statements) == 1:
            s, c = statements[0], changes[0]
            event = tx.append("consent.given" if s.action == "give" else "consent.revoked", steward, "allow", [],
                              dataset=dataset, contributor=c.contributor, subject=s.subject, purpose=s.purpose,
                              given=s.given.isoformat() if s.given else None,
                              expires=s.expires.isoformat() if s.expires else None, source=source)
        else:  # a contributor's import: one record for the batch, with a digest of every statement
            digest = hashlib.sha256("\n".join(f"{s.subject}|{s.purpose}|{s.action}|{s.given}|{s.expires}"
                                              for s in statements).encode()).hexdigest()
            event = tx.append("consent.imported", steward, "allow", [], dataset=dataset, source=source,
                              statements=len(statements), revocations=sum(s.action == "revoke" for s in statements),
                              statements_sha256=digest, entries=[
                                  [s.subject, s.purpose, s.action, s.given.isoformat() if s.given else None,
                                   s.expires.isoformat() if s.expires else None] for s in statements])
        for statement in statements:
            registry.record(tx, dataset, statement, int(event["seq"]))
        reason = {"consent.given": "consent given", "consent.revoked": "consent revoked"}.get(
            str(event["event"]), "consent imported")
        return versions.record(tx, steward, dataset, reason)


def import_consents(enclave: Enclave, steward: str, dataset: str, contributor: str, file: DeliveryFile) -> DataVersion:
    """A contributor's consent file (local_id, purpose, action, given, expires), validated and recorded whole."""
    with duckdb.connect() as con:
        staged = stage(con, file, consent_spec(), "consent")
        columns = ", ".join(f'"{c}"' if c in staged.columns else f'NULL AS "{c}"'
                            for c in ("local_id", "purpose", "action", "given", "expires"))
        rows = con.execute(f'SELECT {columns} FROM consent ORDER BY _row').fetchall()  # noqa: S608
    changes = [ConsentChange(contributor, local_id, purpose, action or "give",
                             dt.date.fromisoformat(given) if given else None,
                             dt.date.fromisoformat(expires) if expires else None)
               for local_id, purpose, action, given, expires in rows]
    return record_consent(enclave, steward, dataset, changes, source=file.name)
