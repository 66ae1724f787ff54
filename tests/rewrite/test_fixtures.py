"""Rewrite fixtures (tests/fixtures/rewrite/<rule>.sql): input SQL => the SQL after that one rule.

`all.sql` applies every rule of RULES in order: exactly what the sandbox executes. The salt is fixed
at 42 here; in the enclave it is keyed by a secret and the data version.
"""

from __future__ import annotations

import pytest
import sqlglot

from enclave.check import check
from enclave.rewrite import RULES, RewriteContext, rewrite
from enclave.rewrite.plan import build, plan_of
from tests.sql_fixtures import read_fixtures

SALT = 42
FIXTURES = read_fixtures("rewrite")
RULES_BY_NAME = {rule.__name__: rule for rule in RULES}


def rewritten(sql: str, rule: str, rules, manifest) -> str:
    result = check(sql, rules, manifest)
    assert result.accepted, [v.to_dict() for v in result.violations]
    if rule == "all":
        return sqlglot.parse_one(rewrite(result.query, manifest, SALT).sql, read="duckdb").sql("duckdb", pretty=True)
    # the consent rule's fixtures are of a dataset that requires consent; the demo's does not
    ctx = RewriteContext(manifest.contribution_bounds, SALT, consent_required=rule == "restrict_to_consented")
    plan = RULES_BY_NAME[rule](plan_of(result.query), ctx)
    return build(plan).sql("duckdb", pretty=True, comments=False)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.id for f in FIXTURES])
def test_rewrite_fixture(fixture, rules, manifest):
    source, _, expected = fixture.sql.partition("\n=>\n")
    assert rewritten(source.strip(), fixture.file, rules, manifest) == expected.strip()


def test_every_rule_has_a_fixture_file():
    assert {f.file for f in FIXTURES} == {*RULES_BY_NAME, "all"}
