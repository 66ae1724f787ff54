"""The demo dataset: a seeded, deterministic generator for the Riverton collaborative.

Every random draw is a hash of (seed, stream, row identity) computed by DuckDB, so the output is the
same on every machine and thread count for a given seed and size, and 10M+ rows take seconds. The
person key is HMAC-SHA-256 of an internal surrogate under a key derived from the seed (demo only: real
person keys come from record linkage with a key the enclave holds), so a key reveals nothing about the
surrogate order.

The shape is realistic on purpose: children move between schools and years, some appear at only one
contributor, absences are skewed, and a small group (Native Hawaiian or Pacific Islander children) is
concentrated in one school, so suppression and contribution bounds have something to do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from enclave.catalog.manifest import Manifest

GENERATOR_VERSION = 2
DEFAULT_CHILDREN = 50_000
DEFAULT_SEED = 20261121


@dataclass(frozen=True)
class DemoData:
    """Where a generated demo database is, and the data version that identifies its contents."""

    database: Path
    data_version: str


def _person_keys(seed: int, count: int) -> list[str]:
    key = hashlib.sha256(f"enclave-demo-person-key:{seed}".encode()).digest()
    return [hmac.new(key, str(i).encode(), hashlib.sha256).hexdigest()[:32] for i in range(count)]


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


def generate(manifest: Manifest, target: Path, *, children: int = DEFAULT_CHILDREN,
             seed: int = DEFAULT_SEED) -> DemoData:
    """Write the demo database to `target` (atomically) and return it with its data version."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=target.parent, suffix=".duckdb.partial")
    os.close(handle)
    os.unlink(scratch)
    keys = _person_keys(seed, children)
    with duckdb.connect(scratch) as con:
        con.execute(_MACROS.format(seed=int(seed)))
        script = _TABLES.format(
            races=_keys_sql(manifest, "children", "race_ethnicity"),
            zips=_keys_sql(manifest, "children", "home_zip"),
            schools=_keys_sql(manifest, "enrollments", "school"),
            programs=_keys_sql(manifest, "program_sessions", "program"),
            visit_types=_keys_sql(manifest, "clinic_visits", "visit_type"),
        )
        statements = [s for s in script.split(";\n") if s.strip()]
        con.execute(statements[0], [keys, keys])
        for statement in statements[1:]:
            con.execute(statement)
        for table_name, table in manifest.tables.items():  # the manifest's types are the contract
            for column, spec in table.columns.items():
                con.execute(f'ALTER TABLE {table_name} ALTER COLUMN "{column}" TYPE {spec.type}')
        con.execute("DROP MACRO u; DROP MACRO pick")
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ANALYSIS_TABLES}  # noqa: S608
        con.execute("CHECKPOINT")
    data_version = hashlib.sha256(
        json.dumps({"generator": GENERATOR_VERSION, "seed": seed, "children": children, "rows": counts},
                   sort_keys=True).encode()
    ).hexdigest()[:16]
    os.replace(scratch, target)
    _meta_path(target).write_text(json.dumps({"data_version": data_version, "rows": counts}, indent=2))
    return DemoData(target, data_version)


def _meta_path(database: Path) -> Path:
    return database.with_suffix(".meta.json")


def ensure_demo(manifest: Manifest, directory: Path, *, children: int = DEFAULT_CHILDREN,
                seed: int = DEFAULT_SEED) -> DemoData:
    """The demo database for this size and seed, generated on first use."""
    target = directory / f"demo-{children}-{seed}-v{GENERATOR_VERSION}.duckdb"
    meta = _meta_path(target)
    if target.exists() and meta.exists():
        return DemoData(target, json.loads(meta.read_text())["data_version"])
    return generate(manifest, target, children=children, seed=seed)
