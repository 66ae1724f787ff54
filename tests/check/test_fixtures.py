"""The check fixtures (tests/fixtures/check/*.sql) are the policy's specification: each block names the
exact set of violation codes its SQL gets, or `accepted`, and may name (`# at:`, separated by ` | `) the
exact tokens its violations point at."""

from __future__ import annotations

from collections import Counter

import pytest

from enclave.check import CODES, check
from tests.sql_fixtures import read_fixtures

FIXTURES = read_fixtures("check")


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.id for f in FIXTURES])
def test_check_fixture(fixture, rules, manifest):
    result = check(fixture.sql, rules, manifest)
    expected = fixture.headers["expect"]
    if expected == "accepted":
        assert result.accepted, [v.to_dict() for v in result.violations]
        return
    assert not result.accepted
    wanted = Counter(code.strip() for code in expected.split(","))
    assert Counter(v.code for v in result.violations) == wanted, [v.to_dict() for v in result.violations]
    if "at" in fixture.headers:
        tokens = Counter(token.strip() for token in fixture.headers["at"].split(" | "))
        assert Counter(v.highlight for v in result.violations) == tokens, [v.to_dict() for v in result.violations]


def test_every_violation_is_positioned_inside_the_sql(rules, manifest):
    for fixture in FIXTURES:
        for violation in check(fixture.sql, rules, manifest).violations:
            if violation.line is None:
                continue
            lines = fixture.sql.splitlines()
            assert 1 <= violation.line <= len(lines), fixture.id
            assert 1 <= violation.col <= len(lines[violation.line - 1]) + 1, fixture.id
            assert violation.highlight, fixture.id
            assert violation.highlight in fixture.sql, fixture.id


def test_fixtures_cover_every_check_code():
    used = {code.strip() for f in FIXTURES for code in f.headers["expect"].split(",")} - {"accepted"}
    # codes that only arise from inputs too large for a fixture file (tests/check/test_properties.py), or
    # from the engine binding the rewritten query (tests/test_pipeline.py), or from the Spark engine refusing a
    # construct it cannot compute with DuckDB's meaning (tests/execute/test_spark.py)
    elsewhere = {"sql_too_long", "sql_too_complex", "internal_check_failed", "type_mismatch", "engine_unsupported",
                 "worst_case_too_large"}  # needs the data version's table sizes: tests/attacks/test_timing.py
    assert set(CODES) - elsewhere <= used, sorted(set(CODES) - elsewhere - used)


def test_output_names_keep_the_case_the_researcher_wrote(rules, manifest):
    result = check('SELECT school, count(*) AS "Number of Enrollments" FROM enrollments GROUP BY school',
                   rules, manifest)
    assert [c.name for c in result.query.columns] == ["school", "Number of Enrollments"]
    assert 'AS "Number of Enrollments"' in result.query.canonical_sql
