"""Data versions: every change of what a dataset's queries can see gets a new, recorded version.

A delivery (with its linkage), a re-link, a re-key and every consent change each make a version. A
version names the analysis database it reads (`build`, the digest of what was built) and the last
consent change it includes (`consent_seq`); its label `v<n>-<build>` keys the released-answer cache and
goes into every query's audit record, so an answer is never replayed across a change of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from enclave.audit.store import Connection, Transaction


@dataclass(frozen=True)
class DataVersion:
    dataset: str
    version: int
    build: str
    database: Path
    consent_seq: int

    @property
    def label(self) -> str:
        return f"v{self.version}-{self.build[:8]}"


def _row(dataset: str, row: tuple) -> DataVersion:
    return DataVersion(dataset, row[0], row[1], Path(row[2]), row[3])


def current(connection: Connection, dataset: str) -> DataVersion | None:
    row = connection.execute("SELECT version, build, database, consent_seq FROM data_versions WHERE dataset = ? "
                             "ORDER BY version DESC LIMIT 1", (dataset,)).fetchone()
    return _row(dataset, row) if row else None


def record(tx: Transaction, actor: str, dataset: str, reason: str, *, build: str | None = None,
           database: Path | None = None, rows: dict[str, int] | None = None) -> DataVersion:
    """Make and record the next version; without `build` it reads the same analysis database as before."""
    before = current(tx.connection, dataset)
    if build is None or database is None:
        if before is None:
            raise ValueError(f"dataset {dataset} has no analysis database yet")
        build, database = before.build, before.database
    consent_seq = tx.connection.execute("SELECT coalesce(max(id), 0) FROM consents WHERE dataset = ?",
                                        (dataset,)).fetchone()[0]
    made = DataVersion(dataset, (before.version if before else 0) + 1, build, database, consent_seq)
    event = tx.append("data.version", actor, "allow", [], dataset=dataset, data_version=made.label,
                      version=made.version, reason=reason, build=build, database=str(database),
                      consent_seq=consent_seq, **({"rows": rows} if rows else {}))
    tx.connection.execute("INSERT INTO data_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (dataset, made.version, build, str(database), reason, consent_seq, event["seq"]))
    return made
