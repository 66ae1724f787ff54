"""Weights and accuracy targets: the split follows the researcher's weights, and a target buys the least ε
that meets it."""

from __future__ import annotations

import pytest

from enclave.disclosure.plan import PlanError, accuracy_met, plan_for_accuracy, plan_privacy

GROUPED = "SELECT school, COUNT(*) AS n, SUM(days_absent) AS days, AVG(days_absent) AS absent FROM enrollments " \
          "GROUP BY school"
SELECTED = "SELECT gender, COUNT(DISTINCT person_id) AS children, SUM(birth_year) AS s FROM children GROUP BY gender"


def test_a_weight_moves_epsilon_to_its_column(rewritten, manifest, rules):
    query = rewritten(GROUPED)
    even = plan_privacy(query, manifest, rules, 1.0)
    weighted = plan_privacy(query, manifest, rules, 1.0, weights={"n": 4.0})
    assert weighted.quantity("n").weight == 4.0
    assert weighted.quantity("n").epsilon > even.quantity("n").epsilon
    assert weighted.quantity("n").accuracy < even.quantity("n").accuracy
    assert weighted.quantity("days").accuracy > even.quantity("days").accuracy
    assert sum(q.epsilon for q in weighted.quantities) <= 1.0 * (1 + 1e-9)


@pytest.mark.parametrize(("weights", "code"), [({"school": 2.0}, "unknown_output_column"),
                                           ({"nope": 2.0}, "unknown_output_column"),
                                           ({"n": 0.0}, "invalid_weight"), ({"n": 101.0}, "invalid_weight"),
                                           ({"n": float("nan")}, "invalid_weight")])
def test_a_weight_of_no_output_or_out_of_range_is_refused(weights, code, rewritten, manifest, rules):
    with pytest.raises(PlanError) as refused:
        plan_privacy(rewritten(GROUPED), manifest, rules, 1.0, weights=weights)
    assert refused.value.code == code
    if code == "unknown_output_column":
        assert next(iter(weights)) in refused.value.message


@pytest.mark.parametrize(("sql", "targets", "weights"), [
    (GROUPED, {"n": 100.0}, None),
    (GROUPED, {"days": 15_000.0}, None),
    (GROUPED, {"n": 100.0, "days": 15_000.0}, None),
    (GROUPED, {"n": 80.0}, {"n": 3.0}),
    (SELECTED, {"children": 25.0}, None),  # the count of persons that also decides suppression
    (SELECTED, {"s": 100_000.0}, {"s": 2.0}),
])
def test_a_target_buys_the_least_epsilon_that_meets_it(sql, targets, weights, rewritten, manifest, rules):
    query = rewritten(sql)
    plan = plan_for_accuracy(query, manifest, rules, targets, weights=weights)
    met = accuracy_met(plan, targets)
    assert all(m.accuracy <= m.target for m in met)
    assert any(m.accuracy == pytest.approx(m.target, rel=1e-6) for m in met)  # the binding target
    cheaper = plan_privacy(query, manifest, rules, plan.epsilon * (1 - 1e-6), weights=weights)
    assert any(m.accuracy > m.target for m in accuracy_met(cheaper, targets))
    assert sum(q.epsilon for q in plan.quantities) <= plan.epsilon * (1 + 1e-9)


def test_a_target_beyond_the_rules_maximum_says_the_epsilon_it_needs(rewritten, manifest, rules):
    with pytest.raises(PlanError) as refused:
        plan_for_accuracy(rewritten(GROUPED), manifest, rules, {"n": 0.01})
    assert refused.value.code == "accuracy_unreachable"
    needed = float(refused.value.message.split("ε = ")[1].split(",")[0])
    assert needed > rules.privacy.max_epsilon


@pytest.mark.parametrize(("targets", "code"), [({"absent": 1.0}, "invalid_accuracy_target"),
                                           ({"n": 0.0}, "invalid_accuracy_target"), ({}, "invalid_accuracy_target"),
                                           ({"school": 5.0}, "unknown_output_column")])
def test_a_target_a_plan_cannot_meet_exactly_is_refused(targets, code, rewritten, manifest, rules):
    with pytest.raises(PlanError) as refused:
        plan_for_accuracy(rewritten(GROUPED), manifest, rules, targets)
    assert refused.value.code == code
