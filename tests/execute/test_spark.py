"""The Spark engine against the DuckDB sandbox: the probe suite of every construct Spark accepts.

One SparkSession for the module, on a small demo (2,000 children). Each probe query is checked and
rewritten by the real stages, then run on both engines; the exact (pre-noise) aggregates must be
identical. The probes run the rewrite without the two bounding rules: a bound made per query orders
rows by DuckDB's hash() and rowid, which Spark refuses (`test_refused_constructs`); the bound the build
prepared (one table, at most two dimension keys) is plain filters, run whole on both engines
(`test_the_prepared_bound_is_identical_on_both_engines`). Every other construct is the one Spark runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.catalog.demo import ensure_demo
from enclave.catalog.manifest import Manifest
from enclave.check import check
from enclave.execute.sandbox import ExecutionError, Sandbox
from enclave.execute.spark import SparkEngine
from enclave.policy import Rules
from enclave.rewrite import RewrittenQuery, rewrite
from enclave.rewrite import plan as plan_module
from enclave.rewrite.plan import render
from enclave.rewrite.rules import RULES, RewriteContext, bound_contributions, bound_tables_before_joins

pytestmark = pytest.mark.spark

PROBES = {
    "count_sum": "SELECT school, COUNT(*) AS n, SUM(days_absent) AS s FROM enrollments GROUP BY school",
    "avg_where": "SELECT grade, AVG(days_absent) AS m FROM enrollments WHERE school_year >= 2021 GROUP BY grade",
    "case_count": "SELECT school_year, COUNT(CASE WHEN suspensions > 0 THEN 1 END) AS n FROM enrollments "
                  "GROUP BY school_year",
    "between_in_like": "SELECT COUNT(*) AS n FROM enrollments WHERE days_absent BETWEEN 3 AND 20 "
                       "AND grade IN (1, 2, 3) AND school LIKE '%a%'",
    "null_safe_is_null": "SELECT iep, COUNT(*) AS n FROM enrollments WHERE iep IS NOT NULL GROUP BY iep",
    "arithmetic": "SELECT COUNT(*) AS n, SUM(days_absent * 2 + 1) AS s FROM enrollments "
                  "WHERE days_absent - 3 * grade > -10",
    "coalesce_nullif": "SELECT COUNT(CASE WHEN COALESCE(NULLIF(days_absent, 0), 1) > 2 THEN 1 END) AS n "
                       "FROM enrollments WHERE -(days_absent - 5) < 4",
    "floor_ceil_cast": "SELECT FLOOR(CAST(days_absent AS DOUBLE) * 0.5) AS w, CEIL(days_absent * 0.25) AS c, "
                       "COUNT(*) AS n FROM enrollments GROUP BY w, c",
    "lower_upper": "SELECT LOWER(school) AS s, COUNT(*) AS n FROM enrollments GROUP BY LOWER(school)",
    "variance": "SELECT school_year, VAR_POP(days_absent) AS v FROM enrollments GROUP BY school_year",
    "failed_cast": "SELECT COUNT(*) AS n FROM enrollments WHERE CAST(school AS INTEGER) IS NULL",
    "overflow": "SELECT COUNT(*) AS n FROM enrollments WHERE days_absent * 9223372036854775807 * 2 IS NULL",
    "overflow_in_a_key": "SELECT grade + 9223372036854775800 AS g, COUNT(*) AS n FROM enrollments "
                         "GROUP BY grade + 9223372036854775800",
    "null_keys": "SELECT iep, grade, COUNT(*) AS n FROM enrollments GROUP BY iep, grade",
    "join": "SELECT e.school_year, COUNT(*) AS n FROM enrollments AS e JOIN assessments AS a "
            "ON e.person_id = a.person_id GROUP BY e.school_year",
}


@pytest.fixture(scope="module")
def engines(manifest: Manifest, rules: Rules, tmp_path_factory: pytest.TempPathFactory):
    data = ensure_demo(manifest, tmp_path_factory.mktemp("spark-demo"), children=2000)
    groups = rules.limits.max_output_groups
    duck = Sandbox(data.database, rules.execution, groups)
    spark = SparkEngine(data.database, rules.execution, groups)
    yield duck, spark
    duck.close()
    spark.close()


def unbounded(sql: str, manifest: Manifest, rules: Rules, consent: bool = False) -> RewrittenQuery:
    """The real rewrite without the bounding rules (see the module docstring)."""
    result = check(sql, rules, manifest)
    assert result.accepted, [v.code for v in result.violations]
    ctx = RewriteContext(manifest.contribution_bounds, 12345, consent or manifest.consent_required)
    plan = plan_module.plan_of(result.query)
    for rule in RULES:
        if rule not in (bound_tables_before_joins, bound_contributions):
            plan = rule(plan, ctx)
    return RewrittenQuery(render(plan), plan, result.query)


def canonical(rows: tuple[tuple[object, ...], ...]) -> list[tuple[object, ...]]:
    return sorted(rows, key=repr)


@pytest.mark.parametrize("sql", PROBES.values(), ids=PROBES.keys())
def test_probe_is_identical_on_both_engines(engines, manifest: Manifest, rules: Rules, sql: str) -> None:
    duck, spark = engines
    rewritten = unbounded(sql, manifest, rules)
    expected = duck.execute(duck.sql_of(rewritten))
    spark_sql = spark.sql_of(rewritten)
    spark.bind(spark_sql)
    found = spark.execute(spark_sql)
    assert found.columns == expected.columns
    assert canonical(found.rows) == canonical(expected.rows)


def test_the_consent_snapshot_restricts_both_engines_alike(engines, manifest: Manifest, rules: Rules) -> None:
    duck, spark = engines
    persons = [p for (p,) in duck.execute("SELECT person_id FROM enrollments GROUP BY person_id "
                                          "ORDER BY person_id LIMIT 300").rows]
    rewritten = unbounded("SELECT school, COUNT(*) AS n FROM enrollments AS e JOIN assessments AS a "
                          "ON e.person_id = a.person_id GROUP BY school", manifest, rules, consent=True)
    expected = duck.execute(duck.sql_of(rewritten), persons)
    found = spark.execute(spark.sql_of(rewritten), persons)
    assert canonical(found.rows) == canonical(expected.rows)
    assert sum(row[1] for row in found.rows) > 0


REFUSED = {
    "bounded_shape": "SELECT COUNT(*) AS n FROM enrollments",  # bounded per query (no layout): hash() and rowid
    "median_histogram": "SELECT MEDIAN(days_absent) AS m FROM enrollments",  # list / list_aggregate
    "abs": "SELECT COUNT(*) AS n FROM enrollments WHERE ABS(days_absent) > 3",
    "arithmetic_in_a_lazy_branch": "SELECT COUNT(CASE WHEN grade > 0 THEN grade * 2 END) AS n FROM enrollments",
    "division": "SELECT COUNT(*) AS n FROM enrollments WHERE days_absent / 0 IS NULL",  # DuckDB: inf, not NULL
    "date_diff": "SELECT COUNT(*) AS n FROM enrollments "
                 "WHERE date_diff('year', DATE '2020-01-01', DATE '2021-06-01') > 0",
}


@pytest.mark.parametrize("sql", REFUSED.values(), ids=REFUSED.keys())
def test_refused_constructs(engines, manifest: Manifest, rules: Rules, sql: str) -> None:
    _, spark = engines
    result = check(sql, rules, manifest)
    assert result.accepted, [v.code for v in result.violations]
    rewritten = rewrite(result.query, manifest, 12345)
    with pytest.raises(ExecutionError) as refused:
        spark.sql_of(rewritten)
    assert refused.value.code == "engine_unsupported"


def test_timeout_and_errors_are_safe_codes(engines, manifest: Manifest, rules: Rules) -> None:
    _, spark = engines
    rewritten = unbounded("SELECT e.school, COUNT(*) AS n FROM enrollments AS e JOIN enrollments AS f "
                          "ON e.person_id = f.person_id JOIN enrollments AS g ON e.person_id = g.person_id "
                          "GROUP BY e.school", manifest, rules)
    with pytest.raises(ExecutionError) as late:
        spark.execute(spark.sql_of(rewritten), deadline_seconds=0.01)
    assert late.value.code == "execution_timeout"
    with pytest.raises(ExecutionError) as two:
        spark.execute("SELECT 1; SELECT 2")
    assert two.value.code == "not_one_select"
    with pytest.raises(ExecutionError) as unbound:
        spark.bind("SELECT nope FROM enrollments")
    assert unbound.value.code == "type_mismatch"


def test_file_reading_sql_is_off(engines, tmp_path: Path) -> None:
    _, spark = engines
    with pytest.raises(ExecutionError) as refused:
        spark.execute(f"SELECT COUNT(*) FROM parquet.`{spark._parquet}/enrollments`")
    assert refused.value.code == "execution_failed"


PREPARED = {
    "by_school": "SELECT school, COUNT(*) AS n, AVG(days_absent) AS m FROM enrollments GROUP BY school",
    "filtered": "SELECT school, COUNT(*) AS n, SUM(days_absent) AS s FROM enrollments WHERE grade > 3 GROUP BY school",
    "two_keys": "SELECT school_year, grade, COUNT(*) AS n FROM enrollments GROUP BY school_year, grade",
    "expression_key": "SELECT school_year >= 2022 AS late, COUNT(*) AS n FROM enrollments GROUP BY school_year >= 2022",
    "no_keys": "SELECT COUNT(*) AS n, SUM(scale_score) AS s FROM assessments",
}


@pytest.mark.parametrize("sql", PREPARED.values(), ids=PREPARED.keys())
def test_the_prepared_bound_is_identical_on_both_engines(engines, manifest: Manifest, rules: Rules, sql: str) -> None:
    """The whole rewrite, bound included, where the build prepared it: plain column filters and sums."""
    duck, spark = engines
    rewritten = rewrite(check(sql, rules, manifest).query, manifest, 12345, duck.layout())
    assert rewritten.plan.bounds.prepared is not None
    assert spark.layout() == duck.layout()
    expected = duck.execute(duck.sql_of(rewritten))
    found = spark.execute(spark.sql_of(rewritten))
    assert found.columns == expected.columns
    assert canonical(found.rows) == canonical(expected.rows)


def test_the_pipeline_on_spark_releases_a_prepared_shape_and_refuses_a_join(tmp_path: Path, engines) -> None:
    """ENCLAVE_ENGINE=spark: a query bounded by the build's prepared filter is released, naming Spark; a
    join, bounded per query with DuckDB's hash() and rowid, is refused at prepare (nothing charged)."""
    from enclave.pipeline import Enclave
    from tests import stores

    enclave = Enclave(stores.settings(tmp_path, demo_children=2000, engine="spark"))
    try:
        prepared = enclave.prepare("demo", "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school")
        assert prepared.rewritten is not None
        assert enclave._sandbox(enclave.version("demo")).name == "spark"
        joined = enclave.prepare("demo", "SELECT e.school, COUNT(*) AS n FROM enrollments e JOIN assessments a "
                                 "ON e.person_id = a.person_id GROUP BY e.school")
        assert joined.rewritten is None
        assert [v.code for v in joined.result.violations] == ["engine_unsupported"]
    finally:
        enclave.close()
