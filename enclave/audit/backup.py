"""Backup and restore of the state store: every table, row by row, as JSON lines, on either backend.

A backup is read in one snapshot, so the log and the tables it governs are taken at the same instant.
It restores into an empty store of either kind (SQLite to PostgreSQL is how an embedded enclave moves
to a deployment). Nothing in the file needs to be trusted: after a restore the log verifies against
its signed checkpoints (`enclave audit verify`), and the governed tables must be its projection, or
the enclave refuses to start (`enclave.audit.state`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from enclave.audit.migrations import APPEND_ONLY, MUTABLE, SCHEMA_VERSION
from enclave.audit.store import AuditStore, StoreError

TABLES = (*APPEND_ONLY, *MUTABLE)
KIND = "enclave-state-backup"


def backup(store: AuditStore, out: TextIO) -> dict[str, int]:
    """Write the header, then every row of every table; returns the rows written per table."""
    written: dict[str, int] = {}
    with store.reading() as connection:
        head = connection.execute("SELECT count(*) FROM events").fetchone()[0]
        out.write(json.dumps({"kind": KIND, "schema_version": SCHEMA_VERSION, "events": head}) + "\n")
        for table in TABLES:
            cursor = connection.execute(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 - our own table names
            columns = [column[0] for column in cursor.description]  # type: ignore[attr-defined]
            written[table] = 0
            for row in cursor:
                out.write(json.dumps({"table": table, "row": dict(zip(columns, row, strict=True))},
                                     ensure_ascii=False) + "\n")
                written[table] += 1
    return written


def restore(store: AuditStore, lines: Iterable[str]) -> dict[str, int]:
    """Insert a backup into an empty store, in one transaction; returns the rows restored per table."""
    stream = iter(lines)
    try:
        header = json.loads(next(stream))
    except (StopIteration, ValueError):
        raise StoreError("not an enclave backup: the first line is not its header") from None
    if header.get("kind") != KIND or header.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(f"not a backup of schema version {SCHEMA_VERSION}: {header.get('kind')!r} "
                         f"version {header.get('schema_version')!r}")
    restored = dict.fromkeys(TABLES, 0)
    with store.transaction() as tx:
        if tx.connection.execute("SELECT count(*) FROM events").fetchone()[0]:
            raise StoreError("the store is not empty: restore into a new store")
        for number, line in enumerate(stream, start=2):
            if not line.strip():
                continue
            entry = json.loads(line)
            table, row = entry.get("table"), entry.get("row")
            if table not in restored or not isinstance(row, dict) or not row:
                raise StoreError(f"line {number} of the backup is not a row of a known table")
            names = list(row)
            if not all(name.isidentifier() for name in names):
                raise StoreError(f"line {number} of the backup names a column that cannot exist")
            tx.connection.execute(f"INSERT INTO {table} ({', '.join(names)}) "  # noqa: S608 - checked names
                                  f"VALUES ({', '.join('?' * len(names))})", [row[n] for n in names])
            restored[table] += 1
        if restored["events"] != header.get("events"):
            raise StoreError(f"the backup holds {restored['events']} records, its header says {header.get('events')}")
    return restored
