"""The check's preview of each output's interval: the numbers the release will use."""

from __future__ import annotations

from enclave.disclosure.plan import plan_privacy
from enclave.disclosure.preview import OutputInterval, outputs
from enclave.disclosure.protect import protect
from enclave.execute.sandbox import RawResult

SQL = ("SELECT school, COUNT(DISTINCT person_id) AS c, SUM(days_absent) AS s, AVG(CASE WHEN iep THEN 1 ELSE 0 END)"
       " AS r FROM enrollments GROUP BY school")


def test_a_count_or_sum_shows_its_accuracy_and_a_rate_its_formula(rewritten, manifest, rules):
    query = rewritten(SQL)
    plan = plan_privacy(query, manifest, rules, 1.0)
    assert outputs(plan, query.checked.columns) == (
        OutputInterval("c", "count_distinct_unit", "± 72.39"),
        OutputInterval("s", "sum", "± 25,883.13"),
        OutputInterval("r", "avg", "± about (71.9 + 144 · |mean - 0.5|) / n (n the group's count)"),
    )


def test_the_released_interval_of_a_count_has_the_previewed_half_width(rewritten, manifest, rules):
    query = rewritten(SQL)
    plan = plan_privacy(query, manifest, rules, 1.0)
    raw = RawResult(("school", "c", "s", "r__sum", "r__count"),
                    tuple((*group, 500, 9000, -100, 1000) for group in plan.groups))
    rows = protect(raw, query, plan).rows
    low, high = rows[0][1].interval
    shown = float(outputs(plan, query.checked.columns)[0].interval.removeprefix("± "))
    assert shown <= (high - low) / 2 <= shown + 0.01  # the release rounds its interval outward
