"""Post-processing SQL never reaches the engine: the executed SQL computes each aggregate a derived column
or HAVING uses (hidden ones under their own names), and no HAVING, arithmetic between aggregates or ORDER BY."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from enclave.check import check
from enclave.rewrite import rewrite

SQL = ("SELECT school_year, COUNT(*) AS n, 100.0 * SUM(suspensions) / COUNT(*) AS rate FROM enrollments "
       "GROUP BY school_year HAVING AVG(days_absent) > 10 AND rate < 5 ORDER BY rate DESC LIMIT 2")


def test_the_executed_sql_computes_the_aggregates_and_nothing_after_them(rules, manifest):
    rewritten = rewrite(check(SQL, rules, manifest).query, manifest, 7)
    assert [(m.name, m.function) for m in rewritten.plan.measures if m.part in ("value", "sum")] == [
        ("n", "count"), ("__h0", "sum"), ("__h1__sum", "sum")]  # SUM(suspensions), and AVG(days_absent)'s sum
    executed = sqlglot.parse_one(rewritten.sql, read="duckdb")
    clauses = ("having", "order", "limit")
    assert not any(select.args.get(clause) for select in executed.find_all(exp.Select) for clause in clauses)
    names = [item.alias for item in executed.expressions]
    assert {"n", "__h0", "__h1__sum"} <= set(names)
    assert "rate" not in names
    assert not any(isinstance(item.this, exp.Div | exp.Mul) for item in executed.expressions)
