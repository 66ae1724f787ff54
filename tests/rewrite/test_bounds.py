"""The contribution bound holds, and the cell-first rewrite equals windows applied to every person.

The query below joins enrollments to assessments, so many persons have far more than 12 joined rows
and more than 6 groups: both the fast path (persons within the bounds) and the windowed path are used.
"""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from enclave.check import check
from enclave.rewrite import rewrite
from enclave.rewrite.plan import build

SALT = 7
SQL = ("SELECT a.subject, e.grade, COUNT(*) AS n, SUM(e.days_absent) AS s, COUNT(DISTINCT e.person_id) AS p "
       "FROM enrollments e JOIN assessments a ON e.person_id = a.person_id GROUP BY 1, 2")


@pytest.fixture(scope="module")
def tree(rules, manifest):
    return build(rewrite(check(SQL, rules, manifest).query, manifest, SALT).plan)


def ctes(tree: exp.Select) -> str:
    return tree.args["with_"].sql("duckdb")


def test_no_person_contributes_more_than_the_bounds(plain, tree, manifest):
    bounds = manifest.contribution_bounds
    per_person = plain.execute(
        f'{ctes(tree)} SELECT max(n), max(g), count(*) FROM (SELECT "__unit", sum("__n") AS n, count(*) AS g '
        'FROM "__bounded" GROUP BY "__unit")').fetchone()
    assert per_person[0] == bounds.max_rows_per_unit
    assert per_person[1] <= bounds.max_groups_per_unit
    over = plain.execute(f'{ctes(tree)} SELECT count(DISTINCT "__unit") FROM "__over_rows"').fetchone()[0]
    assert over > 1000  # the windowed path is really exercised


def test_cells_first_equals_windows_over_everyone(plain, tree, manifest):
    bounds = manifest.contribution_bounds
    rows = next(c for c in tree.args["with_"].expressions if c.alias == "__rows").this.sql("duckdb")
    reference = f"""
        WITH "__rows" AS ({rows}),
        b AS (SELECT * FROM "__rows" QUALIFY row_number() OVER (PARTITION BY "__unit"
              ORDER BY "__row_order", "__r0", "__r1") <= {bounds.max_rows_per_unit}),
        g AS (SELECT * FROM b QUALIFY dense_rank() OVER (PARTITION BY "__unit"
              ORDER BY hash({SALT}, "__unit", "__k0", "__k1"), "__k0", "__k1") <= {bounds.max_groups_per_unit})
        SELECT "__k0", "__k1", count(*), sum("__a1"), count(DISTINCT "__unit"), count(DISTINCT "__unit")
        FROM g GROUP BY ALL ORDER BY ALL"""
    rewritten = f"SELECT * FROM ({tree.sql('duckdb')}) ORDER BY ALL"
    assert plain.execute(rewritten).fetchall() == plain.execute(reference).fetchall()


def test_the_choice_of_rows_is_fixed_by_the_salt(plain, rules, manifest):
    def result(salt: int):
        sql = rewrite(check(SQL, rules, manifest).query, manifest, salt).sql
        return plain.execute(f"SELECT * FROM ({sql}) ORDER BY ALL").fetchall()

    assert result(SALT) == result(SALT)
    assert result(SALT) != result(SALT + 1)  # another salt chooses other rows of the persons over the bound
    assert sqlglot.parse_one(rewrite(check(SQL, rules, manifest).query, manifest, SALT).sql, read="duckdb")
