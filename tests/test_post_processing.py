"""Post-processing SQL end to end: derived columns and HAVING are computed from the noisy release, never
from true values (enclave/disclosure/derived.py, wired in by protect)."""

from __future__ import annotations

import numpy as np
import pytest

from enclave.budget.ledger import grant
from enclave.disclosure import protect


@pytest.fixture
def fresh(fresh_enclave):
    with fresh_enclave.audit.transaction() as tx:
        grant(tx, "steward", "alice", "demo", 10.0, 1e-6)
    return fresh_enclave


def true_count(enclave, sql: str, year: int) -> int:
    prepared = enclave.prepare("demo", sql)
    rows = enclave.execute_unprotected("demo", prepared.rewritten).rows
    return next(int(row[1]) for row in rows if row[0] == year)


def test_having_judges_the_noisy_values_not_the_true_ones(fresh):
    year = 2022
    count = true_count(fresh, "SELECT school_year, COUNT(*) AS n FROM enrollments GROUP BY school_year", year)
    sql = f"SELECT school_year, COUNT(*) AS n FROM enrollments GROUP BY school_year HAVING COUNT(*) > {count}"
    kept = []
    for release_number in range(12):  # a different ε each time: a repeat would be replayed, not noised again
        release = fresh.query("alice", "demo", sql, 0.05 + release_number / 1000, hold=False)
        years = [row[0].value for row in release.rows]
        kept.append(year in years)
        assert release.having_removed == 7 - len(years)  # 2019-2024 and NULL, less what HAVING dropped
        assert all(row[1].value > count for row in release.rows if not row[1].suppressed)
    # on true values HAVING n > n would always drop the group: on noisy ones it falls either way
    # (each release keeps it with probability about 1/2; all twelve alike: about 1 in 2,000)
    assert set(kept) == {True, False}


def test_a_derived_ratio_is_the_ratio_of_the_noisy_aggregates(fresh):
    release = fresh.query("alice", "demo", "SELECT school_year, COUNT(CASE WHEN iep THEN 1 END) AS k, COUNT(*) AS n, "
                          "COUNT(CASE WHEN iep THEN 1 END) / COUNT(*) AS share FROM enrollments GROUP BY school_year "
                          "ORDER BY share DESC", 1.0, hold=False)
    assert [c.kind for c in release.columns] == ["key", "count", "count", "derived"]
    shares = [row[3].value for row in release.rows]
    present = [share for share in shares if share is not None]  # no value (suppressed, or a count <= 0) sorts last
    assert shares == sorted(present, reverse=True) + [None] * (len(shares) - len(present))
    for _, k, n, share in (row for row in release.rows if not row[3].suppressed and row[0].value is not None):
        # the ratio of the released counts (integers, exactly as noised), shown to its precision: rounding
        # moves it by at most a hundredth of its interval's half-width
        low, high = share.interval
        assert abs(share.value - k.value / n.value) <= (high - low) / 200
        assert (share.derived, share.mechanism, share.scale) == (True, "derived", None)
    for row in release.rows:
        if row[0].value is not None:
            assert row[3].interval[0] < row[3].value < row[3].interval[1]
        if row[1].suppressed:
            # a derived cell of a suppressed group is suppressed
            assert (row[3].suppressed, row[3].value) == (True, None)


def test_a_derived_column_of_hidden_aggregates_is_their_noisy_ratio(fresh, monkeypatch):
    seen: list[tuple[object, dict[str, np.ndarray], np.ndarray]] = []

    def spy(expr, values, counts=()):
        result = protect.evaluate.__wrapped__(expr, values, counts)
        seen.append((expr, dict(values), result))
        return result

    spy.__wrapped__ = protect.evaluate  # type: ignore[attr-defined]
    monkeypatch.setattr(protect, "evaluate", spy)
    release = fresh.query("alice", "demo", "SELECT school_year, 100.0 * COUNT(CASE WHEN iep THEN 1 END) / COUNT(*) "
                          "AS pct FROM enrollments GROUP BY school_year", 1.0, hold=False)
    assert [c.name for c in release.columns] == ["school_year", "pct"]  # the hidden aggregates are not released
    (_, points, _), (_, draws, _) = seen  # once on the released points, once on their replicates
    assert set(points) == {"__h0", "__h1"}
    assert draws["__h0"].ndim == 2
    (_, _, computed) = seen[0]
    for position, row in enumerate(release.rows):
        if not row[1].suppressed and points["__h1"][position] > 0:  # exactly the hidden noisy counts' ratio
            assert computed[position] == 100.0 * points["__h0"][position] / points["__h1"][position]
        elif not row[1].suppressed:  # noise took the count to zero or below (the NULL year has nobody)
            assert np.isnan(computed[position])
            assert row[1].value is None
        if row[0].value is not None:  # a real school year: thousands of rows, so the draws give an interval
            low, high = row[1].interval
            assert low < row[1].value < high
            assert abs(row[1].value - computed[position]) <= (high - low) / 200
