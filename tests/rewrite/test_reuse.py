"""What check and rewrite build once is never changed by a later call.

The rewrite parses its fixed query shapes once per process and shares the parsed trees, and it
generates its SQL without sqlglot's defensive copy; check changes its own parse in place. None of
this may leak from one query into the next, nor into the checked query the rewrite reads.
"""

from __future__ import annotations

from sqlglot import exp

from enclave.check import check
from enclave.rewrite import rewrite
from enclave.rewrite.plan import build, render

JOINED = ("SELECT c.gender, AVG(CASE WHEN a.proficient THEN 1 ELSE 0 END) AS rate, SUM(e.suspensions) AS s "
          "FROM enrollments e JOIN children c ON e.person_id = c.person_id "
          "JOIN assessments a ON a.person_id = e.person_id WHERE e.grade BETWEEN 3 AND 8 GROUP BY c.gender")
GLOBAL = "SELECT COUNT(*) AS n FROM enrollments WHERE iep"


def test_a_repeated_rewrite_is_the_same_and_leaves_the_checked_query_as_it_was(rules, manifest):
    query = check(JOINED, rules, manifest).query
    canonical = query.canonical_sql
    first = rewrite(query, manifest, 42).sql
    other = rewrite(check(GLOBAL, rules, manifest).query, manifest, 7).sql  # other shapes, another salt
    assert rewrite(query, manifest, 42).sql == first
    assert rewrite(check(GLOBAL, rules, manifest).query, manifest, 7).sql == other
    assert query.canonical_sql == canonical


def test_a_built_tree_shares_nothing_with_later_ones(rules, manifest):
    plan = rewrite(check(JOINED, rules, manifest).query, manifest, 42).plan
    first = render(plan)
    for cte in build(plan).args["with_"].expressions:  # a caller that changes the tree it was given
        cte.this.set("where", exp.Where(this=exp.false()))
    assert render(plan) == first


def test_a_repeated_check_is_the_same(rules, manifest):
    first, again = check(JOINED, rules, manifest), check(JOINED, rules, manifest)
    assert first.accepted
    assert again.accepted
    assert again.query.canonical_sql == first.query.canonical_sql
    assert again.query.columns == first.query.columns
    refused = JOINED.replace("GROUP BY c.gender", "GROUP BY c.shoe_size")
    assert check(refused, rules, manifest).violations == check(refused, rules, manifest).violations != ()
