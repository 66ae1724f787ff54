"""Every released statistic is the right one (invariant 12): each statistic computed from its quantities'
true values (the protection stage's input, without noise) against plain DuckDB on the demo.

A statistic of several quantities (a mean, a variance, a quantile read off a histogram) is computed by
`disclosure.statistics.estimate` from the same vectors `protect` adds noise to (`protect.true_vector`),
so with no noise it must give DuckDB's own answer: to floating-point rounding for means and variances,
exactly for a quantile of an integer measure (its grid has a bin per integer). DuckDB's answer is on the
rows the contribution bound keeps (`tests.exact.on_kept_rows`).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from enclave.disclosure.protect import _shaped, true_vector
from enclave.disclosure.statistics import estimate
from enclave.pipeline import Enclave
from tests.exact import on_kept_rows

# School years in which every demo child's rows are within the bounds (a test below says so); the bound cuts a
# person's rows over all years, so the reference is DuckDB's on the rows it keeps (tests.exact.on_kept_rows).
YEARS = "WHERE school_year >= 2021"
TESTED_YEARS = "WHERE school_year >= 2023"
QUERIES = {
    "mean": f"SELECT school, AVG(days_absent) AS m FROM enrollments {YEARS} GROUP BY school",
    "rate": f"SELECT school_year, AVG(CASE WHEN suspensions > 0 THEN 1 ELSE 0 END) AS m FROM enrollments {YEARS} "
            "GROUP BY school_year",
    "mean_of_a_nullable_case": f"SELECT grade, AVG(CASE WHEN iep THEN days_absent END) AS m FROM enrollments "
                               f"{YEARS} GROUP BY grade",
    "variances": f"SELECT school_year, VAR_POP(days_absent) AS a, VAR_SAMP(days_absent) AS b, "
                 f"STDDEV_POP(days_enrolled) AS c, STDDEV_SAMP(days_enrolled) AS d FROM enrollments {YEARS} "
                 "GROUP BY school_year",
    "median": f"SELECT school_year, MEDIAN(days_absent) AS m FROM enrollments {YEARS} GROUP BY school_year",
    "quantiles": f"SELECT subject, QUANTILE_CONT(scale_score, 0.1) AS a, QUANTILE_CONT(scale_score, 0.9) AS b, "
                 f"MEDIAN(scale_score) AS c FROM assessments {TESTED_YEARS} GROUP BY subject",
    "mean_and_spread_together": f"SELECT iep, COUNT(*) AS n, AVG(days_absent) AS m, STDDEV_SAMP(days_absent) AS s, "
                                f"MEDIAN(days_absent) AS q FROM enrollments {YEARS} GROUP BY iep",
}


@pytest.mark.parametrize(("table", "years"), [("enrollments", YEARS), ("assessments", TESTED_YEARS)])
def test_the_queries_stay_within_the_contribution_bounds(plain: duckdb.DuckDBPyConnection, manifest,
                                                          table: str, years: str) -> None:
    bounds = manifest.contribution_bounds
    rows, groups = plain.execute(f"SELECT max(n), max(g) FROM (SELECT person_id, count(*) AS n, count(DISTINCT "
                                 f"school_year) AS g FROM {table} {years} GROUP BY person_id)").fetchone()
    assert rows <= bounds.max_rows_per_unit
    assert groups <= bounds.max_groups_per_unit


def statistics_without_noise(enclave: Enclave, sql: str) -> dict[tuple, tuple]:
    prepared = enclave.prepare("demo", sql)
    assert prepared.rewritten is not None, [v.code for v in prepared.result.violations]
    rewritten = prepared.rewritten
    plan = enclave.plan("demo", rewritten, 1.0)
    raw = enclave.execute_unprotected("demo", rewritten)
    width = len(rewritten.checked.keys)
    groups = [tuple(row[:width]) for row in raw.rows]
    true = {q.column: _shaped(np.array(true_vector(raw, width, q, groups), dtype=float), q, len(groups)) / q.unit
            for q in plan.quantities}
    columns = {c.name: estimate(c, plan, true) for c in rewritten.checked.aggregates}
    return {group: tuple(float(columns[c.name][i]) for c in rewritten.checked.aggregates)
            for i, group in enumerate(groups)}


@pytest.mark.parametrize("sql", QUERIES.values(), ids=QUERIES.keys())
def test_each_statistic_without_noise_is_duckdbs(enclave: Enclave, plain: duckdb.DuckDBPyConnection,
                                                 sql: str) -> None:
    found = statistics_without_noise(enclave, sql)
    expected = {tuple(row[:1]): tuple(float(v) for v in row[1:])
                for row in plain.execute(on_kept_rows(enclave, sql)).fetchall()}
    assert found.keys() == expected.keys()
    for group, values in expected.items():
        assert found[group] == pytest.approx(values, rel=1e-9, abs=1e-9), group
