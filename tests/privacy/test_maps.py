"""The plan's (ε, δ) is OpenDP's own accounting of the measurements it names, and never above the ε asked.

For each accepted demo query, every quantity of its plan is rebuilt here from OpenDP's constructors at
the plan's noise scale, its privacy map read at the quantity's sensitivity, and the maps composed. The
quantities are vectors of different sensitivities (and a threshold selection noises a map of keys), so
OpenDP's `make_composition`, which sends one d_in through measurements of one input domain and metric,
does not apply; they compose by the basic composition theorem: ε and δ add up. The test iterates
`PrivacyPlan.quantities` by mechanism, so a new allocation of ε or a new statistic is checked as it lands;
a mechanism it does not know fails with a message saying so.
"""

from __future__ import annotations

import opendp.prelude as dp
import pytest

from enclave.disclosure.plan import PrivacyPlan, Quantity, plan_privacy

dp.enable_features("contrib")

QUERIES = {
    "count by a public key": "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school",
    "count without keys": "SELECT COUNT(*) AS n FROM enrollments",
    "sum": "SELECT gender, SUM(birth_year) AS s FROM children GROUP BY gender",
    "avg": "SELECT school, AVG(days_absent) AS absent FROM enrollments GROUP BY school",
    "persons by a key": "SELECT gender, COUNT(DISTINCT person_id) AS children FROM children GROUP BY gender",
    "threshold selection": "SELECT scale_score, COUNT(*) AS n FROM assessments GROUP BY scale_score",
    "threshold, persons only": "SELECT scale_score, COUNT(DISTINCT person_id) AS c FROM assessments GROUP BY 1",
    "join": "SELECT e.school_year, AVG(CASE WHEN a.proficient THEN 1 ELSE 0 END) AS rate FROM enrollments e "
            "JOIN assessments a ON a.person_id = e.person_id GROUP BY 1",
}


def opendp_privacy(quantity: Quantity, plan: PrivacyPlan, groups: int) -> tuple[float, float]:
    """(ε, δ) of one quantity, from its measurement built here with OpenDP at the plan's scale."""
    d_in = round(quantity.sensitivity * quantity.unit)
    if quantity.mechanism == "discrete_laplace":
        space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
        return dp.m.make_laplace(*space, scale=quantity.noise_scale).map(d_in), 0.0
    if quantity.mechanism == "laplace_threshold":
        assert plan.selection_threshold is not None
        space = (dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64")),
                 dp.l01inf_distance(dp.absolute_distance(T="i64")))
        # OpenDP 0.16 keeps a key at >= T but maps the rule > T - 1 under T's name (opendp/opendp#2922):
        # the rule applied is the one its map describes at T - 1 (tests/disclosure/test_selection.py)
        measurement = dp.m.make_laplace_threshold(*space, scale=quantity.noise_scale,
                                                  threshold=plan.selection_threshold - 1)
        # a person changes at most `groups` counts of persons (l0), each by at most 1 (l∞)
        epsilon, delta = measurement.map((groups, d_in, 1))
        return epsilon, delta
    pytest.fail(f"the plan names a mechanism this test does not know, {quantity.mechanism!r}: add its OpenDP "
                f"measurement to opendp_privacy (tests/privacy/test_maps.py)")


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 2.0])
@pytest.mark.parametrize("sql", QUERIES.values(), ids=QUERIES.keys())
def test_the_plan_spends_what_opendp_maps_and_never_more_than_asked(sql, epsilon, rewritten, manifest, rules):
    plan = plan_privacy(rewritten(sql), manifest, rules, epsilon)
    groups = manifest.contribution_bounds.max_groups_per_unit
    maps = [opendp_privacy(quantity, plan, groups) for quantity in plan.quantities]
    for quantity, (spent, _) in zip(plan.quantities, maps, strict=True):
        assert quantity.epsilon == pytest.approx(spent, rel=1e-12, abs=0), quantity
    total_epsilon = sum(e for e, _ in maps)
    total_delta = sum(d for _, d in maps)
    assert sum(q.epsilon for q in plan.quantities) == pytest.approx(total_epsilon, rel=1e-12, abs=0)
    assert plan.delta == pytest.approx(total_delta, rel=1e-12, abs=0)
    assert total_epsilon <= plan.epsilon == epsilon
    assert total_delta <= rules.privacy.selection_delta
