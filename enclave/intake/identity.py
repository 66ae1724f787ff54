"""The identity store: rosters with direct identifiers, records by local ID, linkage and person keys.

One DuckDB file per dataset (`<data>/<dataset>/identity.duckdb`), opened read-write by the intake only.
No query path reaches it: the sandbox opens analysis databases only (built by `build_analysis`, which
copies person keys and non-identifying columns and nothing else), with external access off, so it
cannot ATTACH or read another file; and the check knows only the manifest's tables.

Persons: each linkage cluster gets a surrogate, a keyed hash of (linkage run, first member) that means
nothing outside this store. A cluster keeps its surrogate across re-linking when it is the same
person: its earlier-linked members all come from one earlier cluster, and every still-delivered member
of that cluster is in it (new rows may join, withdrawn rows may leave). Merged or split clusters get
new surrogates. The person key in analysis databases is HMAC-SHA-256(person key, surrogate), so
rotating the key (`rekey`) changes every person key at once without touching the linkage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from enclave.catalog import bounding
from enclave.catalog.manifest import Manifest
from enclave.intake.delivery import (
    ROSTER,
    DeliveryFile,
    DeliveryRefused,
    Problem,
    file_specs,
    stage,
)
from enclave.intake.linkage import link

_SCHEMA = """
CREATE TABLE IF NOT EXISTS roster (contributor VARCHAR NOT NULL, local_id VARCHAR NOT NULL,
    last_name VARCHAR NOT NULL, first_name VARCHAR NOT NULL, birth_date DATE NOT NULL, gender VARCHAR,
    subject VARCHAR NOT NULL{attributes}, PRIMARY KEY (contributor, local_id));
CREATE TABLE IF NOT EXISTS links (contributor VARCHAR NOT NULL, local_id VARCHAR NOT NULL,
    surrogate VARCHAR NOT NULL, PRIMARY KEY (contributor, local_id));
CREATE TABLE IF NOT EXISTS persons (surrogate VARCHAR PRIMARY KEY, person_key VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS linkage_pairs (contributor_l VARCHAR, local_id_l VARCHAR, contributor_r VARCHAR,
    local_id_r VARCHAR, match_probability DOUBLE);
CREATE TABLE IF NOT EXISTS state (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
"""


def person_key(key: bytes, surrogate: str) -> str:
    return hmac.new(key, surrogate.encode(), hashlib.sha256).hexdigest()[:32]


class StaleBuild(RuntimeError):
    """The identity store holds another analysis build's person keys than the one asked about."""


@dataclass(frozen=True)
class DeliveredFile:
    kind: str
    name: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class Receipt:
    """What a delivery loaded: per file its kind, name, hash and row count. Never its contents."""

    contributor: str
    files: tuple[DeliveredFile, ...]


@dataclass(frozen=True)
class Linked:
    """Counts of a linkage run (the quality report has the rest)."""

    threshold: float
    records: int
    persons: int
    kept: int  # persons whose surrogate (so person key) survived from the previous run
    seconds: float


class IdentityStore:
    """The identity side of one dataset. All access is serialised by a lock: one writer, rare writes."""

    def __init__(self, path: Path, manifest: Manifest, secret: bytes) -> None:
        if manifest.intake is None:
            raise ValueError(f"dataset {manifest.name} is not built from deliveries (no intake section)")
        self.path = path
        self.manifest = manifest
        self.intake = manifest.intake
        self._secret = secret
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(path))
        self.lock = threading.RLock()
        person = manifest.tables[self.intake.person_table]
        attributes = "".join(f', "{a}" {person.columns[a].type}' for a in self.intake.person_attributes)
        self.con.execute(_SCHEMA.format(attributes=attributes))
        for name, table in self.record_tables().items():
            columns = "".join(f', "{c}" {spec.type}' for c, spec in table.items())
            self.con.execute(f'CREATE TABLE IF NOT EXISTS "records_{name}" (contributor VARCHAR NOT NULL, '
                             f'local_id VARCHAR NOT NULL{columns})')

    def _keyed(self, purpose: str, text: str) -> str:
        """A keyed hash of `text` for one purpose: 128 bits, meaningless without the identity secret."""
        return hmac.new(self._secret, f"{purpose}\x1f{text}".encode(), hashlib.sha256).hexdigest()[:32]

    def subject(self, contributor: str, local_id: str) -> str:
        """The consent subject of a roster entry: what the consent registry and the audit log hold instead
        of the local ID (stable across re-linking and re-keying)."""
        return self._keyed("consent-subject", f"{contributor}\x1f{local_id}")

    def record_tables(self) -> dict[str, dict]:
        """Tables delivered as records keyed by local_id: every table but the person table."""
        unit = self.manifest.privacy_unit
        return {name: {c: spec for c, spec in table.columns.items() if c != unit}
                for name, table in self.manifest.tables.items() if name != self.intake.person_table}

    def close(self) -> None:
        with self.lock:
            self.con.close()

    # -- deliveries ---------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One change of the identity side (load, link, key, build) on its own cursor: committed when the
        caller's block ends without error, which is after the caller has recorded it, else rolled back."""
        with self.lock:
            cursor = self.con.cursor()
            try:
                cursor.execute("BEGIN TRANSACTION")
                try:
                    yield cursor
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            finally:
                cursor.close()

    def load(self, cursor: duckdb.DuckDBPyConnection, contributor: str, files: list[DeliveryFile]) -> Receipt:
        """Validate one contributor's delivery and load it (in the caller's transaction).

        Each file replaces what the contributor delivered before of its kind. Raises DeliveryRefused if a
        file is invalid or a record's local ID is not on the roster; the caller's rollback undoes any part.
        """
        if contributor not in self.manifest.contributors:
            raise DeliveryRefused([Problem("unknown_contributor", "-", f"no contributor {contributor!r}; known: "
                                           f"{', '.join(self.manifest.contributors)}")])
        specs = file_specs(self.manifest, contributor)
        kinds = [f.kind for f in files]
        problems = [Problem("unknown_kind", f.name, f"{f.kind!r} is not a file {contributor} delivers; expected: "
                            f"{', '.join(specs)}") for f in files if f.kind not in specs]
        problems += [Problem("duplicate_file", f.name, f"a second {f.kind} file") for i, f in enumerate(files)
                     if f.kind in kinds[:i]]
        if not files:
            problems.append(Problem("empty_file", "-", "the delivery has no files"))
        if problems:
            raise DeliveryRefused(problems)
        staged = {f.kind: stage(cursor, f, specs[f.kind], f"staged_{f.kind}") for f in files}
        self._load(cursor, contributor, staged)
        for table in staged.values():
            cursor.execute(f'DROP TABLE "{table.table}"')
        return Receipt(contributor, tuple(DeliveredFile(s.file.kind, s.file.name, s.file.digest, s.rows)
                                          for s in staged.values()))

    def _load(self, cursor: duckdb.DuckDBPyConnection, contributor: str, staged: dict) -> None:
        has_roster = cursor.execute("SELECT count(*) FROM roster WHERE contributor = ?", [contributor]).fetchall()[0][0]
        if ROSTER not in staged and not has_roster:
            raise DeliveryRefused([Problem("no_roster", staged[next(iter(staged))].file.name,
                                           f"{contributor} has no roster yet: deliver it with the records")])
        if ROSTER in staged:
            roster = staged[ROSTER]
            local_ids = [r for (r,) in cursor.execute(f'SELECT local_id FROM "{roster.table}" ORDER BY _row')
                         .fetchall()]
            subjects = [self.subject(contributor, local_id) for local_id in local_ids]
            cursor.execute("DELETE FROM roster WHERE contributor = ?", [contributor])
            attributes = [a for a in self.intake.person_attributes if a in roster.columns]
            person = self.manifest.tables[self.intake.person_table]
            casts = "".join(f', TRY_CAST(s."{a}" AS {person.columns[a].type})' for a in attributes)
            names = "".join(f', "{a}"' for a in attributes)
            gender = "s.gender" if "gender" in roster.columns else "NULL"
            cursor.execute(f"""INSERT INTO roster (contributor, local_id, last_name, first_name, birth_date, gender,
                subject{names})
                SELECT ?, s.local_id, s.last_name, s.first_name, CAST(s.birth_date AS DATE), {gender}, k.subject{casts}
                FROM "{roster.table}" s JOIN (SELECT unnest(?) AS local_id, unnest(?) AS subject) k USING (local_id)
                """, [contributor, local_ids, subjects])
        for kind, file in staged.items():
            if kind == ROSTER:
                continue
            columns = self.record_tables()[kind]
            present = [c for c in columns if c in file.columns]
            names = "".join(f', "{c}"' for c in present)
            values = "".join(f', TRY_CAST(CASE WHEN {_boolean(columns[c].type)} THEN lower("{c}") ELSE "{c}" END '
                             f'AS {columns[c].type})' for c in present)
            cursor.execute(f'DELETE FROM "records_{kind}" WHERE contributor = ?', [contributor])
            cursor.execute(f'INSERT INTO "records_{kind}" (contributor, local_id{names}) '
                           f'SELECT ?, local_id{values} FROM "{file.table}"', [contributor])
            unknown = cursor.execute(f'SELECT _row FROM "{file.table}" WHERE local_id NOT IN '
                                     f'(SELECT local_id FROM roster WHERE contributor = ?) ORDER BY _row',
                                     [contributor]).fetchall()
            if unknown:
                raise DeliveryRefused([Problem("unknown_local_id", file.file.name, f"row {r}, column local_id: "
                                               f"the local ID is not in {contributor}'s roster", r, "local_id")
                                       for (r,) in unknown], len(unknown))
        for kind in self.record_tables():  # records delivered earlier must still be on the new roster
            if kind in staged or self.manifest.tables[kind].contributor != contributor:
                continue
            orphans = cursor.execute(f'SELECT count(*) FROM "records_{kind}" WHERE contributor = ? AND local_id '
                                     'NOT IN (SELECT local_id FROM roster WHERE contributor = ?)',
                                     [contributor, contributor]).fetchall()[0][0]
            if orphans:
                raise DeliveryRefused([Problem("unknown_local_id", ROSTER, f"{orphans} stored {kind} record(s) have "
                                               "local IDs missing from the new roster: deliver their records too")])

    # -- linkage and person keys ---------------------------------------------------------------------

    def link(self, cursor: duckdb.DuckDBPyConnection, threshold: float | None = None) -> Linked:
        """Link every roster row into persons (Splink), keeping surrogates where clusters are unchanged."""
        threshold = self.intake.link_threshold if threshold is None else threshold
        started = time.perf_counter()
        rows = cursor.sql("""SELECT row_number() OVER (ORDER BY contributor, local_id) AS record_id,
            contributor, local_id, first_name, last_name, birth_date, gender FROM roster""").to_arrow_table()
        work = duckdb.connect()  # Splink's working tables stay in memory, out of the identity store
        try:
            work.register("roster_rows", rows)
            work.execute("CREATE TABLE linkage_input AS SELECT * FROM roster_rows")
            work.unregister("roster_rows")
            link(work, threshold)
            clusters = work.sql("""SELECT i.contributor, i.local_id, c.cluster FROM linkage_clusters c
                JOIN linkage_input i USING (record_id)""").to_arrow_table()
            pairs = work.sql("""SELECT l.contributor, l.local_id, r.contributor, r.local_id, p.match_probability
                FROM linkage_pairs p JOIN linkage_input l ON l.record_id = p.record_id_l
                JOIN linkage_input r ON r.record_id = p.record_id_r""").to_arrow_table()
        finally:
            work.close()
        cursor.register("new_clusters", clusters)
        cursor.register("new_pairs", pairs)
        kept, persons = self._assign(cursor)
        cursor.execute("DELETE FROM linkage_pairs")
        cursor.execute("INSERT INTO linkage_pairs SELECT * FROM new_pairs")
        cursor.execute("INSERT OR REPLACE INTO state VALUES ('threshold', ?)", [str(threshold)])
        cursor.unregister("new_clusters")
        cursor.unregister("new_pairs")
        return Linked(threshold, len(rows), persons, kept, time.perf_counter() - started)

    def _assign(self, cursor: duckdb.DuckDBPyConnection) -> tuple[int, int]:
        cursor.execute("""CREATE OR REPLACE TEMP TABLE assignment AS
            WITH m AS (SELECT n.cluster, o.surrogate FROM new_clusters n
                       LEFT JOIN links o USING (contributor, local_id)),
                 per_cluster AS (SELECT cluster, count(DISTINCT surrogate) AS olds, any_value(surrogate) AS old
                                 FROM m GROUP BY cluster),
                 per_old AS (SELECT surrogate, count(DISTINCT cluster) AS clusters FROM m
                             WHERE surrogate IS NOT NULL GROUP BY surrogate)
            SELECT c.cluster, CASE WHEN c.olds = 1 AND p.clusters = 1 THEN c.old END AS surrogate
            FROM per_cluster c LEFT JOIN per_old p ON p.surrogate = c.old""")
        run = int((cursor.execute("SELECT value FROM state WHERE name = 'link_runs'").fetchall() or [("0",)])[0][0]) + 1
        cursor.execute("INSERT OR REPLACE INTO state VALUES ('link_runs', ?)", [str(run)])
        fresh = cursor.execute("""SELECT a.cluster, min(n.contributor || chr(31) || n.local_id) FROM assignment a
            JOIN new_clusters n USING (cluster) WHERE a.surrogate IS NULL GROUP BY a.cluster""").fetchall()
        surrogates = [self._keyed("surrogate", f"{run}\x1f{member}") for _, member in fresh]
        cursor.execute("""UPDATE assignment SET surrogate = f.surrogate
            FROM (SELECT unnest(?) AS cluster, unnest(?) AS surrogate) f WHERE assignment.cluster = f.cluster""",
                       [[c for c, _ in fresh], surrogates])
        kept = cursor.execute("SELECT count(*) FROM assignment").fetchall()[0][0] - len(fresh)
        cursor.execute("DELETE FROM links")
        cursor.execute("""INSERT INTO links SELECT n.contributor, n.local_id, a.surrogate
            FROM new_clusters n JOIN assignment a USING (cluster)""")
        cursor.execute("DELETE FROM persons WHERE surrogate NOT IN (SELECT surrogate FROM assignment)")
        cursor.execute("INSERT INTO persons SELECT surrogate, '' FROM assignment WHERE surrogate NOT IN "
                       "(SELECT surrogate FROM persons)")
        return kept, kept + len(fresh)

    def set_person_keys(self, cursor: duckdb.DuckDBPyConnection, key: bytes) -> None:
        """Person key of every person under `key` (after linking, and when the key is rotated)."""
        surrogates = [s for (s,) in cursor.execute("SELECT surrogate FROM persons").fetchall()]
        cursor.execute("""UPDATE persons SET person_key = k.person_key
            FROM (SELECT unnest(?) AS surrogate, unnest(?) AS person_key) k WHERE persons.surrogate = k.surrogate""",
                       [surrogates, [person_key(key, s) for s in surrogates]])

    def consented_keys(self, statements: list[tuple], on: dt.date, build: str) -> list[str]:
        """Person keys whose latest consent statement (subject, id, action, given, expires) holds on `on`.

        A person's statements are those of every roster entry linked to them; the latest decides. The
        keys are those of analysis build `build`: if the store has moved on to another (a re-link or
        re-key committed meanwhile), StaleBuild, rather than keys that the build does not hold.
        """
        with self.lock:
            cursor = self.con.cursor()
            try:
                current = cursor.execute("SELECT value FROM state WHERE name = 'build'").fetchall()
                if current != [(build,)]:
                    raise StaleBuild(build)
                if not statements:
                    return []
                cursor.execute("""CREATE TEMP TABLE statements AS SELECT unnest(?) AS subject, unnest(?) AS id,
                    unnest(?) AS action, unnest(?)::DATE AS given, unnest(?)::DATE AS expires""",
                               [list(c) for c in zip(*statements, strict=True)])
                keys = cursor.execute("""SELECT p.person_key FROM statements s JOIN roster r USING (subject)
                    JOIN links l USING (contributor, local_id) JOIN persons p USING (surrogate)
                    GROUP BY p.person_key
                    HAVING arg_max(s.action, s.id) = 'give' AND arg_max_null(s.given, s.id) <= ?
                       AND coalesce(arg_max_null(s.expires, s.id) >= ?, true)
                    ORDER BY p.person_key""", [on, on]).fetchall()
            finally:
                cursor.close()
        return [k for (k,) in keys]

    def subjects(self, contributor: str, local_ids: list[str]) -> dict[str, str]:
        """local ID -> consent subject, for the local IDs on the contributor's roster."""
        with self.lock:
            rows = self.con.execute("SELECT local_id, subject FROM roster WHERE contributor = ? AND local_id IN "
                                    "(SELECT unnest(?))", [contributor, local_ids]).fetchall()
        return dict(rows)

    def build_analysis(self, cursor: duckdb.DuckDBPyConnection, target: Path, build: str) -> dict[str, int]:
        """Write the analysis database `build` (person keys and non-identifying columns only) to `target`,
        atomically; return its row counts. Direct identifiers, local IDs and surrogates stay here.

        Tables go across as Arrow into a connection of their own: one DuckDB transaction writes one file.
        Each table then gets the bounding columns of the build (enclave.catalog.bounding), with a row
        order keyed by the store's secret and the build.
        """
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        unit = self.manifest.privacy_unit
        cursor.execute("""CREATE OR REPLACE TEMP TABLE members AS
            SELECT p.person_key, list_position(?, r.contributor) AS rank, r.*
            FROM roster r JOIN links l USING (contributor, local_id) JOIN persons p USING (surrogate)""",
                       [list(self.manifest.contributors)])
        counts = {}
        with duckdb.connect(str(partial)) as out:
            for name, table in self.manifest.tables.items():
                if name == self.intake.person_table:
                    select = self._person_select(table.columns)
                else:
                    columns = ", ".join(f'CAST(r."{c}" AS {spec.type}) AS "{c}"' if c != unit
                                        else f'p.person_key AS "{unit}"' for c, spec in table.columns.items())
                    select = (f'SELECT {columns} FROM "records_{name}" r JOIN links l USING (contributor, '
                              'local_id) JOIN persons p USING (surrogate) ORDER BY l.surrogate, r.local_id')
                rows = cursor.sql(select).to_arrow_table()
                out.register("built", rows)
                out.execute(f'CREATE TABLE "{name}" AS SELECT * FROM built')
                out.unregister("built")
                counts[name] = len(rows)
            bounding.prepare(out, self.manifest, bounding.sampling_salt(self._secret, build))
            out.execute("CHECKPOINT")
        cursor.execute("DROP TABLE members")
        cursor.execute("INSERT OR REPLACE INTO state VALUES ('build', ?)", [build])
        partial.replace(target)
        return counts

    def _person_select(self, columns: dict) -> str:
        """One row per person: the most common birth date's year and gender (ties: the earliest date, the
        first code), and each attribute from the first contributor in manifest order that gives one."""
        unit = self.manifest.privacy_unit
        derived = {unit: f'm.person_key AS "{unit}"', "birth_year": "CAST(year(any_value(b.birth_date)) AS INTEGER) "
                   "AS birth_year", "gender": "any_value(g.gender) AS gender"}
        parts = [derived.get(c) or f'(array_agg(m."{c}" ORDER BY m.rank, m.local_id) FILTER (WHERE m."{c}" IS NOT '
                 f'NULL))[1] AS "{c}"' for c in columns]
        return f"""WITH b AS (SELECT person_key, birth_date FROM members GROUP BY person_key, birth_date
                              QUALIFY row_number() OVER (PARTITION BY person_key
                                                         ORDER BY count(*) DESC, birth_date) = 1),
                        g AS (SELECT person_key, gender FROM members WHERE gender IS NOT NULL
                              GROUP BY person_key, gender
                              QUALIFY row_number() OVER (PARTITION BY person_key ORDER BY count(*) DESC, gender) = 1)
                   SELECT {', '.join(parts)} FROM members m LEFT JOIN b USING (person_key)
                   LEFT JOIN g USING (person_key) GROUP BY m.person_key ORDER BY m.person_key"""


def _boolean(column_type: str) -> str:
    return "TRUE" if column_type == "BOOLEAN" else "FALSE"
