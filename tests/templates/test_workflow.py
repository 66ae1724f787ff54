"""Templates: proposed and checked, reviewed by someone else, immutable, run with validated parameters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from enclave.budget.ledger import grant
from enclave.pipeline import Enclave, QueryError
from enclave.templates import workflow
from enclave.templates.model import TemplateSpec

SPEC = {
    "title": "Chronic absence by school for a grade",
    "purpose": "How chronic absence varies by school for one grade.",
    "dataset": "demo",
    "sql": "SELECT school, AVG(CASE WHEN days_absent >= 18 THEN 1 ELSE 0 END) AS chronic FROM enrollments "
           "WHERE grade = $grade AND school_year = :year GROUP BY school",
    "parameters": [{"name": "grade", "type": "integer", "min": 0, "max": 12},
                   {"name": "year", "type": "integer", "choices": [2022, 2023, 2024]}],
    "epsilon": 0.5,
    "run_limit": 2,
}


@pytest.fixture
def enclave(fresh_enclave):
    with fresh_enclave.audit.transaction() as tx:
        grant(tx, "steward", "alice", "demo", 5.0, 1e-6, purpose="study", adhoc=False)
    return fresh_enclave


def events(enclave: Enclave) -> list[str]:
    return [r["event"] for r in enclave.audit.records()]


def test_a_template_is_proposed_reviewed_by_another_and_run_with_parameters(enclave):
    template = workflow.propose(enclave, "alice", TemplateSpec.model_validate(SPEC))
    assert template.status == "proposed"
    with pytest.raises(QueryError) as own:
        workflow.review(enclave, "alice", template.id, "approve", "looks fine")
    assert own.value.code == "review_not_allowed"
    with pytest.raises(QueryError) as early:
        workflow.run(enclave, "alice", template.id, {"grade": 3, "year": 2023})
    assert early.value.code == "template_not_approved"
    approved = workflow.review(enclave, "rita", template.id, "approve", "aggregate only, bounded")
    assert approved.status == "approved"
    assert approved.approvals == ("rita",)
    release = workflow.run(enclave, "alice", template.id, {"grade": 3, "year": 2023})
    assert release.epsilon == 0.5
    assert [c.name for c in release.columns] == ["school", "chronic"]
    again = workflow.run(enclave, "alice", template.id, {"grade": 3, "year": 2023})
    assert again.replayed  # same parameters: the same answer, nothing spent, no run used
    workflow.run(enclave, "alice", template.id, {"grade": 4, "year": 2023})
    with pytest.raises(QueryError) as limit:
        workflow.run(enclave, "alice", template.id, {"grade": 5, "year": 2023})
    assert limit.value.code == "run_limit_reached"
    assert events(enclave).count("template.run") == 2
    assert {"template.proposed", "template.approved", "query.released", "query.replayed"} <= set(events(enclave))


@pytest.mark.parametrize("values", [
    {"grade": 13, "year": 2023}, {"grade": "3", "year": 2023}, {"grade": 3, "year": 2021},
    {"grade": 3}, {"grade": 3, "year": 2023, "extra": 1}, {"grade": True, "year": 2023},
    {"grade": "3; DROP TABLE children", "year": 2023},
])
def test_parameters_are_validated_before_any_sql_is_built(enclave, values):
    template = workflow.propose(enclave, "alice", TemplateSpec.model_validate(SPEC))
    workflow.review(enclave, "rita", template.id, "approve", "ok")
    with pytest.raises(QueryError) as refused:
        workflow.run(enclave, "alice", template.id, values)
    assert refused.value.code == "invalid_parameters"
    assert "query.charged" not in events(enclave)


def test_parameters_are_bound_into_the_tree_not_the_text():
    spec = TemplateSpec.model_validate({
        **SPEC,
        "sql": "SELECT COUNT(*) AS n FROM enrollments WHERE school = :school",
        "parameters": [{"name": "school", "type": "string", "choices": ["O'Brien Elementary"]}],
    })
    sql = spec.bind({"school": "O'Brien Elementary"})
    assert sql.endswith("WHERE school = 'O''Brien Elementary'")  # a quote in a value stays inside its literal


def test_a_dataset_may_require_two_reviewers_and_revocation_stops_runs(enclave, monkeypatch):
    manifest = enclave.manifest("demo").model_copy(update={"template_approvals": 2})
    monkeypatch.setitem(enclave.manifests, "demo", manifest)
    template = workflow.propose(enclave, "alice", TemplateSpec.model_validate(SPEC))
    assert workflow.review(enclave, "rita", template.id, "approve", "ok").status == "proposed"
    with pytest.raises(QueryError):
        workflow.review(enclave, "rita", template.id, "approve", "again")  # one reviewer counts once
    assert workflow.review(enclave, "sam", template.id, "approve", "ok too").status == "approved"
    workflow.review(enclave, "sam", template.id, "revoke", "superseded by a better template")
    with pytest.raises(QueryError) as revoked:
        workflow.run(enclave, "alice", template.id, {"grade": 3, "year": 2023})
    assert revoked.value.code == "template_not_approved"


def test_a_template_that_the_check_refuses_cannot_be_proposed(enclave):
    bad = {**SPEC, "sql": "SELECT person_id, COUNT(*) FROM enrollments WHERE grade = $grade GROUP BY person_id",
           "parameters": [SPEC["parameters"][0]]}
    with pytest.raises(QueryError) as refused:
        workflow.propose(enclave, "alice", TemplateSpec.model_validate(bad))
    assert refused.value.code == "check_failed"
    assert {v.code for v in refused.value.violations} == {"restricted_column"}


@pytest.mark.parametrize("change", [
    {"sql": SPEC["sql"].replace("$grade", "3")},                     # a declared parameter unused
    {"parameters": [SPEC["parameters"][0]]},                        # a used parameter undeclared
    {"parameters": [{"name": "grade", "type": "string"}, SPEC["parameters"][1]]},  # strings need choices
    {"parameters": [{"name": "grade", "type": "integer"}, SPEC["parameters"][1]]},  # numbers need a range
    {"epsilon": 0}, {"run_limit": 0},
])
def test_malformed_templates_are_refused(change):
    with pytest.raises(ValidationError):
        TemplateSpec.model_validate({**SPEC, **change})


def test_templates_only_grants_refuse_ad_hoc_sql(enclave):
    with pytest.raises(QueryError) as refused:
        enclave.query("alice", "demo", "SELECT COUNT(*) FROM children")
    assert refused.value.code == "templates_only"
