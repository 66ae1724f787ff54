"""Attacks found by red-teaming the pipeline; each test fails if its hole reopens.

The target is one child singled out by a combination only they have (a quasi-identifier, QI).
"""

from __future__ import annotations

import pytest

from enclave.budget.ledger import grant
from enclave.check import check
from enclave.pipeline import QueryError

QI = "c.birth_year = 2005 AND c.gender = 'F' AND c.home_zip = '99101'"


@pytest.fixture
def enclave(fresh_enclave):
    with fresh_enclave.audit.transaction() as tx:
        grant(tx, "steward", "mallory", "demo", 100.0, 1e-3, purpose="attack")
    return fresh_enclave


@pytest.mark.parametrize("alias", ["v__sum", "v__count", "__units", "x__y"])
def test_an_output_name_cannot_collide_with_the_enclaves_own(alias, rules, manifest):
    sql = (f"SELECT SUM(CASE WHEN {QI} AND e.frl_eligible THEN 1000000000 ELSE 0 END) AS {alias}, "
           "AVG(CASE WHEN e.iep THEN 0.000001 ELSE 0 END) AS v "
           "FROM children c JOIN enrollments e ON c.person_id = e.person_id")
    assert {v.code for v in check(sql, rules, manifest).violations} == {"reserved_name"}


def test_a_table_alias_cannot_take_a_reserved_name(rules, manifest):
    result = check("SELECT COUNT(*) FROM enrollments AS __rows", rules, manifest)
    assert [v.code for v in result.violations] == ["reserved_name"]


@pytest.mark.parametrize("argument", [
    "CAST(e.days_absent AS DECIMAL(38,37))",
    "e.days_absent * 1.0000000000000000000000000000000000001",
    "-CAST(e.days_absent AS DECIMAL(38,37))",
])
def test_the_clamp_cannot_be_made_to_fail_only_when_a_row_reaches_it(enclave, argument):
    """The clamp compares an exact DECIMAL(38, 6), so a wide decimal argument cannot raise there."""
    for condition in ("e.frl_eligible", "e.iep", "e.days_absent > 20", "e.days_absent > 500"):
        sql = (f"SELECT SUM({argument}) AS v FROM children c JOIN enrollments e ON c.person_id = e.person_id "
               f"WHERE {QI} AND {condition}")
        prepared = enclave.prepare("demo", sql)
        if prepared.rewritten is None:  # refused before anything ran: the same for every condition
            assert {v.code for v in prepared.result.violations} <= {"unbounded_aggregate", "type_mismatch"}
            continue
        enclave.execute_unprotected("demo", prepared.rewritten)  # runs whichever rows match


def test_the_number_of_groups_cannot_be_tipped_by_one_person(enclave):
    """Keys without a public set need a bounded domain known in advance, so the group cap cannot fire."""
    key = "((e.days_enrolled * 200 + e.days_absent) * 20 + e.suspensions) * 20 + e.grade"
    sql = (f"SELECT CASE WHEN {QI} THEN CASE WHEN e.iep THEN -1 ELSE 1600007 END ELSE {key} END AS k, "
           f"COUNT(*) AS n FROM children c JOIN enrollments e ON c.person_id = e.person_id "
           f"WHERE {key} < 14173203 OR ({QI}) GROUP BY 1")
    with pytest.raises(QueryError) as refused:
        enclave.query("mallory", "demo", sql, 0.1)
    assert refused.value.code == "unbounded_group_keys"
    assert [r["event"] for r in enclave.audit.records()][-1] == "query.refused"  # before any charge
    bounded = enclave.query("mallory", "demo", "SELECT days_absent, COUNT(*) AS n FROM enrollments GROUP BY 1", 0.1)
    assert 0 < len(bounded.rows) <= 181


def test_rounding_digits_are_bounded(rules, manifest):
    result = check("SELECT ROUND(COUNT(*), -100000000) AS n FROM enrollments", rules, manifest)
    assert [(v.code, v.highlight) for v in result.violations] == [("derived_not_allowed", "100000000")]
    derived = check("SELECT ROUND(COUNT(*) / 2, 100000000) AS n FROM enrollments", rules, manifest)
    assert [(v.code, v.highlight) for v in derived.violations] == [("derived_not_allowed", "100000000")]
    assert check("SELECT ROUND(COUNT(*), -3) AS n FROM enrollments", rules, manifest).accepted
