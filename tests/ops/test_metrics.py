"""Metrics of the real pipeline and store (one process, the default registry): every decision is counted
with its stage, stages and audit transactions are timed, ε and suppressed cells are summed per dataset, and
no label carries SQL, a researcher's name or a key."""

from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY, generate_latest

from enclave.access.keys import ensure_principal, issue_key
from enclave.budget.ledger import grant
from enclave.execute.sandbox import ExecutionError
from enclave.ops import metrics
from enclave.pipeline import Enclave, QueryError

MARKER = "metrics_marker_5c1e"
SQL = f"SELECT school, COUNT(*) AS n FROM enrollments WHERE school <> '{MARKER}' GROUP BY school"
REFUSED = f"SELECT person_id AS {MARKER}, COUNT(*) AS n FROM children GROUP BY person_id"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_decision_is_counted_with_its_stage_and_nothing_identifying(fresh_enclave: Enclave,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    researcher = f"researcher_{MARKER}"
    with fresh_enclave.audit.transaction() as tx:
        grant(tx, "steward", researcher, "demo", 1.5, 1e-6)
        ensure_principal(tx, "steward", researcher, {"researcher"})
        key = issue_key(tx, fresh_enclave.settings.pepper, "steward", researcher)
    key_id = key.split("_")[1]
    before = {decision: value("enclave_queries_total", decision=decision, stage=stage, dataset="demo", code=code)
              for decision, stage, code in (("released", "record release", ""), ("replayed", "replay", ""),
                                            ("refused", "check+rewrite+bind", "check_failed"),
                                            ("refused", "reserve+audit", "budget_exceeded"),
                                            ("failed", "execute", "execution_timeout"))}
    spent = value("enclave_epsilon_spent_total", dataset="demo")
    executed = value("enclave_stage_duration_seconds_count", stage="execute")
    appended = value("enclave_audit_append_duration_seconds_count")

    released = fresh_enclave.query(researcher, "demo", SQL, 1.0, hold=False)
    replayed = fresh_enclave.query(researcher, "demo", SQL, 1.0, hold=False)
    assert replayed.replayed
    assert not released.replayed
    with pytest.raises(QueryError, match="check_failed"):
        fresh_enclave.query(researcher, "demo", REFUSED, 0.1, hold=False)
    with pytest.raises(QueryError, match="budget_exceeded"):
        fresh_enclave.query(researcher, "demo", SQL.replace("n FROM", "m FROM"), 1.0, hold=False)

    def overrun(*args: object, **kwargs: object) -> None:
        raise ExecutionError("execution_timeout")

    monkeypatch.setattr(Enclave, "execute_unprotected", overrun)
    with pytest.raises(QueryError, match="execution_timeout"):
        fresh_enclave.query(researcher, "demo", SQL.replace("n FROM", "k FROM"), 0.25, hold=False)

    after = {decision: value("enclave_queries_total", decision=decision, stage=stage, dataset="demo", code=code)
             for decision, stage, code in (("released", "record release", ""), ("replayed", "replay", ""),
                                           ("refused", "check+rewrite+bind", "check_failed"),
                                           ("refused", "reserve+audit", "budget_exceeded"),
                                           ("failed", "execute", "execution_timeout"))}
    assert {k: after[k] - before[k] for k in after} == {k: 1.0 for k in after}
    assert math.isclose(value("enclave_epsilon_spent_total", dataset="demo") - spent, 1.25)  # charged twice
    assert value("enclave_stage_duration_seconds_count", stage="execute") - executed == 2
    assert value("enclave_audit_append_duration_seconds_count") - appended >= 5  # one per recorded decision
    suppressed = sum(cell.suppressed for row in released.rows for cell in row)
    assert value("enclave_cells_suppressed_total", dataset="demo") >= suppressed

    text = generate_latest(REGISTRY).decode()
    for secret in (MARKER, researcher, key_id, key, "SELECT", "enrollments"):
        assert secret not in text


def test_queue_depth_is_a_gauge_the_job_queue_sets() -> None:
    metrics.set_queue_depth(7)
    assert value("enclave_queue_depth") == 7
    metrics.set_queue_depth(0)
    assert value("enclave_queue_depth") == 0


def test_an_unknown_decision_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown decision"):
        metrics.query_decided("maybe", "demo")


def test_a_rolled_back_transaction_is_not_an_append(fresh_enclave: Enclave) -> None:
    appended = value("enclave_audit_append_duration_seconds_count")
    with pytest.raises(RuntimeError), fresh_enclave.audit.transaction():
        raise RuntimeError("rolled back")
    assert value("enclave_audit_append_duration_seconds_count") == appended
    with fresh_enclave.audit.transaction() as tx:
        tx.checkpoint()
    assert value("enclave_audit_append_duration_seconds_count") == appended + 1
