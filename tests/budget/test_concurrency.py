"""The budget under concurrency, crashes and restarts: never overspent, never charged twice, never lost.

Every test runs the real pipeline (check, rewrite, plan, reserve, execute, protect, release) on a fresh
home with its own copy of a small generated demo database, and then checks the three places that must
agree: what the callers got, the ledger (`charges`, `releases`), and the signed log (rebuilt totals,
event counts, `verify_lines` on an export). Amounts are compared in the ledger's integer units.

Separate OS processes are `tests/budget/_worker.py`, run with this interpreter.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from enclave import pipeline
from enclave.audit.signing import load_public_key
from enclave.audit.verify import Report, verify_lines
from enclave.budget.ledger import EPSILON_UNIT, Remaining, grant, live_totals, rebuild_from_log, remaining
from enclave.catalog.demo import DemoData, ensure_demo
from enclave.catalog.manifest import Manifest
from enclave.disclosure import replay
from enclave.disclosure.release import Release
from enclave.pipeline import Enclave, QueryError
from enclave.settings import PROJECT_ROOT
from tests import stores
from tests.budget._worker import RACE_SQL

CHILDREN = 2_000
CHARGE = 0.3
CHARGE_UNITS = 300_000_000  # ε 0.3 in units of 1e-9; a COUNT grouped by public keys costs no δ
WORKER = Path(__file__).with_name("_worker.py")
WORKER_ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}

PROCESSES = 2
THREADS = 16


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_data(manifest: Manifest, tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return ensure_demo(manifest, tmp_path_factory.mktemp("concurrency-data"), children=CHILDREN)


@pytest.fixture
def home(tmp_path: Path, demo_data: DemoData) -> Path:
    """A fresh home with its own copy of the demo database (one DuckDB file per home, see test_sandbox)."""
    home = tmp_path / "home"
    data = home / "data"
    data.mkdir(parents=True)
    shutil.copytree(demo_data.directory, data / demo_data.directory.name)
    return home


@pytest.fixture
def open_enclave() -> Iterator[Callable[[Path], Enclave]]:
    """Open Enclaves on a home; every one is closed at the end of the test."""
    opened: list[Enclave] = []

    def open_(home: Path) -> Enclave:
        opened.append(Enclave(stores.settings(home, demo_children=CHILDREN)))
        return opened[-1]

    yield open_
    for enclave in opened:
        enclave.close()


def grant_r(enclave: Enclave) -> None:
    with enclave.audit.transaction() as tx:
        grant(tx, "steward", "r", "demo", 1.0, 1e-5)


def ledger(enclave: Enclave) -> tuple[dict[tuple[str, str], tuple[int, int]], Remaining | None]:
    with enclave.audit.transaction() as tx:
        return live_totals(tx), remaining(tx, "r", "demo")


def verified(enclave: Enclave) -> Report:
    out = io.StringIO()
    enclave.audit.export(out)
    return verify_lines(out.getvalue().splitlines(), load_public_key(enclave.public_key_path))


def events(enclave: Enclave) -> list[str]:
    """The log's events, less the demo data's own (its deliveries and data version, recorded on first use)."""
    return [str(record["event"]) for record in enclave.audit.records() if not str(record["event"]).startswith("data.")]


def release_rows(enclave: Enclave) -> list[tuple[str, str, str, int | None]]:
    with enclave.audit.reading() as connection:
        return connection.execute(
            "SELECT request_key, query_id, status, seq FROM releases ORDER BY claimed_at").fetchall()


def assert_consistent(enclave: Enclave, spent_units: int, released: int) -> None:
    """Ledger = log, the export verifies, and every released answer is backed by its query.released record."""
    totals, left = ledger(enclave)
    assert totals == {("r", "demo"): (spent_units, 0)}
    assert left == Remaining((EPSILON_UNIT - spent_units) / EPSILON_UNIT, 1e-5)
    records = enclave.audit.records()
    assert rebuild_from_log(records) == totals
    report = verified(enclave)
    assert report.ok, report.summary()
    assert report.records == len(records)
    by_seq = {record["seq"]: record for record in records}
    rows = [row for row in release_rows(enclave) if row[2] == "released"]
    assert len(rows) == released
    for _, query_id, _, seq in rows:
        assert by_seq[seq]["event"] == "query.released"
        assert by_seq[seq]["query_id"] == query_id
    charged = {record["query_id"] for record in records if record["event"] == "query.charged"}
    assert {record["query_id"] for record in records if record["event"] == "query.released"} <= charged


# --- 1. many processes, many threads, one budget ----------------------------------------------------


def test_budget_race_across_processes(home: Path, tmp_path: Path, open_enclave: Callable[[Path], Enclave]) -> None:
    enclave = open_enclave(home)
    grant_r(enclave)
    go = tmp_path / "go"
    readies = [tmp_path / f"ready-{p}" for p in range(PROCESSES)]
    workers = [subprocess.Popen(
        [sys.executable, str(WORKER), "race", str(home), str(CHILDREN), str(p * THREADS), str(THREADS), str(CHARGE),
         str(readies[p]), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
        env={**WORKER_ENV, **stores.environment(home)})
        for p in range(PROCESSES)]
    try:
        deadline = time.monotonic() + 30
        while not all(ready.exists() for ready in readies):
            assert all(worker.poll() is None for worker in workers), "a worker exited before the start"
            assert time.monotonic() < deadline, "the workers did not reach the start line"
            time.sleep(0.01)
        go.touch()  # every thread of every process is waiting at its barrier: all 32 go at once
        outputs = [worker.communicate(timeout=60) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    results = [json.loads(line) for out, _ in outputs for line in out.splitlines()]

    assert sorted(result["i"] for result in results) == list(range(PROCESSES * THREADS))
    assert len({result["pid"] for result in results}) == PROCESSES
    windows = {pid: (min(r["started"] for r in results if r["pid"] == pid),
                     max(r["ended"] for r in results if r["pid"] == pid)) for pid in {r["pid"] for r in results}}
    assert max(start for start, _ in windows.values()) < min(end for _, end in windows.values()), windows

    succeeded = [result for result in results if result["ok"]]
    refused = [result for result in results if not result["ok"]]
    assert len(succeeded) == 3, [r.get("code") for r in refused]
    assert [result["code"] for result in refused] == ["budget_exceeded"] * 29
    assert [result["replayed"] for result in succeeded] == [False] * 3
    assert sorted(round(result["epsilon_remaining"] * EPSILON_UNIT) for result in succeeded) == [
        100_000_000, 400_000_000, 700_000_000]

    records = enclave.audit.records()
    assert Counter(events(enclave)) == {"grant.created": 1, "query.charged": 3, "query.released": 3,
                                        "query.refused": 29}
    assert [r["code"] for r in records if r["event"] == "query.refused"] == ["budget_exceeded"] * 29
    charged = {r["query_id"]: r["sql_submitted"] for r in records if r["event"] == "query.charged"}
    assert {r["query_id"] for r in records if r["event"] == "query.released"} == set(charged)
    assert set(charged) == {result["query_id"] for result in succeeded}
    assert sorted(charged.values()) == sorted(RACE_SQL.format(i=result["i"]) for result in succeeded)
    refused_sql = [r["sql_submitted"] for r in records if r["event"] == "query.refused"]
    assert sorted(refused_sql) == sorted(RACE_SQL.format(i=result["i"]) for result in refused)
    assert_consistent(enclave, 3 * CHARGE_UNITS, released=3)


# --- 2. identical requests at the same moment -------------------------------------------------------


def test_identical_concurrent_requests_charge_once(home: Path, open_enclave: Callable[[Path], Enclave]) -> None:
    enclave = open_enclave(home)
    grant_r(enclave)
    sql = RACE_SQL.format(i=7)
    start_line = threading.Barrier(8)
    answers: list[object] = [None] * 8

    def run(k: int) -> None:
        start_line.wait()
        try:
            answers[k] = enclave.query("r", "demo", sql, CHARGE)
        except Exception as error:
            answers[k] = error

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    releases = [answer for answer in answers if isinstance(answer, Release)]
    assert releases == answers, answers
    first = [release for release in releases if not release.replayed]
    assert len(first) == 1
    assert sum(release.replayed for release in releases) == 7
    assert {release.query_id for release in releases} == {first[0].query_id}
    assert all(release.rows == first[0].rows for release in releases)  # the same cells, the same noise
    assert {release.payload() for release in releases} == {first[0].payload()}
    assert [release.epsilon_remaining for release in releases] == [0.7] * 8

    records = enclave.audit.records()
    assert Counter(events(enclave)) == {"grant.created": 1, "query.charged": 1, "query.released": 1,
                                        "query.replayed": 7}
    assert {r["query_id"] for r in records if r["event"] in ("query.charged", "query.released", "query.replayed")} == {
        first[0].query_id}
    assert_consistent(enclave, CHARGE_UNITS, released=1)


# --- 3. a crash between the charge and the release --------------------------------------------------


def wait_for_charge(worker: subprocess.Popen[str], home: Path) -> None:
    deadline = time.monotonic() + 30
    store = None
    try:
        while True:
            assert worker.poll() is None, f"the worker exited early: {worker.communicate()[1]}"
            assert time.monotonic() < deadline, "no query.charged record appeared"
            if store is None and (home / "audit" / "public-key.pem").exists():  # the worker made the store
                store = Enclave.open_audit(stores.settings(home))[0]
            if store is not None and any(r["event"] == "query.charged" for r in store.records()):
                return
            time.sleep(0.02)
    finally:
        if store is not None:
            store.close()


@pytest.fixture
def killed_mid_query(home: Path) -> tuple[Path, str]:
    """A home where a process charged a query and was SIGKILLed while it executed; and that query's SQL."""
    sql = RACE_SQL.format(i=100)
    worker = subprocess.Popen([sys.executable, str(WORKER), "hang", str(home), str(CHILDREN), sql, str(CHARGE)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                              env={**WORKER_ENV, **stores.environment(home)})
    try:
        wait_for_charge(worker, home)
        worker.send_signal(signal.SIGKILL)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    return home, sql


class JumpingClock:
    """Stands in for `time` in enclave.pipeline only: every monotonic() reading is 10 s after the last."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        self.now += 10.0
        return self.now

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.01))

    @staticmethod
    def perf_counter() -> float:
        return time.perf_counter()


def test_crash_between_charge_and_release(killed_mid_query: tuple[Path, str], monkeypatch: pytest.MonkeyPatch,
                                          open_enclave: Callable[[Path], Enclave]) -> None:
    home, killed_sql = killed_mid_query
    enclave = open_enclave(home)

    # the charge survived the crash, was never released, and the log still verifies
    records = [r for r in enclave.audit.records() if not str(r["event"]).startswith("data.")]
    assert [r["event"] for r in records] == ["grant.created", "query.charged"]
    killed_id = records[1]["query_id"]
    assert records[1]["sql_submitted"] == killed_sql
    assert_consistent(enclave, CHARGE_UNITS, released=0)
    [(key, query_id, status, seq)] = release_rows(enclave)
    assert (query_id, status, seq) == (killed_id, "pending", None)

    # a different query is not held up by the dead claim
    other = enclave.query("r", "demo", RACE_SQL.format(i=101), CHARGE)
    assert (other.replayed, other.epsilon_remaining) == (False, 0.4)

    # the same query, while the dead claim is still taken for live (300 s): it waits, then request_in_progress,
    # without spending anything (the clock in the pipeline jumps, so the 40 s wait passes at once)
    with enclave.audit.transaction() as tx:
        claim = replay.find(tx, key)
    assert claim is not None
    assert replay.is_live(claim)
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "time", JumpingClock())
        with pytest.raises(QueryError) as waited:
            enclave.query("r", "demo", killed_sql, CHARGE)
    assert waited.value.code == "request_in_progress"
    assert ledger(enclave)[0] == {("r", "demo"): (2 * CHARGE_UNITS, 0)}

    # once the claim counts as abandoned, the same query RUNS again: a new charge (the dead one stays spent)
    monkeypatch.setattr(replay, "ABANDONED_AFTER_SECONDS", 0.0)
    again = enclave.query("r", "demo", killed_sql, CHARGE)
    assert (again.replayed, again.epsilon_remaining) == (False, 0.1)
    assert again.query_id not in (killed_id, other.query_id)
    [(_, query_id, status, _)] = [row for row in release_rows(enclave) if row[0] == key]
    assert (query_id, status) == (again.query_id, "released")

    # and from now on it is replayed, free
    replayed = enclave.query("r", "demo", killed_sql, CHARGE)
    assert (replayed.replayed, replayed.query_id, replayed.rows) == (True, again.query_id, again.rows)
    assert [event for event in events(enclave) if event != "query.refused"] == [
        "grant.created", "query.charged", "query.charged", "query.released", "query.charged", "query.released",
        "query.replayed"]
    assert_consistent(enclave, 3 * CHARGE_UNITS, released=2)


def test_request_in_progress_is_recorded(killed_mid_query: tuple[Path, str], monkeypatch: pytest.MonkeyPatch,
                                         open_enclave: Callable[[Path], Enclave]) -> None:
    home, killed_sql = killed_mid_query
    enclave = open_enclave(home)
    monkeypatch.setattr(pipeline, "time", JumpingClock())
    with pytest.raises(QueryError) as waited:
        enclave.query("r", "demo", killed_sql, CHARGE)
    assert waited.value.code == "request_in_progress"
    refused = [r for r in enclave.audit.records() if r["event"] == "query.refused"]
    assert [(r["code"], r["sql_submitted"]) for r in refused] == [("request_in_progress", killed_sql)]


# --- 4. a restart ------------------------------------------------------------------------------------


def test_restart_keeps_budget_and_replays(home: Path, open_enclave: Callable[[Path], Enclave]) -> None:
    sql = RACE_SQL.format(i=3)
    first_enclave = open_enclave(home)
    grant_r(first_enclave)
    first = first_enclave.query("r", "demo", sql, CHARGE)
    assert (first.replayed, first.epsilon_remaining) == (False, 0.7)
    before = ledger(first_enclave)
    version = first_enclave.data_version("demo")
    first_enclave.close()

    enclave = open_enclave(home)
    assert ledger(enclave) == before == ({("r", "demo"): (CHARGE_UNITS, 0)}, Remaining(0.7, 1e-5))
    assert enclave.data_version("demo") == version
    again = enclave.query("r", "demo", sql, CHARGE)
    assert (again.replayed, again.query_id, again.epsilon_remaining) == (True, first.query_id, 0.7)
    assert again.rows == first.rows
    assert again.payload() == first.payload()
    assert ledger(enclave) == before
    assert events(enclave) == ["grant.created", "query.charged", "query.released", "query.replayed"]
    assert_consistent(enclave, CHARGE_UNITS, released=1)
