"""Statistical tests of protect(): large samples, fixed tolerances that a wrong scale or a suppression
decided on true values would fail."""

from __future__ import annotations

import math
import statistics

import numpy as np
import opendp.prelude as dp
import pytest

from enclave.disclosure import statistics as released
from enclave.disclosure.plan import plan_privacy
from enclave.disclosure.protect import protect
from enclave.execute.sandbox import RawResult

TRIALS = 1500
SQL = "SELECT school, COUNT(DISTINCT person_id) AS children, COUNT(*) AS n FROM enrollments GROUP BY school"


def discrete_laplace_variance(scale: float) -> float:
    p = math.exp(-1 / scale)
    return 2 * p / (1 - p) ** 2


@pytest.fixture(scope="module")
def setup(enclave, manifest, rules):
    rewritten = enclave.prepare("demo", SQL).rewritten
    plan = plan_privacy(rewritten, manifest, rules, 1.0)
    schools = [group[0] for group in plan.groups]
    return rewritten, plan, schools


def raw(schools: list[str], persons: int, rows: int, present: int | None = None) -> RawResult:
    kept = schools if present is None else schools[:present]
    return RawResult(("school", "children", "n", "__units"), tuple((s, persons, rows, persons) for s in kept))


def test_released_counts_are_integers_with_the_planned_noise_scale(setup):
    rewritten, plan, schools = setup
    true_rows = 5000
    errors = []
    for _ in range(TRIALS):
        rows = protect(raw(schools, 2000, true_rows), rewritten, plan).rows
        for row in rows:
            assert isinstance(row[2].value, int)
            errors.append(row[2].value - true_rows)
    scale = plan.quantity("n").noise_scale
    assert plan.quantity("n").sensitivity == 12
    assert scale == pytest.approx(24.0)
    expected = discrete_laplace_variance(scale)
    assert statistics.fmean(errors) == pytest.approx(0, abs=4 * math.sqrt(expected / len(errors)))
    # 30,000 draws: the variance's relative standard error is about 1.3%; a scale off by 10% is off 20%
    assert statistics.pvariance(errors) == pytest.approx(expected, rel=0.05)


def test_suppression_happens_exactly_on_noisy_counts_below_the_threshold(setup):
    rewritten, plan, schools = setup
    threshold = plan.suppression_threshold
    suppressed = released = 0
    for _ in range(TRIALS):
        rows = protect(raw(schools, threshold, 40), rewritten, plan).rows
        for row in rows:
            if row[1].suppressed:
                assert row[1].value is None
                assert row[2].value is None
                assert row[2].suppressed
                assert row[2].reason == f"fewer than {threshold} persons (noisy count)"
                assert row[0].value in schools  # the key stays
                suppressed += 1
            else:
                assert row[1].value >= threshold  # released only when the noisy count reached it
                released += 1
    # the true count is exactly the threshold: a group is suppressed when the noise is negative,
    # P = (1 - P(0)) / 2 for the discrete Laplace; a decision on the true count would never suppress
    p = math.exp(-1 / plan.quantity("__units").noise_scale)
    expected = (1 - (1 - p) / (1 + p)) / 2
    total = suppressed + released
    assert suppressed / total == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / total))


def test_groups_without_data_are_released_never_dropped_and_mostly_suppressed(setup):
    rewritten, plan, schools = setup
    passed = empty = 0
    for _ in range(300):
        rows = protect(raw(schools, 500, 900, present=3), rewritten, plan).rows
        assert [row[0].value for row in rows] == schools  # every public key, zeros included
        assert all(not row[2].suppressed for row in rows[:3])
        empty += len(rows) - 3
        passed += sum(not row[2].suppressed for row in rows[3:])
    # a true count of 0 passes only when the noise reaches the threshold: P(X >= t) = p^t / (1 + p)
    p = math.exp(-1 / plan.quantity("__units").noise_scale)
    expected = p ** plan.suppression_threshold / (1 + p)
    assert passed / empty == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / empty))


def test_means_are_clamped_noisy_ratios_with_their_interval(enclave, manifest, rules):
    rewritten = enclave.prepare("demo", "SELECT AVG(days_absent) AS a FROM enrollments").rewritten
    plan = plan_privacy(rewritten, manifest, rules, 1.0)
    assert plan.quantity("a__sum").centre == 90  # the sum is of days_absent - 90: [0, 180]'s midpoint
    true = RawResult(("a__sum", "a__count", "__units"), ((90_000 - 90 * 10_000, 10_000, 5_000),))
    values = []
    for _ in range(300):
        rows = protect(true, rewritten, plan).rows
        cell = rows[0][0]
        assert 0 <= cell.value <= 180
        assert cell.interval[0] <= cell.value <= cell.interval[1]
        values.append(cell.value)
    assert statistics.fmean(values) == pytest.approx(9.0, abs=0.2)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_quantiles_are_read_as_opendp_reads_them(p):
    """statistics.quantiles is OpenDP's make_quantiles_from_counts (linear) wherever OpenDP's is defined,
    on non-negative counts (OpenDP's binary search assumes a monotone CDF), zeros included."""
    rng = np.random.default_rng(7)
    edges = [float(e) for e in np.linspace(0, 180, 33)]
    opendp_reads = dp.t.make_quantiles_from_counts(edges, [p], interpolation="linear", TA="f64")
    counts = np.clip(rng.laplace(20, 15, size=(400, 32)).round(), 0, None)
    counts[:50, :8] = 0  # empty bins
    counts = counts[counts.sum(axis=1) > 0]
    expected = np.array([opendp_reads([float(c) for c in row])[0] for row in counts])
    assert released.quantiles(counts, np.asarray(edges), p) == pytest.approx(expected, abs=1e-9)


def test_a_noisy_cdf_that_goes_down_is_read_at_its_first_crossing():
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    counts = np.array([6.0, -4.0, 5.0, 3.0])  # cumulative 6, 2, 7, 10: half of 10 is first reached in bin 0
    assert released.quantiles(counts, edges, 0.5) == pytest.approx(5 / 6)
    assert np.isnan(released.quantiles(np.array([2.0, -3.0, 1.0, -1.0]), edges, 0.5))  # total <= 0: none
