"""Every released number is the right one (invariant 12): true aggregates of join shapes against plain DuckDB.

The enclave's un-noised aggregates (`execute_unprotected`, the protection stage's input) are compared with
the same SQL run by a plain DuckDB connection on a copy of the demo database. These shapes stay within
the demo's contribution bounds, so the bounded answer must equal the plain one exactly.
"""

from __future__ import annotations

import duckdb
import pytest

from enclave.pipeline import Enclave


def true_values(enclave: Enclave, sql: str) -> tuple[object, ...]:
    prepared = enclave.prepare("demo", sql)
    assert prepared.rewritten is not None, [v.code for v in prepared.result.violations]
    (row,) = enclave.execute_unprotected("demo", prepared.rewritten).rows
    return row[:-1]  # the last column is the enclave's own count of persons


DISTINCT_PERSONS = {
    # the finding: every distinct-person count was computed on the first table
    "left_join_second_table": "SELECT COUNT(DISTINCT e.person_id), COUNT(DISTINCT c.person_id) "
                              "FROM enrollments e LEFT JOIN clinic_visits c ON c.person_id = e.person_id",
    "left_join_using": "SELECT COUNT(DISTINCT person_id), COUNT(DISTINCT c.person_id) "
                       "FROM children LEFT JOIN clinic_visits c USING (person_id)",
    "two_left_joins": "SELECT COUNT(DISTINCT ch.person_id), COUNT(DISTINCT p.person_id), COUNT(DISTINCT c.person_id) "
                      "FROM children ch LEFT JOIN program_sessions p ON p.person_id = ch.person_id "
                      "LEFT JOIN clinic_visits c ON c.person_id = ch.person_id",
    "inner_join": "SELECT COUNT(DISTINCT e.person_id), COUNT(DISTINCT c.person_id) "
                  "FROM enrollments e JOIN clinic_visits c ON c.person_id = e.person_id",
    "left_join_filtered": "SELECT COUNT(DISTINCT c.person_id), COUNT(DISTINCT ch.person_id) FROM children ch "
                          "LEFT JOIN clinic_visits c ON c.person_id = ch.person_id WHERE ch.gender = 'F'",
}


@pytest.mark.parametrize("sql", DISTINCT_PERSONS.values(), ids=DISTINCT_PERSONS.keys())
def test_distinct_persons_of_each_joined_table_are_exact(enclave: Enclave, plain: duckdb.DuckDBPyConnection,
                                                         sql: str) -> None:
    expected = plain.execute(sql).fetchone()
    assert true_values(enclave, sql) == expected
    if "LEFT JOIN" in sql:  # the tables' persons differ, so a count taken on the wrong table fails
        assert len(set(expected)) > 1
