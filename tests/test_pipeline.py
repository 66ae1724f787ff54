"""End to end on the embedded store: SQL in, a protected and audited release out, or a recorded refusal."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from enclave.audit.signing import load_public_key
from enclave.audit.verify import verify_lines
from enclave.budget.ledger import grant, live_totals, rebuild_from_log
from enclave.pipeline import Enclave, QueryError

SQL = "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments GROUP BY school ORDER BY school"
RELEASE_FIELDS = {"seq", "time", "actor", "event", "decision", "reasons", "prev_hash", "hash", "query_id",
                  "dataset", "data_version", "engine", "groups", "cells", "suppressed_cells", "payload_sha256"}


@pytest.fixture
def fresh(fresh_enclave):
    with fresh_enclave.audit.transaction() as tx:
        grant(tx, "steward", "alice", "demo", 3.0, 1e-6)
    return fresh_enclave


def records(enclave: Enclave, event: str) -> list[dict]:
    return [r for r in enclave.audit.records() if r["event"] == event]


def test_a_query_returns_a_protected_table_recorded_before_the_response(fresh):
    release = fresh.query("alice", "demo", SQL, 1.0)
    assert [c.name for c in release.columns] == ["school", "n", "absent"]
    schools = [row[0].value for row in release.rows]
    assert schools[:-1] == sorted(schools[:-1])
    assert schools[-1] is None  # NULL is a key of its own, sorted last; nobody has it here
    assert len(release.rows) == 21
    for row in release.rows[:-1]:
        count, mean = row[1], row[2]
        assert isinstance(count.value, int)
        assert count.mechanism == "discrete_laplace"
        assert count.scale > 0
        assert count.interval[0] < count.value < count.interval[1]
        assert mean.mechanism == "laplace_ratio"
        assert 0 <= mean.value <= 180
    assert release.epsilon == 1.0
    assert release.epsilon_remaining == pytest.approx(2.0)
    [charged] = records(fresh, "query.charged")
    [released] = records(fresh, "query.released")
    assert charged["seq"] < released["seq"] == release.audit_seq
    assert released["payload_sha256"] == hashlib.sha256(release.payload().encode()).hexdigest()
    assert set(released) == RELEASE_FIELDS  # shape and hashes only: no value of the data
    assert release.engine == released["engine"] == charged["engine"] == "duckdb"  # who computed the true values
    assert charged["sql_submitted"] == SQL
    assert charged["rules_sha256"] == fresh.rules.sha256


def test_an_identical_request_replays_the_answer_and_spends_nothing(fresh):
    first = fresh.query("alice", "demo", SQL, 1.0)
    again = fresh.query("alice", "demo", "select school, count(*) as n, avg(days_absent) as absent "
                        "from enrollments group by school order by school", 1.0)
    assert again.replayed
    assert not first.replayed
    assert again.rows == first.rows
    assert again.query_id == first.query_id
    assert again.epsilon_remaining == first.epsilon_remaining
    assert len(records(fresh, "query.charged")) == 1
    assert len(records(fresh, "query.replayed")) == 1
    other = fresh.query("alice", "demo", SQL, 0.5)  # another ε is another request
    assert not other.replayed
    assert other.epsilon_remaining == pytest.approx(1.5)


def test_refusals_are_recorded_with_their_reasons_and_spend_nothing(fresh):
    with pytest.raises(QueryError) as refused:
        fresh.query("alice", "demo", "SELECT person_id, count(*) FROM children GROUP BY person_id")
    assert refused.value.code == "check_failed"
    assert {v.code for v in refused.value.violations} == {"restricted_column"}
    with pytest.raises(QueryError) as mismatch:
        fresh.query("alice", "demo", "SELECT count(*) FROM children WHERE gender < 1")
    assert mismatch.value.violations[0].code == "type_mismatch"
    with pytest.raises(QueryError) as too_much:
        fresh.query("alice", "demo", SQL, 5.0)
    assert too_much.value.code == "epsilon_out_of_range"
    with pytest.raises(QueryError) as no_grant:
        fresh.query("bob", "demo", SQL)
    assert no_grant.value.code == "no_grant"
    refusals = records(fresh, "query.refused")
    assert [r["decision"] for r in refusals] == ["deny"] * 4
    assert refusals[0]["reasons"][0].startswith("restricted_column: ")
    assert records(fresh, "query.charged") == []


def test_a_request_over_budget_is_refused_before_it_runs(fresh, monkeypatch):
    fresh.query("alice", "demo", SQL, 2.0)
    ran = []
    monkeypatch.setattr(type(fresh), "execute_unprotected", lambda *a: ran.append(a))
    with pytest.raises(QueryError) as refused:
        fresh.query("alice", "demo", "SELECT COUNT(*) FROM children", 1.5)
    assert refused.value.code == "budget_exceeded"
    assert ran == []
    assert "ε=1.5" in refused.value.message
    assert "you have ε=1, δ=1e-06 left on demo" in refused.value.message


def test_nothing_is_released_when_the_release_cannot_be_recorded(fresh, monkeypatch):
    from enclave.disclosure import replay

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(replay, "complete", broken)
    with pytest.raises(QueryError) as failed:
        fresh.query("alice", "demo", SQL, 1.0)
    assert failed.value.code == "audit_unavailable"
    assert records(fresh, "query.released") == []  # rolled back with the failed transaction
    assert len(records(fresh, "query.charged")) == 1  # and the charge stays spent


def test_an_execution_failure_is_recorded_and_keeps_the_charge(fresh, monkeypatch):
    from enclave.execute.sandbox import ExecutionError

    def timeout(*args):
        raise ExecutionError("execution_timeout")

    monkeypatch.setattr(type(fresh), "execute_unprotected", timeout)
    with pytest.raises(QueryError) as failed:
        fresh.query("alice", "demo", SQL, 1.0)
    assert failed.value.code == "execution_timeout"
    [record] = records(fresh, "query.failed")
    assert record["code"] == "execution_timeout"
    with fresh.audit.transaction() as tx:
        assert live_totals(tx)[("alice", "demo")] == (10**9, 0)


def test_the_log_verifies_and_the_ledger_rebuilds_from_it(fresh):
    for epsilon in (0.5, 0.25):
        fresh.query("alice", "demo", SQL, epsilon)
    fresh.query("alice", "demo", "SELECT scale_score, COUNT(*) FROM assessments GROUP BY 1", 0.5)
    buffer = io.StringIO()
    fresh.audit.export(buffer)
    assert verify_lines(buffer.getvalue().splitlines(), load_public_key(fresh.public_key_path)).ok
    with fresh.audit.transaction() as tx:
        assert rebuild_from_log(fresh.audit.records()) == live_totals(tx)
        eps, delta = live_totals(tx)[("alice", "demo")]
    assert eps == 1_250_000_000
    assert 0 < delta <= 100_000_000


def test_release_csv_has_values_intervals_and_suppression(fresh):
    release = fresh.query("alice", "demo", "SELECT gender, COUNT(*) AS n FROM children GROUP BY gender", 1.0)
    lines = release.to_csv().splitlines()
    assert lines[0] == "gender,n,n_lower,n_upper,n_suppressed"
    assert len(lines) == 5  # F, M, X and the children without a recorded gender (an empty key)
    assert lines[-1].startswith(",")
    assert json.loads(release.model_dump_json())["rows"][0][1]["mechanism"] == "discrete_laplace"


def test_order_and_limit_trim_the_noisy_release(fresh):
    release = fresh.query("alice", "demo", "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school "
                          "ORDER BY n DESC LIMIT 3 OFFSET 1", 1.0)
    values = [row[1].value for row in release.rows]
    assert len(values) == 3
    assert values == sorted(values, reverse=True)
    [released] = records(fresh, "query.released")
    assert released["groups"] == 3


def test_round_of_an_aggregate_rounds_the_released_value(fresh):
    release = fresh.query("alice", "demo", "SELECT ROUND(AVG(days_absent), 1) AS a, ROUND(COUNT(*), -2) AS n "
                          "FROM enrollments", 1.0)
    mean, count = release.rows[0]
    assert mean.value == round(mean.value, 1)
    assert count.value % 100 == 0
    assert count.interval[0] % 100 == 0
