"""The deployed layout under a mixed load, with faults: API and query workers on one PostgreSQL and one
Redis, checked after.

    .venv/bin/python bench/service_faults.py            64 clients for 60 s, 4 API workers, 2 query workers
    .venv/bin/python bench/service_faults.py --faults   and kill -9 an API worker, kill -9 a query worker and
                                                        restart Redis during the load
    .venv/bin/python bench/service_faults.py --tiny     8 clients for 12 s, 2 + 1 workers, 2,000 children
    .venv/bin/python bench/service_faults.py --tiny --faults --json    what tests/test_service_faults.py runs

It starts its own processes on loopback (bench/_service.py): a Redis server, `enclave serve --workers N`
and `enclave worker --concurrency M` (PostgreSQL: the server the test suite uses, reused on
127.0.0.1:5432 or started, with a fresh schema), with the rate limit lifted (ENCLAVE_RATE_LIMIT). The
clients (httpx) mix template runs, replays of a released query, fresh queries and asynchronous queries
(polled to the end) against one grant. Then, with every process stopped, it checks the store: spent ε
never exceeds the cap, no query is charged twice, every answer a client received has its audit record
at the sequence number it was given, the log verifies against its signed checkpoints, the ledger
rebuilt from the log equals the live ledger and every governed table is the log's projection; and that
killed workers were replaced and no request got a 5xx. It prints req/s and p50/p99 per route, each p50
as a ratio of `/healthz`'s, measured by the same clients in the same run; it exits 1 if an invariant
does not hold. The rates of single routes, embedded against deployed, are bench/service_load.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _service import Service, approve_template, check_store, preflight, release, running, worker_pids

from enclave.pipeline import Enclave
from enclave.settings import Settings
from tests import stores

CAP = 4.0
FRESH_EPSILON = 0.02
WARM_SQL = "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school"
FRESH_SQL = "SELECT school, COUNT(*) AS n FROM enrollments WHERE days_absent >= {k} GROUP BY school"
TEMPLATE = {
    "title": "Enrolments by school for a grade", "purpose": "Load: how enrolment varies by school for one grade.",
    "dataset": "demo", "sql": "SELECT school, COUNT(*) AS n FROM enrollments WHERE grade = $grade GROUP BY school",
    "parameters": [{"name": "grade", "type": "integer", "min": 0, "max": 12}], "epsilon": 0.05, "run_limit": 30,
}
MIX = (("replay", 0.4), ("fresh", 0.25), ("template", 0.15), ("async", 0.2))
TERMINAL = {"failed", "cancelled"}


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    answers: list[dict[str, object]] = field(default_factory=list)  # every release a client received
    queued: list[str] = field(default_factory=list)

    def note(self, route: str, seconds: float, outcome: str) -> None:
        self.latencies[route].append(seconds)
        self.outcomes[route][outcome] += 1


async def call(client: httpx.AsyncClient, results: Results, route: str, method: str, url: str,
               body: object = None) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await client.request(method, url, json=body)
    except httpx.HTTPError as error:  # a worker killed mid-request: the connection is gone, nothing else
        results.note(route, time.perf_counter() - started, type(error).__name__)
        return None
    outcome = str(response.status_code)
    if response.status_code >= 400:
        outcome += " " + str(response.json().get("error", {}).get("code", ""))
    results.note(route, time.perf_counter() - started, outcome)
    if response.status_code == 200 and "audit_seq" in response.text:
        payload = response.json()
        if payload.get("audit_seq") is not None:
            results.answers.append({"query_id": payload["query_id"], "audit_seq": payload["audit_seq"],
                                    "replayed": payload.get("replayed", False)})
    return response


async def follow(client: httpx.AsyncClient, results: Results, query_id: str, until: float) -> None:
    """Poll an asynchronous query to its end (released, failed or cancelled)."""
    while time.monotonic() < until:
        response = await call(client, results, "GET /v1/queries/{id}", "GET", f"/v1/queries/{query_id}")
        if response is not None and response.status_code == 200 and (
                "audit_seq" in response.json() or response.json().get("state") in TERMINAL):
            return
        await asyncio.sleep(0.25)


async def client_loop(base: str, key: str, template_id: int, results: Results, stop: float, seed: int,
                      counter: itertools.count) -> None:
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        while time.monotonic() < stop:
            kind = rng.choices(kinds, weights)[0]
            if kind == "replay":
                await call(client, results, "POST /v1/queries (replay)", "POST", "/v1/queries",
                           {"dataset": "demo", "sql": WARM_SQL, "epsilon": 0.05, "mode": "sync"})
            elif kind == "fresh":
                sql = FRESH_SQL.format(k=next(counter))
                await call(client, results, "POST /v1/queries (fresh)", "POST", "/v1/queries",
                           {"dataset": "demo", "sql": sql, "epsilon": FRESH_EPSILON, "mode": "sync"})
            elif kind == "template":
                await call(client, results, "POST /v1/templates/{id}/runs", "POST",
                           f"/v1/templates/{template_id}/runs", {"parameters": {"grade": rng.randrange(13)}})
            else:
                sql = FRESH_SQL.format(k=next(counter))
                response = await call(client, results, "POST /v1/queries (async)", "POST", "/v1/queries",
                                      {"dataset": "demo", "sql": sql, "epsilon": FRESH_EPSILON, "mode": "async"})
                if response is not None and response.status_code == 202:
                    results.queued.append(response.json()["query_id"])
                    await follow(client, results, response.json()["query_id"], stop + 30)


async def baseline(base: str, clients: int, seconds: float) -> list[float]:
    """/healthz latencies with the same number of clients: the ratio's denominator."""
    timings: list[float] = []
    stop = time.monotonic() + seconds

    async def one() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            while time.monotonic() < stop:
                started = time.perf_counter()
                await client.get("/healthz")
                timings.append(time.perf_counter() - started)

    await asyncio.gather(*(one() for _ in range(clients)))
    return timings


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--api-workers", type=int, default=4)
    parser.add_argument("--query-workers", type=int, default=2)
    parser.add_argument("--children", type=int, default=50_000)
    parser.add_argument("--faults", action="store_true", help="kill -9 an API and a query worker, restart Redis")
    parser.add_argument("--tiny", action="store_true", help="8 clients, 12 s, 2 + 1 workers, 2,000 children")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args()
    if args.tiny:
        args.clients, args.seconds, args.api_workers, args.query_workers, args.children = 8, 12, 2, 1, 2000
    preflight("bench/service_faults.py")
    scratch = Path(tempfile.mkdtemp(prefix="enclave-bench-"))
    try:
        with running(scratch, deployed=True, api_workers=args.api_workers, query_workers=args.query_workers,
                     children=args.children, cap=CAP) as service:
            return measure(service, args)
    finally:
        stores.drop_schemas()
        shutil.rmtree(scratch, ignore_errors=True)


def measure(service: Service, args: argparse.Namespace) -> int:
    """The mixed load (with its faults), then the store's invariants with every process stopped."""
    base, serve, worker, redis = service.base, service.serve, service.worker, service.redis
    assert worker is not None  # the deployed mode has a query worker
    assert redis is not None
    template_id = approve_template(service, TEMPLATE)
    release(service, "/v1/queries", {"dataset": "demo", "sql": WARM_SQL, "epsilon": 0.05, "mode": "sync"})
    health = asyncio.run(baseline(base, args.clients, min(5.0, args.seconds / 4)))
    results = Results()
    faults: list[str] = []
    started = time.monotonic()
    stop = started + args.seconds

    async def load() -> None:
        counter = itertools.count(1000)
        tasks = [asyncio.create_task(client_loop(base, service.keys["researcher"], template_id, results, stop, n,
                                                 counter)) for n in range(args.clients)]
        if args.faults:
            for at, fault in ((0.25, "api"), (0.5, "query"), (0.7, "redis")):
                await asyncio.sleep(max(0.0, started + at * args.seconds - time.monotonic()))
                faults.append(inject(fault, serve, worker, redis))
        await asyncio.gather(*tasks)

    asyncio.run(load())
    elapsed = time.monotonic() - started
    drain = time.monotonic() + 60  # let queued jobs finish before the store is checked
    while time.monotonic() < drain and not settled(service.settings):
        time.sleep(0.5)
    alive = {"api": len(worker_pids(serve.pid)), "query": len(worker_pids(worker.pid))}
    service.stop(seconds=30)
    problems, store = check_store(service.settings, CAP, results.answers)
    if alive != {"api": args.api_workers, "query": args.query_workers}:  # a killed worker was replaced
        problems.append(f"workers alive at the end: {alive}")
    problems += [f"{route}: {outcome} x{n}" for route, outcomes in results.outcomes.items()
                 for outcome, n in outcomes.items() if outcome.startswith("5")]  # never a 500
    report(results, health, elapsed, faults, problems, store, args)
    return 1 if problems else 0


def inject(fault: str, serve: subprocess.Popen[bytes], worker: subprocess.Popen[bytes],
           redis: stores.RedisServer) -> str:
    """Kill -9 one worker of the API (`api`) or query (`query`) supervisor, or restart Redis (`redis`)."""
    if fault == "redis":
        redis.kill()
        time.sleep(0.5)
        redis.start()
        return "redis restarted"
    parent = serve if fault == "api" else worker
    pids = worker_pids(parent.pid)
    if not pids:
        return f"no {fault} worker to kill"
    os.kill(pids[0], signal.SIGKILL)
    return f"{fault} worker {pids[0]} killed (-9)"


def settled(settings: Settings) -> bool:
    """Every asynchronous job has ended (released, failed or cancelled), by the store."""
    store, _ = Enclave.open_audit(settings)
    try:
        with store.reading() as connection:
            return connection.execute("SELECT count(*) FROM jobs WHERE state NOT IN "
                                      "('released', 'failed', 'cancelled')").fetchone()[0] == 0
    finally:
        store.close()


def report(results: Results, health: list[float], elapsed: float, faults: list[str], problems: list[str],
           store: dict[str, object], args: argparse.Namespace) -> None:
    base = percentile(health, 0.5)
    routes = {}
    for route, timings in sorted(results.latencies.items()):
        routes[route] = {"requests": len(timings), "per_second": len(timings) / elapsed,
                         "p50_ms": 1000 * percentile(timings, 0.5), "p99_ms": 1000 * percentile(timings, 0.99),
                         "p50_vs_healthz": percentile(timings, 0.5) / base,
                         "outcomes": dict(results.outcomes[route])}
    total = sum(len(t) for t in results.latencies.values())
    if args.json:
        print(json.dumps({"clients": args.clients, "seconds": elapsed, "api_workers": args.api_workers,
                          "query_workers": args.query_workers, "requests_per_second": total / elapsed,
                          "healthz_p50_ms": 1000 * base, "routes": routes, "faults": faults,
                          "answers": len(results.answers), "store": store, "problems": problems}))
        return
    print(f"{args.clients} clients for {elapsed:.0f} s on {args.api_workers} API and {args.query_workers} query "
          f"workers: {total / elapsed:.1f} req/s; /healthz p50 {1000 * base:.1f} ms (the baseline)")
    print(f"{'route':34} {'req':>6} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'p50/healthz':>12}  outcomes")
    for route, row in routes.items():
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(row["outcomes"].items()))
        print(f"{route:34} {row['requests']:>6} {row['per_second']:>7.1f} {row['p50_ms']:>8.1f} "
              f"{row['p99_ms']:>8.1f} {row['p50_vs_healthz']:>11.1f}x  {outcomes}")
    for fault in faults:
        print(f"fault: {fault}")
    print(f"store: {store['records']} records, {store['charged']} charged, {store['released']} released, "
          f"ε spent {store['spent_epsilon']:g} of {store['cap']:g}; {len(results.answers)} answers checked")
    print("invariants: " + ("all hold" if not problems else f"{len(problems)} broken"))
    for problem in problems:
        print(f"  {problem}")


if __name__ == "__main__":
    sys.exit(main())
