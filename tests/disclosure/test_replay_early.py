"""A repeated request is answered before the pipeline runs again (issue 12), with the same record.

A request sent exactly as before (text and ε, or template and parameters) is answered from its alias
before it is parsed; one whose text differs but whose checked form was released is answered right after
the check, before any rewrite, bind or plan. Each test makes the skipped stages fail if they are reached.
"""

from __future__ import annotations

import pytest

from enclave import pipeline
from enclave.budget.ledger import grant
from enclave.pipeline import Enclave, QueryError
from enclave.templates import workflow
from enclave.templates.model import TemplateSpec

SQL = "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school"
# the same checked query, in other words
RESTATED = "select school, count(*) as n from enrollments group by school"
# what a replay's record carries, whichever way it was found (the record the whole pipeline writes)
RECORDED = {"dataset", "rules_sha256", "sql_submitted", "sql_submitted_sha256", "data_version", "engine",
            "canonical_sql", "sql_executed_sha256", "plan", "query_id", "payload_sha256"}


@pytest.fixture
def fresh(fresh_enclave: Enclave) -> Enclave:
    with fresh_enclave.audit.transaction() as tx:
        grant(tx, "steward", "alice", "demo", 3.0, 1e-6)
        grant(tx, "steward", "bob", "demo", 3.0, 1e-6)
    return fresh_enclave


def _stage_fails(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("a replay ran a stage of the pipeline")

    for name in names:
        monkeypatch.setattr(pipeline, name, reached)


def _records(enclave: Enclave, event: str) -> list[dict]:
    return [r for r in enclave.audit.records() if r["event"] == event]


def _without_identity(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in {"seq", "time", "hash", "prev_hash"}}


def test_a_request_sent_again_is_answered_before_it_is_parsed(fresh, monkeypatch):
    first = fresh.query("alice", "demo", SQL, 0.5)
    _stage_fails(monkeypatch, "check", "rewrite", "plan_request", "reserve")
    again = fresh.query("alice", "demo", SQL, 0.5)
    assert again.replayed
    assert not first.replayed
    assert (again.query_id, again.rows) == (first.query_id, first.rows)
    assert again.epsilon_remaining == pytest.approx(2.5)  # nothing spent
    (replayed,) = _records(fresh, "query.replayed")
    assert set(replayed) >= RECORDED
    assert replayed["seq"] == again.audit_seq
    assert replayed["sql_submitted"] == SQL
    assert len(_records(fresh, "query.charged")) == 1


def test_a_restated_request_is_answered_after_the_check_only_then_before_it(fresh, monkeypatch):
    first = fresh.query("alice", "demo", SQL, 0.5)
    _stage_fails(monkeypatch, "rewrite", "plan_request", "reserve")
    restated = fresh.query("alice", "demo", RESTATED, 0.5)
    assert restated.replayed
    assert restated.query_id == first.query_id
    _stage_fails(monkeypatch, "check")  # now it names the release too
    assert fresh.query("alice", "demo", RESTATED, 0.5).query_id == first.query_id
    after_check, before_parse = _records(fresh, "query.replayed")
    assert _without_identity(after_check) == _without_identity(before_parse)
    assert after_check["sql_submitted"] == RESTATED


def test_weights_are_part_of_a_release_and_targets_replay_the_release_at_their_epsilon(fresh, monkeypatch):
    """Other weights, another release; the same weights restated (another order, ints), the same one, after
    the check; targets are planned first (their ε is known only then), and keyed as that ε and weights."""
    column = "n"  # SQL's COUNT(*)
    plain = fresh.query("alice", "demo", SQL, 0.5)
    weighted = fresh.query("alice", "demo", SQL, 0.5, weights={column: 2.0})
    assert not weighted.replayed
    assert weighted.query_id != plain.query_id
    _stage_fails(monkeypatch, "rewrite", "plan_request", "reserve")
    again = fresh.query("alice", "demo", RESTATED, 0.5, weights={column: 2})
    assert (again.replayed, again.query_id) == (True, weighted.query_id)
    monkeypatch.undo()
    targets = {column: 120.0}
    cost = fresh.plan("demo", fresh.prepare("demo", SQL).rewritten, None, None, targets).epsilon
    targeted = fresh.query("alice", "demo", SQL, accuracy=targets)
    assert (targeted.replayed, targeted.epsilon) == (False, cost)
    assert fresh.query("alice", "demo", SQL, cost).query_id == targeted.query_id
    (charged,) = [r for r in _records(fresh, "query.charged") if r["query_id"] == targeted.query_id]
    assert charged["accuracy"] == targets
    assert charged["plan"]["accuracy_targets"] == [{"column": column, "target": 120.0,
                                                     "accuracy": pytest.approx(120.0, rel=1e-6)}]


def test_a_replay_early_writes_the_record_the_whole_pipeline_wrote_before(fresh):
    """The early paths and the replay inside the pipeline (a release cached by key) write one record."""
    fresh.query("alice", "demo", SQL, 0.5)
    fresh.query("alice", "demo", SQL, 0.5)
    with fresh.audit.transaction() as tx:  # forget the aliases: the next repeat goes the whole way
        tx.connection.execute("DELETE FROM replay_aliases")
    fresh.query("alice", "demo", SQL, 0.5)
    early, whole = _records(fresh, "query.replayed")
    assert _without_identity(early) == _without_identity(whole)


def test_another_epsilon_another_researcher_or_other_rules_are_other_requests(fresh, monkeypatch):
    fresh.query("alice", "demo", SQL, 0.5)
    assert not fresh.query("alice", "demo", SQL, 0.25).replayed
    assert not fresh.query("bob", "demo", SQL, 0.5).replayed  # bob's alias is not alice's
    assert fresh.query("alice", "demo", SQL, 0.5).replayed
    monkeypatch.setattr(fresh.rules, "_sha256", "0" * 64)  # a new policy: the text is checked again
    checked = []
    real_check = pipeline.check
    monkeypatch.setattr(pipeline, "check", lambda *a: checked.append(1) or real_check(*a))
    assert fresh.query("alice", "demo", SQL, 0.5).replayed
    assert checked == [1]


def test_a_refused_request_is_refused_again_through_the_check(fresh):
    for _ in range(2):
        with pytest.raises(QueryError) as refused:
            fresh.query("alice", "demo", "SELECT person_id FROM children")
        assert refused.value.code == "check_failed"
    assert len(_records(fresh, "query.refused")) == 2


def test_a_repeated_template_run_is_answered_before_it_is_bound_checked_or_counted(fresh, monkeypatch):
    spec = TemplateSpec.model_validate({
        "title": "Enrolments by school for a grade", "purpose": "How enrolment varies by school.",
        "dataset": "demo", "sql": "SELECT school, COUNT(*) AS n FROM enrollments WHERE grade = $grade GROUP BY school",
        "parameters": [{"name": "grade", "type": "integer", "min": 0, "max": 12}], "epsilon": 0.5, "run_limit": 1})
    template = workflow.propose(fresh, "alice", spec)
    workflow.review(fresh, "rita", template.id, "approve", "aggregate only")
    first = workflow.run(fresh, "alice", template.id, {"grade": 3})
    _stage_fails(monkeypatch, "check", "rewrite", "plan_request", "reserve")
    monkeypatch.setattr(TemplateSpec, "bind", lambda *a: pytest.fail("a repeated run bound its parameters"))
    again = workflow.run(fresh, "alice", template.id, {"grade": 3})  # at its run limit: a replay still answers
    assert again.replayed
    assert again.query_id == first.query_id
    with fresh.audit.reading() as connection:
        assert connection.execute("SELECT count(*) FROM template_runs").fetchone()[0] == 1
    (replayed,) = _records(fresh, "query.replayed")
    assert replayed["sql_submitted"] == _records(fresh, "query.charged")[0]["sql_submitted"]
    workflow.review(fresh, "rita", template.id, "revoke", "withdrawn")
    with pytest.raises(QueryError) as revoked:
        workflow.run(fresh, "alice", template.id, {"grade": 3})
    assert revoked.value.code == "template_not_approved"
