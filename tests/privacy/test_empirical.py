"""Empirical privacy audit (issue 14, item 7): each mechanism's measured ε stays within the ε it claims.

For every mechanism that releases numbers, a real plan of the demo dataset (12 rows and 6 groups per
person) gives a quantity's noise scale, sensitivity and claimed ε (read from OpenDP's map). Its OpenDP
measurement runs on neighbours that differ by one maximal person, and a 95% Clopper-Pearson lower bound
on ε from the counts of an event must stay at or below the claim (tests/privacy/audit.py says how). The
same audit of the mechanism at half its scale (twice the ε claimed) must exceed the claim: the audit has
the power to catch a mechanism that spends more than it says.
"""

from __future__ import annotations

import pytest

from enclave.disclosure import noise
from enclave.disclosure.plan import PrivacyPlan, plan_privacy
from enclave.rewrite.rules import UNITS
from tests.privacy.audit import audit_laplace, audit_selection, audit_threshold

# one quantity of each function the discrete Laplace noises: COUNT(*), SUM (in millionths), persons
LAPLACE_SQL = "SELECT school, COUNT(*) AS n, SUM(days_absent) AS days FROM enrollments GROUP BY school"
# scale_score has no public key set: the groups are selected by OpenDP's Laplace threshold
THRESHOLD_SQL = "SELECT scale_score, COUNT(DISTINCT person_id) AS children FROM assessments GROUP BY 1"
# the largest ε a query may ask for: large ε shares make the events frequent, so few trials suffice
EPSILON = 2.0
LAPLACE_TRIALS = 20_000
THRESHOLD_TRIALS = 10_000


@pytest.fixture
def laplace_plan(rewritten, manifest, rules) -> PrivacyPlan:
    return plan_privacy(rewritten(LAPLACE_SQL), manifest, rules, EPSILON)


@pytest.fixture
def threshold_plan(rewritten, manifest, rules) -> PrivacyPlan:
    return plan_privacy(rewritten(THRESHOLD_SQL), manifest, rules, EPSILON)


@pytest.mark.parametrize("function", ["count", "sum", "count_units"])
def test_the_discrete_laplace_spends_no_more_than_it_claims(function, laplace_plan):
    quantity = next(q for q in laplace_plan.quantities if q.function == function)
    assert quantity.mechanism == "discrete_laplace"
    honest = audit_laplace(function, quantity, LAPLACE_TRIALS)
    assert honest.epsilon_lower <= quantity.epsilon
    broken = audit_laplace(function, quantity, LAPLACE_TRIALS, scale=quantity.noise_scale / 2)
    assert broken.epsilon_lower > quantity.epsilon  # the audit catches twice the ε claimed


def test_the_laplace_threshold_spends_no_more_than_it_claims(threshold_plan):
    quantity = threshold_plan.quantity(UNITS)
    assert quantity.mechanism == "laplace_threshold"
    honest = audit_threshold("threshold", threshold_plan, quantity, THRESHOLD_TRIALS)
    assert honest.epsilon_lower <= quantity.epsilon
    broken = audit_threshold("threshold", threshold_plan, quantity, THRESHOLD_TRIALS,
                             scale=quantity.noise_scale / 2)
    assert broken.epsilon_lower > quantity.epsilon


def test_the_laplace_threshold_releases_a_new_person_no_more_often_than_its_delta(threshold_plan, manifest):
    """At the plan's threshold δ is 1e-7, which no affordable trial count shows: the rule is audited at
    the plan's scale and the threshold a δ of 1% needs, against the enclave's δ for that threshold.

    The event (a new key released) meets δ exactly, so the bound's only room is e^ε · q_high: at a δ of
    1% it takes about 5 standard deviations of the release rate to fail, where at 5% it would take 3.3
    (a failure by chance in about 1 run of 2,000)."""
    quantity = threshold_plan.quantity(UNITS)
    groups = manifest.contribution_bounds.max_groups_per_unit
    threshold = next(t for t in range(2, threshold_plan.selection_threshold + 1)
                     if noise.selection_privacy(quantity.noise_scale, t, groups)[1] <= 0.01)
    audit = audit_selection("selection", quantity, groups, threshold, THRESHOLD_TRIALS)
    assert audit.epsilon_lower <= audit.claimed_epsilon
