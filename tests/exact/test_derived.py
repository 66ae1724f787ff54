"""Derived columns and HAVING compute what plain DuckDB computes (invariant 12), with the noise taken out.

No ε the rules allow makes a noisy release agree with DuckDB to 1e-6 (a sum's noise is several units at
the rules' maximum, ε 2), so these tests release at that maximum with OpenDP's noise replaced by none:
everything else is the real pipeline (check, hidden aggregates, rewrite, bounds, protect, evaluation).
The value computed agrees to 1e-6; the value shown is rounded to its interval's precision, as every
released value is (the replicates that make the interval are still noisy).
The demo's shapes here stay within its contribution bounds, so the bounded answer is the plain one.
"""

from __future__ import annotations

import math

import pytest

from enclave.budget.ledger import grant
from enclave.disclosure import noise, protect
from enclave.disclosure.derived import evaluate
from tests.exact import on_kept_rows


class _Noiseless:
    """The noise module as protect sees it, with OpenDP's vector noise replaced by none (plans still ask
    OpenDP for their scales, so the cost is the real one)."""

    def __getattr__(self, name: str) -> object:
        return getattr(noise, name)

    @staticmethod
    def vector_laplace(scale: float):
        return lambda vector: list(vector)


@pytest.fixture
def noiseless(fresh_enclave, monkeypatch):
    monkeypatch.setattr(protect, "noise", _Noiseless())
    fresh_enclave.computed = []  # each derived column's values as computed, before they are shown

    def recorded(expr, values, counts=()):
        result = evaluate(expr, values, counts)
        fresh_enclave.computed.append(result)
        return result

    monkeypatch.setattr(protect, "evaluate", recorded)
    with fresh_enclave.audit.transaction() as tx:
        grant(tx, "steward", "alice", "demo", 10.0, 1e-6)
    return fresh_enclave


PERCENT = "100.0 * SUM(suspensions) / COUNT(*)"
# Some children have more enrollment rows in all six years than the demo's bound of 12: in four years none
# has (asserted below), so nothing is cut and the bounded answer is the plain one.
YEARS = "WHERE school_year >= 2021"


def test_the_shapes_stay_within_the_contribution_bounds(plain, manifest):
    (most,) = plain.execute(f"SELECT max(n) FROM (SELECT person_id, count(*) AS n FROM enrollments {YEARS} "
                            "GROUP BY person_id)").fetchone()
    assert most <= manifest.contribution_bounds.max_rows_per_unit


def test_a_derived_percentage_equals_duckdb_s(noiseless, plain, rules):
    query = f"SELECT school_year, {PERCENT} AS pct FROM enrollments {YEARS} GROUP BY school_year"
    expected = dict(plain.execute(on_kept_rows(noiseless, f"SELECT school_year, {PERCENT} FROM enrollments {YEARS} "
                                               "GROUP BY school_year", query)).fetchall())
    release = noiseless.query("alice", "demo", query, rules.privacy.max_epsilon, hold=False)
    points = noiseless.computed[0]  # on the released values; the second call is on their replicates
    compared = 0
    for position, (year, pct) in enumerate(release.rows):
        if not pct.suppressed:  # the years outside WHERE, and the NULL year, have nobody: suppressed
            truth = float(expected[year.value])
            assert math.isclose(points[position], truth, rel_tol=1e-6), year.value
            low, high = pct.interval  # shown to its precision: moved by at most 1/100 of the half-width
            assert pct.derived
            assert abs(pct.value - truth) <= (high - low) / 200 + 1e-9
            compared += 1
    assert compared == 4


def test_having_keeps_the_groups_duckdb_s_having_keeps(noiseless, plain, rules):
    values = sorted(v for (v,) in plain.execute(f"SELECT {PERCENT} FROM enrollments {YEARS} "
                                                "GROUP BY school_year").fetchall())
    threshold = float((values[1] + values[2]) / 2)
    having = (f"FROM enrollments {YEARS} GROUP BY school_year HAVING {PERCENT} > {threshold} "
              "OR school_year = 2021")
    expected = {year for (year,) in plain.execute(f"SELECT school_year {having}").fetchall()}
    release = noiseless.query("alice", "demo", f"SELECT school_year, COUNT(*) AS n {having}",
                              rules.privacy.max_epsilon, hold=False)
    assert {row[0].value for row in release.rows} == expected
    assert 2021 in expected
    # the suppressed years (outside WHERE, and NULL) have no value to HAVING, so it drops them too
    assert release.having_removed == 7 - len(expected)
