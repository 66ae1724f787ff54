"""The bound the build prepares (enclave.catalog.bounding) holds, and the rewrite uses it where it applies.

The same persons as tests/rewrite/test_bounds.py, prepared as a build is: groups first, then rows, so a
person over a bound keeps their largest `max_groups` groups, then their first `max_rows` rows in those
(the finding of issue 14, item 5, stays fixed). Then the whole demo build: every person of every table,
for every prepared set of dimension columns, is within both bounds, and a person within them keeps
every row.
"""

from __future__ import annotations

import dataclasses

import duckdb
import pytest

from enclave.catalog import bounding
from enclave.check import check
from enclave.rewrite import rewrite
from enclave.rewrite.plan import Prepared, build
from tests.rewrite.test_bounds import BY_SCHOOL, PERSONS, Cells, assert_largest_groups_then_rows

SALT = 7


def prepared_build(manifest, salt: int) -> duckdb.DuckDBPyConnection:
    """An in-memory build of the demo's tables holding PERSONS' enrollments, prepared with `salt`."""
    connection = duckdb.connect()
    for name, table in manifest.tables.items():
        columns = ", ".join(f'"{column}" {spec.type}' for column, spec in table.columns.items())
        connection.execute(f'CREATE TABLE "{name}" ({columns})')
    connection.executemany("INSERT INTO enrollments (person_id, school, days_absent) VALUES (?, ?, ?)", [
        (person, school, row) for person, schools in PERSONS.items() for row, school in enumerate(schools)])
    bounding.prepare(connection, manifest, salt)
    return connection


@pytest.fixture(scope="module")
def persons(manifest) -> duckdb.DuckDBPyConnection:
    connection = prepared_build(manifest, SALT)
    yield connection
    connection.close()


def rewritten_tree(sql: str, connection: duckdb.DuckDBPyConnection, rules, manifest):
    return build(rewrite(check(sql, rules, manifest).query, manifest, 0, bounding.read_layout(connection)).plan)


def kept(connection: duckdb.DuckDBPyConnection, rules, manifest) -> Cells:
    """Each person's cells after the bound: the rows the rewritten query's WHERE keeps."""
    where = rewritten_tree(BY_SCHOOL, connection, rules, manifest).args["where"].this.sql("duckdb")
    cells: Cells = {}
    for person, school, n, total in connection.execute(
            "SELECT person_id, school, count(*), sum(days_absent) FROM enrollments AS enrollments "
            f"WHERE {where} GROUP BY ALL").fetchall():
        cells.setdefault(person, {})[school] = (n, total)
    return cells


SHAPES = {
    "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school": Prepared("_1", firsts=True),
    "SELECT school, COUNT(*) AS n FROM enrollments WHERE grade > 3 GROUP BY school": Prepared("_1", firsts=False),
    "SELECT grade, school, AVG(days_absent) AS a FROM enrollments GROUP BY grade, school": Prepared("_1_2", True),
    "SELECT school_year >= 2021 AS late, COUNT(*) AS n FROM enrollments GROUP BY school_year >= 2021":
        Prepared("_0", firsts=False),
    "SELECT COUNT(*) AS n, SUM(days_absent) AS s FROM enrollments": Prepared("", firsts=True),
    "SELECT school_year, school, grade, COUNT(*) AS n FROM enrollments GROUP BY 1, 2, 3": None,  # three columns
    "SELECT e.school, COUNT(*) AS n FROM enrollments e JOIN assessments a ON e.person_id = a.person_id "
    "GROUP BY e.school": None,  # a join: bounded per query (rewrite.plan._bounded)
}


@pytest.mark.parametrize(("sql", "expected"), SHAPES.items(), ids=list(SHAPES))
def test_the_rewrite_takes_the_prepared_bound_where_it_applies(persons, rules, manifest, sql, expected):
    plan = rewrite(check(sql, rules, manifest).query, manifest, 0, bounding.read_layout(persons)).plan
    assert plan.bounds is not None
    assert plan.bounds.prepared == expected


def test_a_build_prepared_for_other_bounds_is_not_used(persons, rules, manifest):
    layout = bounding.read_layout(persons)
    other = dataclasses.replace(layout, bounds=layout.bounds.model_copy(update={"max_rows_per_unit": 11}))
    rewritten = rewrite(check(BY_SCHOOL, rules, manifest).query, manifest, 0, other)
    assert rewritten.plan.bounds.prepared is None
    assert '"__r_1"' not in rewritten.sql
    assert '"__row_order"' in rewritten.sql  # bounded per query instead


def test_a_person_over_a_bound_keeps_their_largest_groups_then_rows(persons, rules, manifest):
    assert_largest_groups_then_rows(kept(persons, rules, manifest), manifest.contribution_bounds)


def test_the_finding_rows_cut_before_groups_kept_too_few(persons, rules, manifest):
    """Issue 14, item 5: 60 rows in 20 groups kept ~7 rows when the row cut came before the group cut."""
    cells = kept(persons, rules, manifest)
    assert sum(n for n, _ in cells["spread"].values()) == 12
    assert len(cells["spread"]) <= 6
    assert cells["skewed"]["big"][0] == 5
    assert sum(n for n, _ in cells["skewed"].values()) == 10
    assert len(cells["skewed"]) == 6
    assert None in cells["nulls"]  # a NULL key is a group, and the largest here


def test_persons_within_the_bounds_keep_every_cell(persons, rules, manifest):
    cells = kept(persons, rules, manifest)
    for person in ("full", "small"):
        plain_cells = persons.execute("SELECT school, count(*), sum(days_absent) FROM enrollments "
                                      "WHERE person_id = ? GROUP BY school", [person]).fetchall()
        assert cells[person] == {school: (n, s) for school, n, s in plain_cells}


def test_the_salt_chooses_the_rows_not_how_many(persons, rules, manifest):
    with prepared_build(manifest, SALT) as again, prepared_build(manifest, SALT + 1) as other:
        first, repeated, salted = (kept(c, rules, manifest) for c in (persons, again, other))
    assert first == repeated  # the same build salt keeps the same rows
    assert first != salted  # another chooses other rows of the persons over the bound...
    for person in PERSONS:  # ... and as many of them
        assert sum(n for n, _ in first[person].values()) == sum(n for n, _ in salted[person].values())


@pytest.mark.parametrize("sql", [
    BY_SCHOOL,
    "SELECT school, COUNT(*) AS n, COUNT(DISTINCT person_id) AS p FROM enrollments WHERE days_absent > 2 "
    "GROUP BY school",
])
def test_a_groups_persons_are_the_persons_of_its_kept_rows(persons, rules, manifest, sql):
    """The first-row marks (no WHERE) and the distinct surrogates (a WHERE) both count a group's persons."""
    tree = rewritten_tree(sql, persons, rules, manifest)
    where = tree.args["where"].this.sql("duckdb")
    released = persons.execute(f'SELECT school, "__units" FROM ({tree.sql("duckdb")}) ORDER BY ALL').fetchall()
    reference = persons.execute("SELECT school, count(DISTINCT person_id) FROM enrollments AS enrollments "
                                f"WHERE {where} GROUP BY ALL ORDER BY ALL").fetchall()
    assert released == reference
    assert len(released) > 6


def test_every_person_of_the_demo_build_is_within_the_prepared_bounds(plain, manifest):
    """Every table and prepared set of the demo: at most R rows in at most G groups a person, a group's
    first-row marks are its persons, and a person within both bounds keeps every row."""
    layout = bounding.read_layout(plain)
    assert layout == bounding.layout_of(manifest)
    rows, groups = manifest.contribution_bounds.max_rows_per_unit, manifest.contribution_bounds.max_groups_per_unit
    unit = manifest.privacy_unit
    checked = 0
    for table, names in layout.tables.items():
        for positions in bounding.sets(len(names)):
            s = bounding.suffix(positions)
            by = ", ".join(f'"{names[p]}"' for p in positions)
            group = f"row({by})" if by else "1"  # a struct: a NULL key is a group of its own
            worst = plain.execute(
                f'SELECT max(n), max(g) FROM (SELECT {unit}, count(*) AS n, '
                f'count(DISTINCT {group}) AS g FROM "{table}" WHERE "__r{s}" <= {rows} '
                f"GROUP BY {unit})").fetchone()
            assert worst[0] <= rows, (table, s)
            assert worst[1] <= groups, (table, s)
            firsts = plain.execute(
                f'SELECT count(*) FROM (SELECT {unit}, {by or "1"}, sum("__f{s}") AS f FROM "{table}" '
                f'WHERE "__r{s}" <= {rows} GROUP BY ALL) WHERE f <> 1').fetchone()[0]
            assert firsts == 0, (table, s)
            cut = plain.execute(
                f'SELECT count(*) FROM "{table}" WHERE {unit} IN (SELECT {unit} FROM "{table}" GROUP BY {unit} '
                f'HAVING count(*) <= {rows} AND count(DISTINCT {group}) <= {groups}) '
                f'AND ("__r{s}" IS NULL OR "__r{s}" > {rows})').fetchone()[0]
            assert cut == 0, (table, s)
            checked += 1
    assert checked > 30
