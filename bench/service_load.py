"""Route rates of the service under a compiled load generator (wrk), embedded against deployed, and
against the engine alone.

    .venv/bin/python bench/service_load.py            wrk -t 2 -c 32, 20 s a route, 100,000 children
    .venv/bin/python bench/service_load.py --seconds 30 --connections 64 --api-workers 4 --children 50000
    .venv/bin/python bench/service_load.py --tiny     wrk -t 2 -c 8, 2 s a route, 2,000 children (< 60 s)

Two modes of the service, one after the other, each started on loopback by bench/_service.py on the
same generated demo (read-only): **embedded** (`enclave serve --workers 1`, the SQLite store, no Redis)
and **deployed** (`enclave serve --workers N` and `enclave worker`, PostgreSQL and Redis; PostgreSQL is
the server the test suite uses, with a fresh schema). The rate limit is lifted for both by
`ENCLAVE_RATE_LIMIT=1000000/minute` (limits notation): the bench measures the service, not its limiter.
In each mode it approves a template (run limit 10,000, 0.01 ε a run, a grant with ε for all of them),
releases one query and one template run, then drives each route with wrk (`wrk -t T -c C -d S --timeout
60s -s <lua>`; installed with `apt-get install -y wrk` if missing), one route at a time:

- `GET /healthz`: HTTP and the framework only (the baseline);
- `POST /v1/queries/check`: check, rewrite, bind and plan a query, spending nothing;
- replay: an identical `POST /v1/queries` of the query already released (answered from the released
  answer, spending nothing);
- repeated template runs: `POST /v1/templates/{id}/runs` with the parameters already run once (replayed);
- fresh template runs: the same route with new parameters on every request (wrk's Lua `request()`
  numbers them across threads), each charged and executed, answered at its deadline (invariant 10).
  Last in each mode: the requests still waiting for an engine slot when wrk stops finish while the
  service stops, before the store is checked.

A Lua `done()` prints, per route, the responses, their p50 and p99 latency (wrk's histogram, of the
responses received: a request past the 60 s timeout counts as a timeout error, not a latency), every
status code that is not 2xx (a 429 or a 5xx under load is a finding, printed, not hidden) and wrk's
socket errors. req/s counts 2xx responses only. Then, measured in the same run with the service stopped,
the **engine alone**: the rewritten SQL of fresh template runs (`Enclave.prepare(...).rewritten.sql`)
executed by the enclave's own DuckDB sandbox on the same data version, with as many threads as the
engine has execution slots (`execution.concurrency`), for as long as a route. It prints the ratios
deployed / embedded per route, fresh template runs / engine alone, and PASS or FAIL against the targets
of issue 12 (replays >= 300 req/s with p99 < 100 ms at 32 connections, both modes; fresh template runs
>= 50% of the engine alone): a missed target is reported, not an exit status. After each mode, with
every process stopped, it checks the store (bench/_service.py `check_store`: spent ε within the cap,
nothing charged or released twice, the log verifies, the ledger rebuilt from the log equals the live
one, every governed table is the log's projection) and exits 1 if an invariant does not hold; 2 if wrk
cannot be had.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _service import RATE_LIMIT, Service, approve_template, bearer, check_store, preflight, release, running

from enclave.catalog.demo import ensure_demo
from enclave.catalog.manifest import load_manifest
from enclave.pipeline import Enclave
from enclave.settings import PROJECT_ROOT, Settings
from enclave.templates.model import TemplateSpec
from tests import stores

RUN_EPSILON = 0.01
RUN_LIMIT = 10_000  # the most a template may allow (TemplateSpec)
CAP = 2 * RUN_LIMIT * RUN_EPSILON + 10  # every fresh run the limit allows, the warm query and the first run
TEMPLATE = {
    "title": "Enrolment and absence by school for a grade, a year and an absence floor",
    "purpose": "Load: template runs per second.", "dataset": "demo",
    "sql": "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments "
           "WHERE grade = $grade AND school_year = $year AND days_absent >= $floor GROUP BY school",
    "parameters": [{"name": "grade", "type": "integer", "min": 0, "max": 12},
                   {"name": "year", "type": "integer", "min": 2019, "max": 2024},
                   {"name": "floor", "type": "integer", "min": 0, "max": 180}],
    "epsilon": RUN_EPSILON, "run_limit": RUN_LIMIT,
}
FRESH_LUA = """
-- fresh parameters for every request, numbered across wrk's threads: i = sent * threads + id
function request()
  local i = sent * nthreads + id
  sent = sent + 1
  local body = string.format('{"parameters": {"grade": %d, "year": %d, "floor": %d}}',
                             i % 13, 2019 + math.floor(i / 13) % 6, math.floor(i / 78) % 181)
  return wrk.format(nil, nil, nil, body)
end
"""


def parameters(i: int) -> dict[str, int]:
    """The i-th fresh run's parameters, as FRESH_LUA builds them."""
    return {"grade": i % 13, "year": 2019 + (i // 13) % 6, "floor": (i // 78) % 181}


REPEATED = parameters(13 * 6 * 181 - 1)  # the last of 14,118: no fresh run of a bench reaches it
WARM = {"dataset": "demo", "sql": "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school",
        "epsilon": 0.05, "mode": "sync"}
CHECKED = {"dataset": "demo", "epsilon": 0.1,
           "sql": "SELECT school, grade, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments "
                  "WHERE school_year = 2023 AND days_absent >= 3 GROUP BY school, grade"}
LUA = """
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  nthreads = tonumber(args[1])
  sent = 0
  statuses = {}
  wrk.method = %(method)s
  wrk.body = %(body)s
  wrk.headers["Content-Type"] = "application/json"
  %(auth)s
end
function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end
%(request)s
function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses")) do counts[code] = (counts[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(counts) do table.insert(parts, string.format('"%%s": %%d', code, n)) end
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"errors": {"connect": %%d, "read": %%d, "write": %%d, "timeout": %%d}, "statuses": {%%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
"""


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # "{template}": the approved template's id
    body: dict[str, object] | None = None
    auth: bool = True
    fresh: bool = False


ROUTES = (
    Route("GET /healthz", "GET", "/healthz", auth=False),
    Route("POST /v1/queries/check", "POST", "/v1/queries/check", CHECKED),
    Route("replay (POST /v1/queries)", "POST", "/v1/queries", WARM),
    Route("template run, repeated", "POST", "/v1/templates/{template}/runs", {"parameters": REPEATED}),
    Route("template run, fresh", "POST", "/v1/templates/{template}/runs", fresh=True),  # last: see the docstring
)
REPLAY, FRESH = ROUTES[2].name, ROUTES[4].name


@dataclass
class Rate:
    """What wrk measured on one route in one mode."""

    responses: int
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    other: dict[str, int]  # status code -> responses, for every status that is not 2xx
    errors: dict[str, int]  # wrk's socket errors (connect, read, write, timeout) that occurred

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds

    def findings(self) -> str:
        found = [f"{code}: {n}" for code, n in sorted(self.other.items())]
        found += [f"{kind} errors: {n}" for kind, n in sorted(self.errors.items())]
        return ", ".join(found) or "-"


@dataclass
class Mode:
    """One mode's rates, and its store after the load."""

    name: str
    layout: str
    rates: dict[str, Rate] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    store: dict[str, object] = field(default_factory=dict)


def ensure_wrk() -> str | None:
    """wrk on PATH, installed from Debian's packages if it is missing and this is root with apt-get."""
    if shutil.which("wrk") is None and shutil.which("apt-get") and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "wrk"]
        for command in (install, ["apt-get", "update"], install):  # the package lists may be missing or stale
            subprocess.run(command, capture_output=True, check=False, timeout=600,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if command is install and shutil.which("wrk"):
                break
    return shutil.which("wrk")


def lua(route: Route, key: str) -> str:
    """The wrk script of a route: its request, a status count per thread, and JSON from done()."""
    def string(text: str) -> str:
        return json.dumps(text)  # a JSON string is a valid Lua string literal for ASCII text

    body = json.dumps(route.body) if route.body is not None else ""
    return LUA % {"method": string(route.method), "body": string(body),
                  "auth": f'wrk.headers["Authorization"] = {string(bearer(key)["Authorization"])}' if route.auth
                  else "", "request": FRESH_LUA if route.fresh else ""}


def drive(wrk: str, service: Service, route: Route, template_id: int, args: argparse.Namespace,
          scratch: Path) -> Rate:
    script = scratch / f"{service.mode}-{ROUTES.index(route)}.lua"
    script.write_text(lua(route, service.keys["researcher"]))
    url = service.base + route.path.format(template=template_id)
    done = subprocess.run([wrk, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.seconds}s",
                           "--timeout", "60s", "-s", str(script), url, "--", str(args.threads)],
                          capture_output=True, text=True, check=False, timeout=args.seconds + 180)
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed on {route.name}: {done.stderr.strip() or done.stdout.strip()}")
    out = json.loads(lines[-1].removeprefix("WRK_JSON "))
    statuses = {code: int(n) for code, n in out["statuses"].items()}
    return Rate(responses=out["requests"], ok=sum(n for code, n in statuses.items() if code.startswith("2")),
                seconds=out["duration_us"] / 1e6, p50_ms=out["p50_us"] / 1000, p99_ms=out["p99_us"] / 1000,
                other={code: n for code, n in statuses.items() if not code.startswith("2")},
                errors={kind: n for kind, n in out["errors"].items() if n})


def run_mode(wrk: str, scratch: Path, deployed: bool, data: Path, args: argparse.Namespace) -> tuple[Mode, Settings]:
    """Start one mode, drive every route, stop it, check its store."""
    api_workers = args.api_workers if deployed else 1
    layout = (f"enclave serve --workers {api_workers} + enclave worker --concurrency {args.query_workers}, "
              "PostgreSQL + Redis" if deployed else "enclave serve --workers 1, SQLite, no Redis")
    mode = Mode("deployed" if deployed else "embedded", layout)
    with running(scratch, deployed=deployed, api_workers=api_workers, query_workers=args.query_workers,
                 children=args.children, cap=CAP, data=data) as service:
        template_id = approve_template(service, TEMPLATE)
        release(service, "/v1/queries", WARM)
        release(service, f"/v1/templates/{template_id}/runs", {"parameters": REPEATED})
        for route in ROUTES:
            mode.rates[route.name] = drive(wrk, service, route, template_id, args, scratch)
        service.stop()  # waits for the fresh runs still in flight
        mode.problems, mode.store = check_store(service.settings, CAP)
    return mode, service.settings


def engine_alone(settings: Settings, seconds: float) -> tuple[float, int]:
    """(executions per second, threads): the fresh runs' rewritten SQL on the enclave's own sandbox, with
    as many threads as the engine has execution slots, with nothing else running."""
    enclave = Enclave(settings)
    try:
        spec = TemplateSpec.model_validate(TEMPLATE)
        prepared = [enclave.prepare("demo", spec.bind(parameters(i))) for i in range(16)]
        slots = enclave.rules.execution.concurrency
        counts = [0] * slots
        stop = time.monotonic() + seconds

        def execute(n: int) -> None:
            while time.monotonic() < stop:
                query = prepared[(counts[n] * slots + n) % len(prepared)]
                assert query.rewritten is not None
                assert query.cost is not None
                enclave.execute_unprotected("demo", query.rewritten, None, query.version, query.cost.deadline_seconds)
                counts[n] += 1

        threads = [threading.Thread(target=execute, args=(n,)) for n in range(slots)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.monotonic() - started), slots
    finally:
        enclave.close()


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}x" if b > 0 else "n/a"


def report(modes: list[Mode], engine: float, slots: int, args: argparse.Namespace) -> None:
    print(f"wrk -t {args.threads} -c {args.connections} -d {args.seconds}s per route, demo of {args.children:,} "
          f"children; rate limit lifted: ENCLAVE_RATE_LIMIT={RATE_LIMIT}")
    for mode in modes:
        print(f"  {mode.name}: {mode.layout}")
    print(f"{'route':28} {'mode':9} {'responses':>9} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}  non-2xx, errors")
    for route in ROUTES:
        for mode in modes:
            rate = mode.rates[route.name]
            print(f"{route.name:28} {mode.name:9} {rate.responses:>9} {rate.per_second:>9.1f} {rate.p50_ms:>9.1f} "
                  f"{rate.p99_ms:>9.1f}  {rate.findings()}")
    embedded, deployed = modes
    print(f"{'deployed / embedded':28} {'req/s':>9} {'p50':>9} {'p99':>9}")
    for route in ROUTES:
        a, b = deployed.rates[route.name], embedded.rates[route.name]
        print(f"{route.name:28} {ratio(a.per_second, b.per_second):>9} {ratio(a.p50_ms, b.p50_ms):>9} "
              f"{ratio(a.p99_ms, b.p99_ms):>9}")
    print(f"engine alone: {engine:.1f} executions/s of the fresh runs' rewritten SQL on the sandbox, {slots} "
          f"thread(s) = execution.concurrency, {args.seconds} s")
    for mode in modes:
        print(f"fresh template runs / engine alone, {mode.name}: "
              f"{ratio(mode.rates[FRESH].per_second, engine)}")
    if args.tiny:
        print("targets (tiny: a toy size and fewer connections; the verdicts mean nothing):")
    for mode in modes:
        replay = mode.rates[REPLAY]
        met = replay.per_second >= 300 and replay.p99_ms < 100 and args.connections >= 32 and not replay.other
        print(f"{'PASS' if met else 'FAIL'} replays >= 300 req/s with p99 < 100 ms at 32 connections, {mode.name}: "
              f"{replay.per_second:.1f} req/s, p99 {replay.p99_ms:.1f} ms at {args.connections} connections")
    for mode in modes:
        fresh = mode.rates[FRESH].per_second
        print(f"{'PASS' if fresh >= 0.5 * engine else 'FAIL'} fresh template runs >= 50% of the engine alone, "
              f"{mode.name}: {fresh:.1f} against {engine:.1f} runs/s ({ratio(fresh, engine)})")
    for mode in modes:
        store = mode.store
        print(f"invariants, {mode.name}: " + ("all hold" if not mode.problems else f"{len(mode.problems)} broken")
              + f" ({store['records']} records, {store['charged']} charged, {store['released']} released, "
              f"ε spent {store['spent_epsilon']:g} of {store['cap']:g})")
        for problem in mode.problems:
            print(f"  {problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="wrk's duration per route, and the engine's")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads")
    parser.add_argument("--api-workers", type=int, default=4, help="API workers in the deployed mode")
    parser.add_argument("--query-workers", type=int, default=1, help="query workers in the deployed mode")
    parser.add_argument("--children", type=int, default=100_000)
    parser.add_argument("--tiny", action="store_true", help="2 s a route, 8 connections, 2,000 children")
    args = parser.parse_args()
    if args.tiny:
        args.seconds, args.connections, args.children = 2, 8, 2000
    wrk = ensure_wrk()
    if wrk is None:
        print("bench/service_load.py needs wrk: it is not on PATH and `apt-get install -y wrk` could not install "
              "it (install the Debian package wrk, or build wrk, and run again)", file=sys.stderr)
        return 2
    preflight("bench/service_load.py")
    scratch = Path(tempfile.mkdtemp(prefix="enclave-bench-"))
    try:
        data = ensure_demo(load_manifest(PROJECT_ROOT / "datasets" / "demo" / "manifest.yaml"), scratch / "data",
                           children=args.children).directory
        embedded, settings = run_mode(wrk, scratch, False, data, args)
        engine, slots = engine_alone(settings, args.seconds)  # every process of the embedded mode stopped
        deployed, _ = run_mode(wrk, scratch, True, data, args)
        report([embedded, deployed], engine, slots, args)
        return 1 if embedded.problems or deployed.problems else 0
    finally:
        stores.drop_schemas()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
