"""Public key sets: NULL is a key of its own, and row functions of public keys have public domains."""

from __future__ import annotations

import duckdb
import pytest

from enclave.disclosure import domains
from enclave.disclosure.keys import public_groups
from enclave.disclosure.plan import PlanError, plan_privacy

LIMIT = 5000
GENDERS = ("F", "M", "X")


@pytest.fixture
def domain(rewritten, manifest):
    """The public domain of the one key of a query, or None."""

    def of(sql: str) -> tuple | None:
        groups = public_groups(rewritten(sql), manifest, LIMIT)
        return None if groups is None else tuple(group[0] for group in groups)

    return of


def test_null_is_a_key_of_every_public_key_set(domain, manifest):
    assert domain("SELECT gender, COUNT(*) FROM children GROUP BY gender") == (*GENDERS, None)
    schools = manifest.tables["enrollments"].columns["school"].public_keys
    by_school = domain("SELECT school, COUNT(*) FROM enrollments GROUP BY school")
    assert by_school == (*schools, None)  # manifest order, NULL last


@pytest.mark.parametrize(("key", "expected"), [
    ("COALESCE(gender, 'unknown')", ("F", "M", "X", "unknown")),
    ("CASE WHEN gender IS NULL THEN 'unknown' ELSE gender END", ("F", "M", "X", "unknown")),
    ("LOWER(gender)", ("f", "m", "x", None)),
    ("birth_year // 5 * 5", (2005, 2010, 2015, 2020, None)),
    ("birth_year / 5 * 5", (*(float(year) for year in range(2005, 2021)), None)),
    ("COALESCE(birth_year >= 2015, FALSE)", (False, True)),
    ("CAST(gender AS INTEGER)", (None,)),  # every cast fails: TRY_CAST, as the executed key does
    ("CASE WHEN gender = 'F' THEN home_zip END", (*(f"991{i:02}" for i in range(1, 11)), None)),
])
def test_a_row_function_of_public_keys_has_the_domain_duckdb_gives_it(domain, key, expected):
    assert domain(f"SELECT {key} AS k, COUNT(*) FROM children GROUP BY 1") == expected


def test_the_domain_is_the_product_with_other_keys_and_needs_no_delta(rewritten, manifest, rules):
    query = rewritten("SELECT COALESCE(gender, 'unknown') AS g, grade, COUNT(*) FROM children "
                      "JOIN enrollments USING (person_id) GROUP BY 1, 2")
    groups = public_groups(query, manifest, LIMIT)
    assert groups == tuple((g, grade) for g in ("F", "M", "X", "unknown") for grade in (*range(13), None))
    plan = plan_privacy(query, manifest, rules, 1.0)
    assert plan.groups == groups
    assert plan.delta == 0
    assert plan.selection_threshold is None
    assert {q.mechanism for q in plan.quantities} == {"discrete_laplace"}


def test_too_many_combinations_have_no_public_domain(rewritten, manifest, rules):
    # 17 birth years x 11 ZIP codes x 8 groups x 4 genders (NULL each) = 5,984 combinations
    sql = ("SELECT COALESCE(gender, race_ethnicity, home_zip, CAST(birth_year AS VARCHAR)) AS k, COUNT(*) "
           "FROM children GROUP BY 1")
    assert public_groups(rewritten(sql), manifest, 6000) is not None
    assert public_groups(rewritten(sql), manifest, LIMIT) is None
    with pytest.raises(PlanError) as refused:
        plan_privacy(rewritten(sql), manifest, rules, 1.0)
    assert refused.value.code == "unbounded_group_keys"


def test_keys_of_measures_keep_their_behaviour(rewritten, manifest, rules):
    # a measure has no public key set: a bounded integer goes through the threshold, an expression of it
    # (not a CASE of literals) is refused
    assert public_groups(rewritten("SELECT days_absent // 10 AS d, COUNT(*) FROM enrollments GROUP BY 1"),
                         manifest, LIMIT) is None
    plan = plan_privacy(rewritten("SELECT scale_score, COUNT(*) FROM assessments GROUP BY 1"), manifest, rules, 1.0)
    assert plan.groups is None
    assert plan.delta > 0
    with pytest.raises(PlanError):
        plan_privacy(rewritten("SELECT days_absent // 10 AS d, COUNT(*) FROM enrollments GROUP BY 1"), manifest,
                     rules, 1.0)


def test_domains_are_cached_by_expression_and_keys(rewritten, manifest):
    sql = "SELECT UPPER(LOWER(gender)) AS g, COUNT(*) FROM children GROUP BY 1"
    domains.evaluate.cache_clear()
    first = public_groups(rewritten(sql), manifest, LIMIT)
    second = public_groups(rewritten(sql.replace("g,", "gg,")), manifest, LIMIT)
    assert first == second == tuple((g,) for g in (*GENDERS, None))
    assert domains.evaluate.cache_info().misses == 1
    assert domains.evaluate.cache_info().hits == 1


def test_the_evaluating_connection_is_locked_down(tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with domains.connection() as connection:
        for sql in (f"SELECT * FROM read_csv('{secret}')", "SET enable_external_access = true",
                    "SET lock_configuration = false", f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'"):
            with pytest.raises(duckdb.Error):
                connection.execute(sql)
    assert not (tmp_path / "out.csv").exists()
