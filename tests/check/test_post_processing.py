"""Post-processing SQL in the checked query: derived columns, hidden aggregates and HAVING, and the rules'
switch that turns them off (`post_processing`)."""

from __future__ import annotations

import pytest

from enclave.check import check
from enclave.check.query import AggregateColumn, DerivedColumn, KeyColumn


def checked(sql: str, rules, manifest):
    result = check(sql, rules, manifest)
    assert result.accepted, [v.to_dict() for v in result.violations]
    return result.query


def test_a_derived_column_names_the_aggregates_it_uses(rules, manifest):
    query = checked("SELECT school_year, count(*) AS n, round(100.0 * sum(suspensions) / count(*), 2) AS rate "
                    "FROM enrollments GROUP BY school_year ORDER BY rate DESC", rules, manifest)
    rate = query.columns[2]
    assert [type(c) for c in query.columns] == [KeyColumn, AggregateColumn, DerivedColumn]
    assert rate.digits == 2
    assert rate.expr.sql("duckdb") == '100.0 * "__h0" / "n"'  # COUNT(*) is the released n, unrounded
    (hidden,) = query.hidden
    assert (hidden.name, hidden.function, hidden.hidden, hidden.bounds) == ("__h0", "sum", True, (0.0, 10.0))
    assert [c.name for c in query.aggregates] == ["n", "__h0"]  # what the rewrite computes and noises
    assert query.order == ((2, True),)


def test_a_rounded_aggregate_is_not_what_a_derived_column_divides_by(rules, manifest):
    query = checked("SELECT round(count(*), -1) AS n, sum(days_absent) / count(*) AS r FROM enrollments",
                    rules, manifest)
    assert query.columns[1].expr.sql("duckdb") == '"__h0" / "__h1"'
    assert [(c.name, c.function) for c in query.hidden] == [("__h0", "sum"), ("__h1", "count")]


def test_having_names_aggregates_aliases_and_keys_by_column(rules, manifest):
    query = checked("SELECT school, count(*) AS n, avg(days_absent) - avg(days_enrolled) AS gap FROM enrollments "
                    "GROUP BY school HAVING n > 20 AND school <> 'x' AND round(gap, 1) IS NOT NULL "
                    "AND avg(days_absent) BETWEEN 1 AND sum(suspensions)", rules, manifest)
    assert query.having.sql("duckdb") == ('"n" > 20 AND "school" <> \'x\' AND NOT ROUND("__h0" - "__h1", 1) IS NULL '
                                          'AND "__h0" BETWEEN 1 AND "__h2"')
    assert [(c.name, c.function) for c in query.hidden] == [("__h0", "avg"), ("__h1", "avg"), ("__h2", "sum")]
    assert "HAVING" in query.canonical_sql  # said in the canonical SQL; never executed (the rewrite drops it)


def test_a_query_without_post_processing_has_none(rules, manifest):
    query = checked("SELECT school, count(*) AS n FROM enrollments GROUP BY school", rules, manifest)
    assert (query.hidden, query.having, query.derived) == ((), None, ())


@pytest.mark.parametrize(("sql", "code", "token"), [
    ("SELECT school, count(*) AS n FROM enrollments GROUP BY school HAVING n > 5", "having_not_allowed",
     "n > 5"),
    ("SELECT sum(days_absent) / count(*) AS r FROM enrollments", "output_not_aggregate",
     "sum(days_absent) / count(*)"),
])
def test_rules_without_post_processing_refuse_it(rules, manifest, sql, code, token):
    strict = rules.model_copy(update={"post_processing": []})
    violations = check(sql, strict, manifest).violations
    assert {(v.code, v.highlight) for v in violations} == {(code, token)}
