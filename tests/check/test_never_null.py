"""Which AVG arguments the check knows have a value on every row (check.bounds.never_null): those let the
plan divide by COUNT(*) instead of noising a COUNT(x) of their own, so a wrong "never NULL" would bias
a mean. Each case is checked against DuckDB on the demo: a never-NULL argument has no NULL there."""

from __future__ import annotations

import pytest

from enclave.check import check

NEVER_NULL = [
    "AVG(days_absent)",
    "AVG(days_absent + suspensions * 2)",
    "AVG(CASE WHEN iep THEN 1 ELSE 0 END)",
    "AVG(COALESCE(days_absent, 0))",
    "AVG(ABS(days_absent - 90))",
]
MAYBE_NULL = [
    "AVG(CASE WHEN iep THEN days_absent END)",  # no ELSE
    "AVG(days_absent / 2)",  # a division: DuckDB's x / 0 is NULL
    "AVG(CASE WHEN iep THEN days_absent ELSE NULL END)",  # a NULL branch
    "AVG(TRY_CAST(days_absent AS INTEGER))",
    "AVG(grade)",  # a column not declared nullable: false
]


def never_null(sql_aggregate: str, rules, manifest) -> bool:
    result = check(f"SELECT school, {sql_aggregate} AS m FROM enrollments GROUP BY school", rules, manifest)
    assert result.accepted, [v.to_dict() for v in result.violations]
    return result.query.aggregates[0].never_null


@pytest.mark.parametrize("aggregate", NEVER_NULL)
def test_never_null_arguments_are_known(aggregate, rules, manifest):
    assert never_null(aggregate, rules, manifest)


@pytest.mark.parametrize("aggregate", MAYBE_NULL)
def test_arguments_that_may_be_null_are_not_assumed_present(aggregate, rules, manifest):
    assert not never_null(aggregate, rules, manifest)


def test_a_left_joined_column_may_be_null(rules, manifest):
    sql = ("SELECT c.gender, AVG(p.sessions_attended) AS s, AVG(e.days_absent) AS a FROM children c "
           "LEFT JOIN program_sessions p ON c.person_id = p.person_id "
           "JOIN enrollments e ON c.person_id = e.person_id GROUP BY c.gender")
    result = check(sql, rules, manifest)
    assert result.accepted, [v.to_dict() for v in result.violations]
    assert [a.never_null for a in result.query.aggregates] == [False, True]
