"""Invariant 12 for grouping keys: the enclave's true aggregates per key, NULL included, are exactly what
plain DuckDB gives for the same SQL on the demo, and the released table has every public group.

True values come from `Enclave.execute_unprotected` (the pipeline without the noise stage); the plain
engine reads a copy of the demo database (DuckDB refuses a second configuration for an open file).
"""

from __future__ import annotations

import json

import pytest

from enclave.budget.ledger import grant
from enclave.disclosure.plan import plan_privacy
from enclave.rewrite.rules import UNITS

KEYS = {
    "gender": "gender",
    "coalesce": "COALESCE(gender, 'unknown')",
    "case": "CASE WHEN gender IS NULL THEN 'unknown' ELSE gender END",
    "lower": "LOWER(gender)",
    "bucket": "birth_year // 5 * 5",
    "division": "birth_year / 5 * 5",
    "two_columns": "CASE WHEN gender = 'F' THEN home_zip END",
}


def sql_for(key: str) -> str:
    return (f"SELECT {key} AS k, COUNT(*) AS n, COUNT(DISTINCT person_id) AS persons, SUM(birth_year) AS s "
            "FROM children GROUP BY 1")


def test_the_demo_has_children_without_a_recorded_gender(plain):
    (missing,) = plain.execute("SELECT count(*) FROM children WHERE gender IS NULL").fetchone()
    (everyone,) = plain.execute("SELECT count(*) FROM children").fetchone()
    assert 0.01 * everyone < missing < 0.1 * everyone  # about 3%: the groups below must keep them


@pytest.mark.parametrize("key", KEYS.values(), ids=KEYS.keys())
def test_true_aggregates_per_key_equal_plain_duckdb_null_included(key, enclave, plain, manifest, rules):
    sql = sql_for(key)
    rewritten = enclave.prepare("demo", sql).rewritten
    raw = enclave.execute_unprotected("demo", rewritten)
    columns = {name: i for i, name in enumerate(raw.columns)}
    ours = {row[0]: (row[columns["n"]], row[columns["persons"]], row[columns["s"]]) for row in raw.rows}
    theirs = {row[0]: tuple(row[1:]) for row in plain.execute(sql).fetchall()}
    assert ours == theirs
    (everyone,) = plain.execute("SELECT count(*) FROM children").fetchone()
    assert sum(n for n, _, _ in ours.values()) == everyone  # nobody vanished
    # every key the data has is a public group, so every person is in a released group
    plan = plan_privacy(rewritten, manifest, rules, 1.0)
    assert set(theirs) <= {group[0] for group in plan.groups}
    assert plan.delta == 0
    assert plan.sources["persons"] == UNITS or plan.sources[UNITS] == "persons"


@pytest.fixture
def fresh(fresh_enclave):
    with fresh_enclave.audit.transaction() as tx:
        grant(tx, "steward", "alice", "demo", 10.0, 1e-6)
    return fresh_enclave


@pytest.mark.parametrize(("key", "expected"), [
    ("gender", ["F", "M", "X", None]),
    ("COALESCE(gender, 'unknown')", ["F", "M", "X", "unknown"]),
    ("LOWER(gender)", ["f", "m", "x", None]),
    ("birth_year // 5 * 5", [2005, 2010, 2015, 2020, None]),
])
def test_the_release_has_every_public_group_and_the_missing_gender(key, expected, fresh, plain):
    release = fresh.query("alice", "demo", f"SELECT {key} AS k, COUNT(*) AS n FROM children GROUP BY 1 "
                          "ORDER BY k", 1.0)
    # every public key, those nobody has included (suppression judges a group by its noisy count of persons,
    # so a released count may lie below the threshold): none dropped; ORDER BY puts NULL last, as DuckDB does
    assert [row[0].value for row in release.rows] == expected
    assert release.delta == 0
    truth = dict(plain.execute(f"SELECT {key}, COUNT(*) FROM children GROUP BY 1").fetchall())
    for key_cell, count in release.rows:
        if truth.get(key_cell.value, 0) > 100:  # far above the threshold: released, near the truth
            assert not count.suppressed
            assert abs(count.value - truth[key_cell.value]) < 20 * count.scale  # fails with probability e^-20


def test_a_null_key_is_null_in_json_and_empty_in_csv(fresh):
    release = fresh.query("alice", "demo", "SELECT gender, COUNT(*) AS n FROM children GROUP BY gender", 1.0)
    assert release.rows[-1][0].value is None
    assert json.loads(release.payload())["rows"][-1][0]["value"] is None
    lines = release.to_csv().splitlines()
    assert len(lines) == 5
    assert lines[-1].startswith(",")
