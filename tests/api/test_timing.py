"""Predictable execution (invariant 10): what a researcher observes of a query besides its numbers, its
response time and its outcome, depends on the query, the policy and public metadata, never on the data.

The finding: on the demo, `... a.scale_score >= 692 ...` (692 the true maximum, held by one child) took
seconds or timed out through a three-way self-join, and `>= 693` answered in 0.1 s, so a binary search
found any column's maximum or minimum for almost no ε. Now each joined table keeps at most R rows of a
person before the join, the worst case is known before the run (and the three-way self-join is refused
for it), and every charged query is answered at the deadline set from that worst case.
"""

from __future__ import annotations

import statistics
import threading
import time

import duckdb
import httpx
import pytest

from enclave.pipeline import Enclave, QueryError
from enclave.policy.rules import Execution
from tests.api.conftest import Service

FINDING = ("SELECT COUNT(*) AS n FROM assessments a JOIN assessments a2 ON a.person_id = a2.person_id "
           "JOIN assessments a3 ON a.person_id = a3.person_id "
           "WHERE a.scale_score {op} {value} AND CAST(a.subject AS INTEGER) IS NULL")
PROBE = ("SELECT COUNT(*) AS n FROM assessments a JOIN assessments a2 ON a.person_id = a2.person_id "
         "WHERE a.scale_score {op} {value} AND CAST(a.subject AS INTEGER) IS NULL")
REPEATS = 3


@pytest.fixture(scope="module")
def extremes(plain: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """The true minimum and maximum score, read with plain DuckDB on a copy of the demo."""
    low, high = plain.execute("SELECT min(scale_score), max(scale_score) FROM assessments").fetchone()
    return int(low), int(high)


def test_the_findings_three_way_self_join_is_refused_for_its_worst_case_before_anything_is_spent(
        fresh_enclave: Enclave, extremes: tuple[int, int]) -> None:
    fresh_enclave.ensure_demo_grant()
    before = fresh_enclave.audit.records()
    sql = FINDING.format(op=">=", value=extremes[1])
    with pytest.raises(QueryError) as raised:
        fresh_enclave.query("demo-researcher", "demo", sql, 0.001)
    assert raised.value.code == "check_failed"
    (violation,) = raised.value.violations
    assert violation.code == "worst_case_too_large"
    assert (violation.line, violation.col) == (1, sql.index("assessments a3") + 1)
    assert "join fewer tables" in (violation.remedy or "")
    charged = [r for r in fresh_enclave.audit.records(len(before) + 1) if r["event"] == "query.charged"]
    assert charged == []


def test_check_reports_the_deadline_and_worst_case(fresh_enclave: Enclave) -> None:
    prepared = fresh_enclave.prepare("demo", PROBE.format(op=">=", value=0))
    assert prepared.cost is not None
    table_rows = fresh_enclave._sandbox(fresh_enclave.version("demo")).table_rows()
    bound = fresh_enclave.manifest("demo").contribution_bounds.max_rows_per_unit
    assert prepared.cost.worst_case_rows == table_rows["assessments"] * bound
    execution = fresh_enclave.rules.execution
    assert prepared.cost.deadline_seconds == round(
        execution.base_seconds + prepared.cost.worst_case_rows / execution.rows_per_second, 3)


def _probe(client: httpx.Client, sql: str, epsilon: float) -> tuple[float, int, str | None]:
    started = time.perf_counter()
    response = client.post("/v1/queries", json={"dataset": "demo", "sql": sql, "epsilon": epsilon})
    elapsed = time.perf_counter() - started
    code = None if response.status_code == 200 else response.json()["error"]["code"]
    return elapsed, response.status_code, code


@pytest.mark.parametrize("side", ["max", "min"])
def test_a_constant_beyond_the_extreme_answers_at_the_same_time_with_the_same_outcome(
        service: Service, extremes: tuple[int, int], side: str) -> None:
    """Two probes that differ only in a constant at the extreme and one beyond it, alternated over real
    HTTP: the same outcome, and medians within 10% (each answer comes at the query's deadline)."""
    low, high = extremes
    at, beyond = ((">=", high), (">=", high + 1)) if side == "max" else (("<=", low), ("<=", low - 1))
    client = service.client("bob")
    times: dict[str, list[float]] = {"at": [], "beyond": []}
    outcomes: set[tuple[int, str | None]] = set()
    for i in range(REPEATS):
        for name, (op, value) in (("at", at), ("beyond", beyond)):
            # a new ε per probe: an identical request would be answered from its stored release
            elapsed, status, code = _probe(client, PROBE.format(op=op, value=value), 0.001 + 1e-6 * (2 * i + len(name)))
            times[name].append(elapsed)
            outcomes.add((status, code))
    assert outcomes == {(200, None)}
    first, second = statistics.median(times["at"]), statistics.median(times["beyond"])
    assert abs(first - second) <= 0.10 * max(first, second), times
    deadline = service.enclave.prepare("demo", PROBE.format(op=at[0], value=at[1])).cost.deadline_seconds
    assert min(times["at"] + times["beyond"]) >= deadline  # none answered before its deadline


def test_an_overrun_is_answered_at_the_deadline_as_a_timeout_and_stays_charged(
        fresh_enclave: Enclave, extremes: tuple[int, int]) -> None:
    """A cost model that underestimates the engine: both probes overrun, and both are the same timeout."""
    fresh_enclave.ensure_demo_grant()
    fast = Execution(**{**fresh_enclave.rules.execution.model_dump(), "base_seconds": 0.001,
                        "rows_per_second": 10**12})
    fresh_enclave.rules = fresh_enclave.rules.model_copy(update={"execution": fast})
    codes = []
    for i, value in enumerate((extremes[1], extremes[1] + 1)):
        with pytest.raises(QueryError) as raised:
            fresh_enclave.query("demo-researcher", "demo", PROBE.format(op=">=", value=value), 0.001 + i * 1e-6)
        codes.append(raised.value.code)
    assert codes == ["execution_timeout", "execution_timeout"]
    records = fresh_enclave.audit.records()
    assert [r["event"] for r in records if r["event"] in ("query.charged", "query.failed")] == [
        "query.charged", "query.failed"] * 2


def test_an_identical_request_in_flight_is_not_answered_before_the_first_one(service: Service) -> None:
    """Found with the asynchronous queries: the first request's release was recorded when the engine
    finished, and an identical request waiting on its claim was answered as a replay at that moment, so
    its response time measured the engine. The replay is answered no earlier than the first one."""
    client = service.client("alice")
    sql = PROBE.format(op=">=", value=3)  # a join: the deadline is well past the engine's time
    answers: list[dict[str, object]] = []

    def ask() -> None:
        started = time.monotonic()
        response = client.post("/v1/queries", json={"dataset": "demo", "sql": sql, "epsilon": 0.01})
        answers.append({"status": response.status_code, "replayed": response.json().get("replayed"),
                        "started": started, "ended": time.monotonic()})

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.15)  # the first has claimed the request key and is running when the second comes
    for thread in threads:
        thread.join()
    assert [a["status"] for a in answers] == [200, 200]
    (original,) = [a for a in answers if not a["replayed"]]
    (replayed,) = [a for a in answers if a["replayed"]]
    prepared = service.enclave.prepare("demo", sql)
    assert prepared.cost is not None
    answer_after = prepared.cost.deadline_seconds + service.enclave.rules.execution.base_seconds
    assert original["ended"] - original["started"] >= answer_after  # type: ignore[operator]
    assert replayed["ended"] >= original["ended"] - 0.05  # type: ignore[operator]
