"""What the service benches share: start the service's processes on loopback, set it up, check its store.

Not a bench itself (tests/test_benches.py skips files that start with an underscore). Used by
bench/service_load.py (route rates under wrk, embedded and deployed) and bench/service_faults.py (a
mixed load with killed workers and a restarted Redis):

- `preflight(script)`: the PostgreSQL server and redis-server the suite uses (tests/stores.py), or exit.
- `running(...)`: one mode of the service on a free loopback port, as a context manager that kills
  whatever it started: embedded (`enclave serve --workers 1` on the home's SQLite store, no Redis) or
  deployed (`enclave serve --workers N` and `enclave worker --concurrency M` on a fresh PostgreSQL schema
  and a Redis server of its own). Keys and one grant are issued through the library before it starts.
- `approve_template` and `release` (over HTTP), `children` (a supervisor's live workers, from /proc).
- `check_store(settings, cap, answers)`: with every process stopped, the invariants a load must leave
  true: spent ε within the cap, no query charged or released twice, every answer a client received
  has its audit record, the log verifies against its signed checkpoints, the ledger rebuilt from the
  log equals the live one, every governed table is the log's projection.

The rate limit is lifted for every bench process by `ENCLAVE_RATE_LIMIT` (RATE_LIMIT below, limits
notation): a bench measures the service, not its limiter.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enclave.access.keys import ensure_principal, issue_key
from enclave.audit.signing import load_public_key
from enclave.audit.state import differences
from enclave.audit.verify import verify_lines
from enclave.budget.ledger import EPSILON_UNIT, grant, live_totals, rebuild_from_log
from enclave.pipeline import Enclave
from enclave.settings import PROJECT_ROOT, Settings
from tests import stores

RATE_LIMIT = "1000000/minute"  # ENCLAVE_RATE_LIMIT for every process a bench starts: the limiter lifted
RESEARCHER = "researcher"


def preflight(script: str) -> None:
    """The PostgreSQL server and redis-server the suite uses, reused or started, or exit saying why not."""
    try:
        stores.server()
        stores.redis_binary()
    except (pytest.skip.Exception, pytest.fail.Exception) as error:
        sys.exit(f"{script} needs PostgreSQL and redis-server: {error}")


def worker_pids(pid: int) -> list[int]:
    """The live worker processes of `pid` (from /proc): its children but multiprocessing's resource tracker."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z" and b"resource_tracker" not in command:
                found.append(int(entry.name))
    return sorted(found)


@dataclass
class Service:
    """One running mode of the service: its settings (for the store check after), URL, keys, processes."""

    mode: str
    settings: Settings
    base: str
    keys: dict[str, str]
    serve: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes] | None
    redis: stores.RedisServer | None
    log: IO[bytes]

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self.serve, self.worker) if p is not None]

    def stop(self, seconds: float = 120) -> None:
        """SIGTERM every process and wait for it (requests in flight finish), then kill what is left."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + seconds
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.log.close()


def setup(settings: Settings, cap: float, delta: float = 1e-5) -> dict[str, str]:
    """Migrate, generate (or adopt) the demo, and issue the keys and the one grant, through the library."""
    enclave = Enclave(settings)
    try:
        enclave.version("demo")
        with enclave.audit.transaction() as tx:
            keys = {}
            for name, roles in ((RESEARCHER, {"researcher"}), ("reviewer", {"reviewer"})):
                ensure_principal(tx, "bench", name, roles)
                keys[name] = issue_key(tx, settings.pepper, "bench", name)
            grant(tx, "bench", RESEARCHER, "demo", cap, delta)
    finally:
        enclave.close()
    return keys


def wait_ready(base: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the service did not become ready")


@contextmanager
def running(scratch: Path, *, deployed: bool, api_workers: int, query_workers: int, children: int, cap: float,
            data: Path | None = None) -> Iterator[Service]:
    """The service in one mode under `scratch/<mode>`, ready; on exit whatever is still running is killed.

    `data`: a demo directory already generated (ensure_demo) to link into the home instead of generating
    it again (DuckDB opens it read-only in every process)."""
    mode = "deployed" if deployed else "embedded"
    home = scratch / mode / "home"
    (scratch / mode).mkdir(parents=True)
    redis = stores.RedisServer(scratch / mode) if deployed else None
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if data is not None:
            (home / "data").mkdir(parents=True)
            (home / "data" / data.name).symlink_to(data)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
        env.update(PYTHONPATH=str(PROJECT_ROOT), ENCLAVE_HOME=str(home), ENCLAVE_DEMO_CHILDREN=str(children),
                   ENCLAVE_RATE_LIMIT=RATE_LIMIT, ENCLAVE_LOG_FORMAT="json")
        store: dict[str, str] = {}
        if redis is not None:
            url, admin = stores.fresh_postgres()
            store = {"database_url": url, "admin_database_url": admin, "redis_url": redis.url}
            env.update({f"ENCLAVE_{name.upper()}": value for name, value in store.items()})
        settings = Settings(home=home, demo_children=children, rate_limit=RATE_LIMIT, **store)
        keys = setup(settings, cap)
        port = stores.free_port()
        log = open(scratch / mode / "service.log", "wb")  # noqa: SIM115 - closed by Service.stop
        command = [sys.executable, "-m", "enclave.cli"]
        serve = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers",
                                  str(api_workers)], env=env, stdout=log, stderr=log, cwd=PROJECT_ROOT)
        processes.append(serve)
        worker = None
        if deployed:
            worker = subprocess.Popen([*command, "worker", "--concurrency", str(query_workers)], env=env,
                                      stdout=log, stderr=log, cwd=PROJECT_ROOT)
            processes.append(worker)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        yield Service(mode, settings, base, keys, serve, worker, redis, log)
    finally:
        for process in processes:
            if process.poll() is None:
                for pid in worker_pids(process.pid):  # uvicorn's and rq's workers: killing the parent leaves them
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                process.kill()
                process.wait(timeout=10)
        if redis is not None:
            redis.kill()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def approve_template(service: Service, template: Mapping[str, object]) -> int:
    """Propose `template` as the researcher and approve it as the reviewer; its id."""
    with httpx.Client(base_url=service.base, timeout=60) as client:
        proposed = client.post("/v1/templates", json=template, headers=bearer(service.keys[RESEARCHER]))
        proposed.raise_for_status()
        template_id = int(proposed.json()["id"])
        client.post(f"/v1/templates/{template_id}/approve", json={"reason": "load test"},
                    headers=bearer(service.keys["reviewer"])).raise_for_status()
    return template_id


def release(service: Service, path: str, body: Mapping[str, object]) -> dict[str, object]:
    """POST `body` as the researcher and expect a release (what later identical requests replay)."""
    with httpx.Client(base_url=service.base, timeout=120) as client:
        response = client.post(path, json=body, headers=bearer(service.keys[RESEARCHER]))
        response.raise_for_status()
        return response.json()


def check_store(settings: Settings, cap: float,
                answers: Sequence[Mapping[str, object]] = ()) -> tuple[list[str], dict[str, object]]:
    """Every invariant a load must leave true, as (what does not hold, a summary of the store).

    `answers`: the releases clients received ({query_id, audit_seq}), each of which must have its record."""
    store, public_path = Enclave.open_audit(settings)
    problems: list[str] = []
    try:
        records = store.records()
        by_seq = {int(r["seq"]): r for r in records}
        charged = Counter(r["query_id"] for r in records if r["event"] == "query.charged")
        problems += [f"query {q} charged {n} times" for q, n in charged.items() if n > 1]
        released = Counter(r["query_id"] for r in records if r["event"] == "query.released")
        problems += [f"query {q} released {n} times" for q, n in released.items() if n > 1]
        rebuilt = rebuild_from_log(records)
        spent = rebuilt.get((RESEARCHER, "demo"), (0, 0))[0]
        if spent > round(cap * EPSILON_UNIT):
            problems.append(f"spent ε {spent / EPSILON_UNIT} exceeds the cap {cap}")
        with store.transaction() as tx:
            if live_totals(tx) != rebuilt:
                problems.append("the live ledger is not the ledger rebuilt from the log")
        for answer in answers:
            record = by_seq.get(int(answer["audit_seq"]))  # type: ignore[call-overload]
            if record is None or record["query_id"] != answer["query_id"] or record["event"] not in (
                    "query.released", "query.replayed"):
                problems.append(f"an answer ({answer['query_id']}, seq {answer['audit_seq']}) has no audit record")
        buffer = io.StringIO()
        store.export(buffer)
        report = verify_lines(buffer.getvalue().splitlines(), load_public_key(public_path))
        if not report.ok:
            problems.append(f"the log does not verify: {report.summary()}")
        problems += [f"state: {d.line()}" for d in differences(store)]
        summary: dict[str, object] = {"records": len(records), "charged": len(charged), "released": len(released),
                                      "spent_epsilon": spent / EPSILON_UNIT, "cap": cap}
    finally:
        store.close()
    return problems, summary
