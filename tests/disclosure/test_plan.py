"""The privacy plan: exact cost, sensitivities that agree with OpenDP, group selection."""

from __future__ import annotations

import opendp.prelude as dp
import pytest

from enclave.disclosure.keys import public_groups
from enclave.disclosure.plan import SUM_UNIT, PlanError, plan_privacy, sensitivity

dp.enable_features("contrib")

QUERIES = [
    "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments GROUP BY school",
    "SELECT COUNT(*) AS n FROM enrollments",
    "SELECT gender, COUNT(DISTINCT person_id) AS children, SUM(birth_year) AS s FROM children GROUP BY gender",
    "SELECT scale_score, COUNT(*) FROM assessments GROUP BY scale_score",
    "SELECT e.school_year, AVG(CASE WHEN a.proficient THEN 1 ELSE 0 END) AS rate FROM enrollments e "
    "JOIN assessments a ON a.person_id = e.person_id GROUP BY 1",
]


@pytest.mark.parametrize("epsilon", [0.05, 0.3, 1.0, 2.0])
@pytest.mark.parametrize("sql", QUERIES)
def test_the_cost_is_exactly_the_epsilon_asked_for(sql, epsilon, rewritten, manifest, rules):
    plan = plan_privacy(rewritten(sql), manifest, rules, epsilon)
    assert plan.epsilon == epsilon
    spent = sum(q.epsilon for q in plan.quantities)
    assert epsilon * (1 - 1e-6) <= spent <= epsilon * (1 + 1e-9)
    # each quantity's ε is what OpenDP's own privacy map gives at its sensitivity and scale
    for quantity in plan.quantities:
        if quantity.mechanism == "discrete_laplace":
            measurement = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"),
                                            quantity.noise_scale)
            assert measurement.map(round(quantity.sensitivity * quantity.unit)) == pytest.approx(quantity.epsilon)


def test_the_default_epsilon_and_the_maximum_come_from_the_rules(rewritten, manifest, rules):
    query = rewritten(QUERIES[1])
    assert plan_privacy(query, manifest, rules, None).epsilon == rules.privacy.default_epsilon
    for bad in (0.0, -1.0, rules.privacy.max_epsilon * 1.01):
        with pytest.raises(PlanError) as refused:
            plan_privacy(query, manifest, rules, bad)
        assert refused.value.code == "epsilon_out_of_range"


def test_a_quantity_asked_for_twice_is_noised_and_paid_once(rewritten, manifest, rules):
    plan = plan_privacy(rewritten(QUERIES[2]), manifest, rules, 1.0)
    # COUNT(DISTINCT person_id) is also the per-group count of persons that decides suppression
    assert [q.function for q in plan.quantities] == ["count_units", "sum"]
    assert plan.sources["__units"] == "children"
    assert all(q.epsilon == pytest.approx(0.5) for q in plan.quantities)


ROWS, GROUPS = 12, 6


def test_count_sensitivity_agrees_with_opendp():
    count = dp.t.make_count(dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance())
    assert sensitivity("count", None, ROWS, GROUPS, grouped=True) == count.map(ROWS)
    assert sensitivity("count", None, ROWS, GROUPS, grouped=False) == count.map(ROWS)


@pytest.mark.parametrize("bounds", [(0, 180), (100, 900), (-5, 3), (0, 1), (0, 10)])
def test_sum_sensitivity_agrees_with_opendp(bounds):
    total = dp.t.make_sum(dp.vector_domain(dp.atom_domain(bounds=bounds, T="i64")), dp.symmetric_distance())
    assert sensitivity("sum", bounds, ROWS, GROUPS, grouped=True) == total.map(ROWS) * SUM_UNIT


def test_person_count_sensitivity_agrees_with_opendp():
    # a person adds one (person, group) pair to each of at most G groups
    by_group = dp.t.make_count_by_categories(dp.vector_domain(dp.atom_domain(T=str)), dp.symmetric_distance(),
                                             categories=["a", "b"], MO=dp.L1Distance[int])
    assert sensitivity("count_units", None, ROWS, GROUPS, grouped=True) == by_group.map(GROUPS)
    distinct = dp.t.make_count_distinct(dp.vector_domain(dp.atom_domain(T=str)), dp.symmetric_distance())
    assert sensitivity("count_units", None, ROWS, GROUPS, grouped=False) == distinct.map(1)


def test_public_keys_release_every_group_others_need_the_threshold(rewritten, manifest, rules):
    by_school = rewritten(QUERIES[0])
    assert len(public_groups(by_school, manifest, 5000)) == 21  # 20 schools and NULL
    chronic = rewritten("SELECT CASE WHEN days_absent >= 18 THEN 'chronic' ELSE 'not' END AS s, grade, COUNT(*) "
                        "FROM enrollments GROUP BY 1, 2")
    assert public_groups(chronic, manifest, 5000) == tuple((s, g) for s in ("chronic", "not")
                                                           for g in (*range(13), None))
    assert public_groups(rewritten(QUERIES[3]), manifest, 5000) is None
    plan = plan_privacy(rewritten(QUERIES[3]), manifest, rules, 1.0)
    units = plan.quantity("__units")
    assert units.mechanism == "laplace_threshold"
    assert 0 < plan.delta <= rules.privacy.selection_delta
    assert plan.selection_threshold >= plan.suppression_threshold
    assert plan_privacy(rewritten(QUERIES[0]), manifest, rules, 1.0).delta == 0


def test_the_group_limit_counts_the_null_groups(rewritten, manifest):
    # 21 schools x 14 grades x 7 school years = 2,058 groups with NULL, 1,560 without
    sql = "SELECT school, grade, school_year, COUNT(*) FROM enrollments GROUP BY 1, 2, 3"
    assert len(public_groups(rewritten(sql), manifest, 2058)) == 2058
    assert public_groups(rewritten(sql), manifest, 2057) is None
