"""The demo dataset: seeded, deterministic raw deliveries for the Riverton collaborative, onboarded
through the real intake path (validation, Splink linkage, person keys, analysis database build).

The truth is generated first: every random draw is a hash of (seed, stream, row identity) computed by
DuckDB, so it is the same on every machine for a given seed and size. Each contributor then writes
its roster the way rosters are written (enclave.catalog.rosters: typos, nicknames, swapped dates,
missing gender, duplicates under two local IDs) and its records keyed by its own local IDs. Those files
are delivered, linked and built like any contributor's, so the demo and the tests run on linked data.

The shape is realistic on purpose: children move between schools and years, some appear at only one
contributor, absences are skewed, and a small group (Native Hawaiian or Pacific Islander children) is
concentrated in one school, so suppression and contribution bounds have something to do.

Demo only: the identity secret and the person key derive from the seed, so every test home can share one
generated demo; a real dataset's keys are the enclave's secrets.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from enclave.catalog.manifest import Manifest
from enclave.catalog.rosters import people, roster_file, rosters
from enclave.intake.delivery import DeliveryFile
from enclave.intake.identity import IdentityStore
from enclave.intake.quality import against_truth

GENERATOR_VERSION = 4
DEFAULT_CHILDREN = 50_000
DEFAULT_SEED = 20261121
# which roster carries which person attributes (the after-school program records neither)
ROSTER_ATTRIBUTES = {"school_district": ("race_ethnicity", "home_zip"), "clinic": ("race_ethnicity", "home_zip")}


@dataclass(frozen=True)
class DemoData:
    """A generated demo: its analysis database, identity store, data version and what made it."""

    database: Path
    data_version: str
    directory: Path
    summary: dict[str, object]

    @property
    def identity(self) -> Path:
        return self.directory / "identity.duckdb"


def demo_key(seed: int, purpose: str) -> bytes:
    return hashlib.sha256(f"enclave-demo-{purpose}-key:{seed}".encode()).digest()


def _keys_sql(manifest: Manifest, table: str, column: str) -> str:
    """The column's public keys as a DuckDB list literal, so the data always matches the manifest."""
    keys = manifest.tables[table].columns[column].public_keys or ()
    return "[" + ", ".join("'" + str(key).replace("'", "''") + "'" for key in keys) + "]"


# u(stream, a, b): a uniform draw in [0, 1) from the seed, a stream name and a row identity.
_MACROS = """
CREATE MACRO u(stream, a, b) AS ((hash({seed}, stream, a, b) >> 11)::DOUBLE / 9007199254740992.0);
-- pick(weights, x): the 1-based index of the category a uniform x falls in, by relative weights.
CREATE MACRO pick(weights, x) AS list_position(
    list_transform(range(1, len(weights) + 1), lambda k: list_sum(weights[1:k]) > x * list_sum(weights)), true);
"""

_TABLES = """
CREATE TEMP TABLE base AS
SELECT i, person_id,
       2005 + floor(u('birth', i, 0) * 16)::INTEGER AS birth_year,
       ['F', 'M', 'X'][pick([485, 495, 20], u('gender', i, 0))] AS gender,
       pick([15, 70, 150, 300, 5, 380, 80], u('race', i, 0)) AS race_index,
       u('zip', i, 0) AS zip_draw,
       u('district', i, 0) < 0.85 AS in_district,
       u('program', i, 0) < 0.30 AS in_program,
       u('clinic', i, 0) < 0.55 AS in_clinic
FROM (SELECT unnest(range(len(?))) AS i, unnest(?) AS person_id);

-- Pacific Islander children (race index 5) mostly live in one ZIP code, so one school holds a rare group.
CREATE TEMP TABLE people AS
SELECT *,
       CASE WHEN race_index = 5 AND zip_draw < 0.8 THEN 7
            ELSE pick([18, 15, 13, 11, 10, 9, 8, 7, 5, 4], zip_draw) END AS zip_index
FROM base;

CREATE TABLE children AS
SELECT person_id, birth_year, gender,
       {races}[race_index] AS race_ethnicity,
       {zips}[zip_index] AS home_zip
FROM people;

-- Enrolled school years: a contiguous span of the years in which the child's age fits grades K-12.
CREATE TEMP TABLE enrolled AS
SELECT p.*, y AS school_year, y - p.birth_year - 6 AS grade,
       0.25 + 0.45 * (zip_index / 10.0) AS frl_rate
FROM people p, unnest(range(2019, 2025)) t(y)
WHERE p.in_district AND y - p.birth_year - 6 BETWEEN 0 AND 12
  AND y >= 2019 + floor(u('start', p.i, 0) * 3)::INTEGER - 1
  AND y <= 2024 - floor(u('leave', p.i, 0) * 3)::INTEGER + 1;

CREATE TABLE enrollments AS
SELECT person_id, school_year,
       {schools}[CASE
            WHEN u('transfer', i, school_year) < 0.06 THEN 1 + floor(u('other', i, school_year) * 20)::INTEGER
            -- the two largest ZIP codes each split between two elementary schools
            WHEN grade <= 5 THEN CASE WHEN zip_index <= 2 AND u('split', i, 0) < 0.4
                                      THEN 10 + zip_index ELSE zip_index END
            WHEN grade <= 8 THEN 13 + (zip_index - 1) % 5
            WHEN u('academy', i, 0) < 0.1 THEN 20
            ELSE 18 + (zip_index - 1) % 2 END] AS school,
       grade,
       u('frl', i, 0) < frl_rate AS frl_eligible,
       u('iep', i, 0) < 0.13 AS iep,
       days_enrolled,
       least(days_enrolled, floor(-ln(1 - u('absent', i, school_year))
             * CASE WHEN u('chronic', i, 0) < 0.15 THEN 22 ELSE 6 END)::INTEGER) AS days_absent,
       CASE WHEN u('susp', i, school_year) < 0.92 THEN 0
            ELSE least(10, 1 + floor(-ln(1 - u('susp_n', i, school_year)) * 1.5)::INTEGER) END AS suspensions
FROM (SELECT *, CASE WHEN u('partial', i, school_year) < 0.12
                     THEN 20 + floor(u('days', i, school_year) * 150)::INTEGER
                     ELSE 170 + floor(u('days', i, school_year) * 11)::INTEGER END AS days_enrolled
      FROM enrolled);

-- State tests in grades 3-8 and 11, math and ELA; scores fall with FRL eligibility.
CREATE TABLE assessments AS
SELECT person_id, school_year, subject, scale_score, scale_score >= 520 AS proficient
FROM (
    SELECT e.person_id, e.school_year, s.subject,
           least(900, greatest(100, round(500
               + 60 * (u('s1', p.i, e.school_year) + u('s2', p.i, e.school_year)
                       + u('s3', p.i, e.school_year) + u('s4', p.i, 0) - 2) * 1.7
               - CASE WHEN e.frl_eligible THEN 35 ELSE 0 END
               - CASE WHEN e.iep THEN 45 ELSE 0 END
               + CASE WHEN s.subject = 'math' THEN 5 ELSE 0 END))::INTEGER) AS scale_score,
           u('tested', p.i, e.school_year + s.k) AS tested
    FROM enrollments e JOIN people p USING (person_id),
         (VALUES ('math', 0), ('ela', 100)) s(subject, k)
    WHERE e.grade BETWEEN 3 AND 8 OR e.grade = 11
) WHERE tested < 0.95;

CREATE TABLE program_sessions AS
SELECT person_id, school_year,
       {programs}[1 + floor(u('prog', i, school_year * 10 + n) * 5)::INTEGER] AS program,
       least(200, 1 + floor(-ln(1 - u('sessions', i, school_year * 10 + n)) * 35)::INTEGER) AS sessions_attended
FROM people, unnest(range(2019, 2025)) t(school_year), unnest(range(2)) s(n)
WHERE in_program AND school_year - birth_year BETWEEN 5 AND 17
  AND u('attends', i, school_year * 10 + n) < CASE WHEN n = 0 THEN 0.6 ELSE 0.15 END;

CREATE TABLE clinic_visits AS
SELECT person_id, visit_year,
       {visit_types}[pick([40, 35, 10, 15], u('vtype', i, v))] AS visit_type
FROM people, unnest(range(12)) t(v),
     LATERAL (SELECT 2019 + floor(u('vyear', i, v) * 6)::INTEGER AS visit_year)
WHERE in_clinic AND v < 1 + floor(-ln(1 - u('nvisits', i, 0)) * 2.5)::INTEGER
  AND visit_year - birth_year >= 0;
"""

ANALYSIS_TABLES = ("children", "enrollments", "assessments", "program_sessions", "clinic_visits")


def _truth(manifest: Manifest, children: int, seed: int) -> duckdb.DuckDBPyConnection:
    """The true children and their records, keyed by the child's index (never delivered as such)."""
    con = duckdb.connect()
    con.execute(_MACROS.format(seed=int(seed)))
    script = _TABLES.format(
        races=_keys_sql(manifest, "children", "race_ethnicity"),
        zips=_keys_sql(manifest, "children", "home_zip"),
        schools=_keys_sql(manifest, "enrollments", "school"),
        programs=_keys_sql(manifest, "program_sessions", "program"),
        visit_types=_keys_sql(manifest, "clinic_visits", "visit_type"),
    )
    statements = [s for s in script.split(";\n") if s.strip()]
    truth_ids = [str(i) for i in range(children)]
    con.execute(statements[0], [truth_ids, truth_ids])
    for statement in statements[1:]:
        con.execute(statement)
    return con


def contributor_deliveries(manifest: Manifest, children: int, seed: int) -> tuple[dict[str, list[DeliveryFile]],
                                                                                 list[tuple[str, str, int]]]:
    """Each contributor's files (its roster as CSV, its records as Parquet), and the truth of every roster
    row: (contributor, local_id, the true child's index)."""
    with _truth(manifest, children, seed) as con:
        return _deliveries(manifest, con, seed)


def _deliveries(manifest: Manifest, con: duckdb.DuckDBPyConnection, seed: int) -> tuple[dict, list]:
    members: dict[str, set[int]] = {}
    for name, table in manifest.tables.items():
        if name != "children":
            found = {int(p) for (p,) in con.execute(f"SELECT DISTINCT person_id FROM {name}").fetchall()}  # noqa: S608
            members.setdefault(table.contributor, set()).update(found)
    births = con.execute("SELECT person_id::INTEGER, birth_year, gender FROM children ORDER BY 1").fetchall()
    attributes = {int(p): (r, z) for p, r, z in con.execute(
        "SELECT person_id, race_ethnicity, home_zip FROM children").fetchall()}
    rows = rosters(seed, people(seed, births), members)
    files: dict[str, list[DeliveryFile]] = {}
    for contributor in members:
        mine = [r for r in rows if r.contributor == contributor]
        extra = {name: [attributes[r.person][k] for r in mine]
                 for k, name in enumerate(ROSTER_ATTRIBUTES.get(contributor, ()))}
        files[contributor] = [roster_file(contributor, rows, extra)]
    primary: dict[tuple[str, int], str] = {}
    for r in rows:
        primary.setdefault((r.contributor, r.person), r.local_id)
    con.execute("CREATE TEMP TABLE local_ids AS SELECT unnest(?) AS contributor, unnest(?) AS person, "
                "unnest(?) AS local_id",
                [[c for c, _ in primary], [str(p) for _, p in primary], list(primary.values())])
    for name, table in manifest.tables.items():
        if name == "children":
            continue
        columns = ", ".join(f'CAST(t."{c}" AS {spec.type}) AS "{c}"' for c, spec in table.columns.items()
                            if c != manifest.privacy_unit)
        arrow = con.sql(f"""SELECT m.local_id, {columns} FROM {name} t JOIN local_ids m
            ON m.person = t.person_id AND m.contributor = ? ORDER BY m.local_id""",  # noqa: S608
                        params=[table.contributor]).to_arrow_table()
        buffer = io.BytesIO()
        pq.write_table(arrow, buffer)
        files[table.contributor].append(DeliveryFile(name, f"{table.contributor}-{name}.parquet", buffer.getvalue()))
    truth = [(r.contributor, r.local_id, r.person) for r in rows]
    return files, truth


def generate(manifest: Manifest, directory: Path, *, children: int = DEFAULT_CHILDREN,
             seed: int = DEFAULT_SEED) -> DemoData:
    """Generate the deliveries, onboard them into `directory` (atomically), and return the result."""
    scratch = directory.with_name(directory.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    files, truth = contributor_deliveries(manifest, children, seed)
    for contributor, delivered in files.items():  # as a contributor would send them (try `enclave ingest`)
        (scratch / "deliveries" / contributor).mkdir(parents=True)
        for file in delivered:
            (scratch / "deliveries" / contributor / file.name).write_bytes(file.content)
    # the build is named by what it is made of: the generator, its parameters and every delivered file
    made_of = [GENERATOR_VERSION, seed, children, [[f.digest for f in fs] for fs in files.values()]]
    data_version = hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:16]
    store = IdentityStore(scratch / "identity.duckdb", manifest, demo_key(seed, "identity"))
    try:
        with store.transaction() as cursor:
            receipts = [store.load(cursor, contributor, delivered) for contributor, delivered in files.items()]
            linked = store.link(cursor)
            store.set_person_keys(cursor, demo_key(seed, "person"))
            counts = store.build_analysis(cursor, scratch / "analysis.duckdb", data_version)
        quality = against_truth(store, truth)
    finally:
        store.close()
    summary = {
        "generator": GENERATOR_VERSION, "seed": seed, "children": children, "rows": counts,
        "deliveries": [{"contributor": r.contributor, "files": [f.__dict__ for f in r.files]} for r in receipts],
        "linkage": {"threshold": linked.threshold, "records": linked.records, "persons": linked.persons,
                    "seconds": round(linked.seconds, 1), **quality},
    }
    (scratch / "meta.json").write_text(json.dumps({"data_version": data_version, **summary}, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    scratch.replace(directory)
    return _loaded(directory)


def _loaded(directory: Path) -> DemoData:
    meta = json.loads((directory / "meta.json").read_text())
    version = meta.pop("data_version")
    return DemoData(directory / "analysis.duckdb", version, directory, meta)


def ensure_demo(manifest: Manifest, directory: Path, *, children: int = DEFAULT_CHILDREN,
                seed: int = DEFAULT_SEED) -> DemoData:
    """The demo for this size and seed, generated on first use."""
    target = directory / f"demo-{children}-{seed}-v{GENERATOR_VERSION}"
    if (target / "meta.json").exists():
        return _loaded(target)
    return generate(manifest, target, children=children, seed=seed)
