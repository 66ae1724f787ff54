"""Asynchronous queries end to end: the real service over HTTP (uvicorn), a real Redis, real
`enclave worker` processes (rq), the real pipeline on the demo database.

Each test has its own enclave home, so its own audit store, budget and Redis namespace (the namespace
comes from the store's signing key); the module's Redis server is its own (tests/conftest.py). Slow
queries are real: a rules file whose cost model budgets 200,000 rows a second gives the self-join below
a deadline of about 4.4 s (the worker holds it until then) and the one-table query about 0.5 s.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from enclave.audit.signing import load_public_key
from enclave.audit.verify import verify_lines
from enclave.budget.ledger import grant, live_totals, rebuild_from_log, remaining
from enclave.catalog.demo import DemoData
from enclave.jobs.queue import LEASE_SECONDS
from enclave.settings import PROJECT_ROOT
from tests import stores
from tests.api.conftest import TEST_CHILDREN, Service, assert_envelope, fresh_home, running_service

FAST = "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments GROUP BY school ORDER BY school"
SLOW = "SELECT COUNT(*) AS n FROM assessments a JOIN assessments a2 ON a.person_id = a2.person_id"


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rules = yaml.safe_load((PROJECT_ROOT / "query_rules" / "default.yaml").read_text())
    rules["execution"].update(rows_per_second=200_000, async_after_seconds=3)
    path = tmp_path_factory.mktemp("rules") / "slow.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


@contextmanager
def service_on(tmp_path: Path, demo_data: DemoData, **overrides: Any) -> Iterator[Service]:
    with running_service(fresh_home(tmp_path / "home", demo_data), **overrides) as service:
        yield service


@pytest.fixture
def service(tmp_path: Path, demo_data: DemoData, redis_url: str, rules_file: Path) -> Iterator[Service]:
    with service_on(tmp_path, demo_data, redis_url=redis_url, rules_file=rules_file,
                    rate_limit="100000/minute") as running:  # the tests poll
        yield running


def worker_env(service: Service) -> dict[str, str]:
    settings = service.settings
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "ENCLAVE_HOME": str(settings.home),
            "ENCLAVE_DEMO_CHILDREN": str(TEST_CHILDREN), "ENCLAVE_RULES_FILE": str(settings.rules_file),
            "ENCLAVE_REDIS_URL": settings.redis_url or "", **stores.environment(settings.home)}


@contextmanager
def worker(service: Service, concurrency: int = 1) -> Iterator[subprocess.Popen]:
    """`enclave worker` as a process of its own; stopped with SIGTERM (unless the test killed it)."""
    process = subprocess.Popen([sys.executable, "-m", "enclave.cli", "worker", "--concurrency", str(concurrency)],
                               cwd=PROJECT_ROOT, env=worker_env(service), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()



def submit(client: httpx.Client, sql: str, epsilon: float, mode: str = "async") -> httpx.Response:
    return client.post("/v1/queries", json={"dataset": "demo", "sql": sql, "epsilon": epsilon, "mode": mode})


def poll(client: httpx.Client, query_id: str, until: set[str], timeout: float = 60) -> dict[str, Any]:
    """GET the query until its state is one of `until` ("released" for a Release); its last body."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/queries/{query_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        state = body.get("state", "released" if "rows" in body else None)
        if state in until:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def events(service: Service, query_id: str) -> list[str]:
    return [r["event"] for r in service.enclave.audit.records() if r.get("query_id") == query_id]


def spent(service: Service, who: str = "alice") -> float:
    with service.enclave.audit.transaction() as tx:
        left = remaining(tx, who, "demo")
    assert left is not None
    return round(5.0 - left.epsilon, 9)


def assert_ledger_is_the_log(service: Service) -> None:
    audit = service.enclave.audit
    with audit.transaction() as tx:
        assert rebuild_from_log(audit.records()) == live_totals(tx)
    out = io.StringIO()
    audit.export(out)
    report = verify_lines(out.getvalue().splitlines(), load_public_key(service.enclave.public_key_path))
    assert report.ok, report
    verify = subprocess.run([sys.executable, "-m", "enclave.cli", "audit", "verify"], cwd=PROJECT_ROOT,
                            env=worker_env(service), capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_async_query_is_queued_then_released_like_a_sync_one(service: Service) -> None:
    client = service.client("alice")
    sync = client.post("/v1/queries", json={"dataset": "demo", "sql": FAST, "epsilon": 0.2, "mode": "sync"})
    assert sync.status_code == 200, sync.text
    queued = submit(client, FAST, 0.3)
    assert queued.status_code == 202, queued.text
    status = queued.json()
    assert status["state"] == "queued"
    assert status["charged"] is False
    query_id = status["query_id"]
    assert spent(service) == 0.2  # queued: nothing charged yet
    assert client.get(f"/v1/queries/{query_id}").json()["state"] == "queued"
    with worker(service):
        release = poll(client, query_id, {"released", "failed"})
    assert release["query_id"] == query_id
    assert release["columns"] == sync.json()["columns"]
    assert len(release["rows"]) == len(sync.json()["rows"])
    assert release["epsilon"] == 0.3
    assert spent(service) == 0.5
    assert events(service, query_id) == ["query.queued", "query.charged", "query.released"]
    records = {r["event"]: r for r in service.enclave.audit.records() if r.get("query_id") == query_id}
    deadline = records["query.charged"]["plan"]["deadline_seconds"]
    held = (datetime.fromisoformat(records["query.released"]["time"])
            - datetime.fromisoformat(records["query.charged"]["time"])).total_seconds()
    assert held >= deadline  # released at the answer time, not when the engine finished (invariant 10)
    # the same request again is a replay, from the shared cache, recorded first
    again = submit(client, FAST, 0.3, mode="sync").json()
    assert again["replayed"] is True
    assert again["query_id"] == query_id
    replayed = [r for r in service.enclave.audit.records() if r["event"] == "query.replayed"]
    assert replayed[-1]["query_id"] == query_id
    assert replayed[-1]["payload_sha256"] == records["query.released"]["payload_sha256"]
    assert_ledger_is_the_log(service)


def test_a_long_deadline_goes_async_on_its_own_unless_sync_is_asked_for(service: Service) -> None:
    client = service.client("alice")
    auto = client.post("/v1/queries", json={"dataset": "demo", "sql": SLOW, "epsilon": 0.1})
    assert auto.status_code == 202, auto.text
    assert auto.json()["deadline_seconds"] > 3
    short = client.post("/v1/queries", json={"dataset": "demo", "sql": FAST, "epsilon": 0.1})
    assert short.status_code == 200  # a short deadline stays synchronous
    assert client.delete(f"/v1/queries/{auto.json()['query_id']}").json()["state"] == "cancelled"


def test_a_query_with_weights_or_targets_is_never_queued(service: Service) -> None:
    """A job keeps its SQL and ε only, so weights or targets run synchronously: `auto` stays sync even for a
    long deadline, and `async` is refused before anything is planned or spent."""
    client = service.client("alice")
    asked = {"dataset": "demo", "sql": FAST, "epsilon": 0.1, "weights": {"n": 2.0}}
    assert_envelope(client.post("/v1/queries", json={**asked, "mode": "async"}), 409, "async_not_allocated")
    assert spent(service) == 0.0
    auto = client.post("/v1/queries", json={**asked, "sql": SLOW})
    assert auto.status_code == 200, auto.text  # answered, not queued
    assert auto.json()["epsilon"] == 0.1


def queue_depth(service: Service) -> float:
    """`enclave_queue_depth` as an operator's scraper reads it (from the store's jobs, not from Redis)."""
    text = service.client("auditor").get("/metrics").text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("enclave_queue_depth")))


def test_cancelling_a_queued_query_spends_nothing(service: Service) -> None:
    client = service.client("alice")
    before = queue_depth(service)
    query_id = submit(client, FAST, 0.4).json()["query_id"]
    assert queue_depth(service) == before + 1
    assert assert_envelope(service.client("bob").delete(f"/v1/queries/{query_id}"), 404, "not_found")
    cancelled = client.delete(f"/v1/queries/{query_id}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["charged"] is False
    assert queue_depth(service) == before
    assert_envelope(client.delete(f"/v1/queries/{query_id}"), 409, "conflict")
    with worker(service):  # the worker takes the job, finds it cancelled and leaves it
        deadline = time.monotonic() + 30
        while redis.Redis.from_url(service.settings.redis_url).exists(f"rq:job:{query_id}"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert events(service, query_id) == ["query.queued", "query.cancelled"]
    assert spent(service) == 0.0
    assert poll(client, query_id, {"cancelled"})["state"] == "cancelled"
    assert_ledger_is_the_log(service)


def wait_charged(client: httpx.Client, query_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while not (body := client.get(f"/v1/queries/{query_id}").json()).get("charged"):
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    return body


def test_cancelling_after_the_charge_keeps_it_spent_and_releases_nothing(service: Service) -> None:
    client = service.client("alice")
    with worker(service):
        query_id = submit(client, SLOW, 0.25).json()["query_id"]
        running = wait_charged(client, query_id)
        assert running["state"] in ("executing", "protecting")
        cancelled = client.delete(f"/v1/queries/{query_id}").json()
        assert cancelled["state"] == "cancelled"
        assert cancelled["charged"] is True
        time.sleep(running["deadline_seconds"] + 1)  # past its answer time: the worker discarded the result
    assert events(service, query_id) == ["query.queued", "query.charged", "query.cancelled"]
    assert spent(service) == 0.25
    assert poll(client, query_id, {"cancelled"})["state"] == "cancelled"
    # the charge's claim on the request key is dropped: the same request runs (and is charged) anew
    with worker(service):
        again = submit(client, SLOW, 0.25).json()["query_id"]
        assert poll(client, again, {"released", "failed"})["query_id"] == again
    assert spent(service) == 0.5
    assert_ledger_is_the_log(service)


def alive_in_group(group: int) -> list[int]:
    """Processes of a process group that are running (not zombies waiting to be reaped)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_a_worker_killed_mid_query_leaves_it_released_once_and_charged_once(service: Service) -> None:
    client = service.client("alice")
    with worker(service) as first:
        query_id = submit(client, SLOW, 0.5).json()["query_id"]
        wait_charged(client, query_id)
        os.kill(first.pid, signal.SIGKILL)  # the pool; its workers die with it (PR_SET_PDEATHSIG)
        first.wait()
        deadline = time.monotonic() + 10
        while alive_in_group(first.pid):  # no worker outlives the pool to finish the job
            assert time.monotonic() < deadline, alive_in_group(first.pid)
            time.sleep(0.1)
    assert client.get(f"/v1/queries/{query_id}").json()["state"] in ("executing", "protecting")
    with worker(service):
        release = poll(client, query_id, {"released", "failed"}, timeout=90)

    assert release["query_id"] == query_id
    counted = Counter(events(service, query_id))
    assert counted == {"query.queued": 1, "query.charged": 1, "query.retried": 1, "query.released": 1}
    assert spent(service) == 0.5
    assert_ledger_is_the_log(service)


def test_queued_queries_survive_a_redis_flush(service: Service) -> None:
    client = service.client("alice")
    ids = [submit(client, FAST, epsilon).json()["query_id"] for epsilon in (0.11, 0.12)]
    redis.Redis.from_url(service.settings.redis_url).flushall()  # the queue is gone; the store has the jobs
    started = time.monotonic()
    with worker(service):
        for query_id in ids:
            assert poll(client, query_id, {"released", "failed"}, timeout=60)["query_id"] == query_id
    assert time.monotonic() - started >= LEASE_SECONDS  # found by the sweeper, not by the lost queue
    for query_id in ids:
        assert Counter(events(service, query_id)) == {"query.queued": 1, "query.charged": 1, "query.released": 1}
    assert spent(service) == 0.23
    # a flushed cache costs a read of the store: the replay still answers, recorded
    redis.Redis.from_url(service.settings.redis_url).flushall()
    again = submit(client, FAST, 0.11, mode="sync").json()
    assert again["replayed"] is True
    assert again["query_id"] == ids[0]
    assert_ledger_is_the_log(service)


def refusals(client: httpx.Client, mode: str) -> list[tuple[int, str]]:
    cases = [("SELECT person_id FROM children", 0.1), (FAST, 3.0), (FAST, 200.0)]
    out = []
    for sql, epsilon in cases:
        response = submit(client, sql, epsilon, mode)
        out.append((response.status_code, response.json()["error"]["code"]))
    return out


def test_async_refusals_are_answered_at_once_with_the_codes_of_sync_mode(service: Service) -> None:
    with service.enclave.audit.transaction() as tx:
        grant(tx, "steward", "bob", "demo", 0.5, 1e-5, purpose="study")  # 0.5: too little for ε 1.9 below
    bob = service.client("bob")
    sync, asynchronous = refusals(bob, "sync"), refusals(bob, "async")
    assert sync == asynchronous
    assert sync == [(400, "check_failed"), (400, "epsilon_out_of_range"), (422, "invalid_request")]
    for mode in ("sync", "async"):
        assert (submit(bob, FAST, 1.9, mode).status_code, submit(bob, FAST, 1.9, mode).json()["error"]["code"]) == (
            400, "budget_exceeded")
    key = service.issue("carol", {"researcher"})  # no grant
    carol = httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {key}"})
    with carol:
        assert [submit(carol, FAST, 0.1, mode).status_code for mode in ("sync", "async")] == [403, 403]
        assert {submit(carol, FAST, 0.1, mode).json()["error"]["code"] for mode in ("sync", "async")} == {"no_grant"}
    assert not [r for r in service.enclave.audit.records() if r["event"] == "query.queued"]


def test_without_redis_async_is_refused_and_long_queries_stay_synchronous(
        tmp_path: Path, demo_data: DemoData, rules_file: Path) -> None:
    with service_on(tmp_path, demo_data, rules_file=rules_file) as service:
        client = service.client("alice")
        error = assert_envelope(submit(client, FAST, 0.1), 409, "async_unavailable")
        assert "ENCLAVE_REDIS_URL" in error["message"]
        slow = client.post("/v1/queries", json={"dataset": "demo", "sql": SLOW, "epsilon": 0.1})
        assert slow.status_code == 200  # auto: no queue, so answered in this response
        env = {**worker_env(service), "ENCLAVE_REDIS_URL": ""}
        refused = subprocess.run([sys.executable, "-m", "enclave.cli", "worker"], cwd=PROJECT_ROOT, env=env,
                                 capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "ENCLAVE_REDIS_URL" in refused.stderr
