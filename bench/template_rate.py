"""Request rate of template runs through the real service, against /healthz on the same server and client.

    .venv/bin/python bench/template_rate.py [--seconds S] [--clients C] [--children N] [--tiny]

Starts the service with uvicorn on a free loopback port (a small demo dataset), approves a template,
and drives it with C concurrent HTTP clients for S seconds each of: /healthz (the baseline: HTTP and
framework only), runs with fresh parameters (the whole protected pipeline, spending budget), and runs
that repeat parameters (answered from the released-answer store, spending nothing). Prints requests
per second and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import uvicorn

from enclave.access.keys import ensure_principal, issue_key
from enclave.api import create_app
from enclave.budget.ledger import grant
from enclave.settings import Settings
from enclave.templates import workflow
from enclave.templates.model import TemplateSpec

SPEC = TemplateSpec(
    title="Enrollment and absence by school for a grade and year",
    purpose="Benchmark of template runs.",
    dataset="demo",
    sql="SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments "
        "WHERE grade = $grade AND school_year = $year AND days_absent >= $floor GROUP BY school",
    parameters=[{"name": "grade", "type": "integer", "min": 0, "max": 12},
                {"name": "year", "type": "integer", "min": 2019, "max": 2024},
                {"name": "floor", "type": "integer", "min": 0, "max": 180}],
    epsilon=0.01, run_limit=10_000)


def drive(seconds: float, clients: int, request: Callable[[httpx.Client, int], httpx.Response]) -> float:
    """Requests per second over `seconds`, `clients` threads each with its own connection."""
    counter = itertools.count()
    done = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        with httpx.Client(timeout=30) as client:
            while time.perf_counter() < stop:
                response = request(client, next(counter))
                assert response.status_code == 200, response.text[:300]
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--children", type=int, default=20_000)
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny size: seconds, to show the script still runs (tests/test_benches.py)")
    args = parser.parse_args()
    if args.tiny:
        args.seconds, args.clients, args.children = 0.5, 2, 300
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as scratch:
        measure(Path(scratch), args)


def measure(home: Path, args: argparse.Namespace) -> None:
    settings = Settings(home=home, demo_children=args.children, rate_limit="1000000/minute")
    app = create_app(settings)
    enclave = app.state.enclave
    with enclave.audit.transaction() as tx:
        ensure_principal(tx, "bench", "bench", {"researcher"})
        key = issue_key(tx, settings.pepper, "bench", "bench")
        grant(tx, "bench", "bench", "demo", 1e6, 1e-3, purpose="benchmark")
    template = workflow.propose(enclave, "steward", SPEC)
    workflow.review(enclave, "reviewer", template.id, "approve", "benchmark")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    runs = f"{base}/v1/templates/{template.id}/runs"

    def fresh(client: httpx.Client, i: int) -> httpx.Response:
        params = {"grade": i % 13, "year": 2019 + (i // 13) % 6, "floor": (i // 78) % 181}
        return client.post(runs, headers=headers, json={"parameters": params})

    def repeated(client: httpx.Client, i: int) -> httpx.Response:
        return client.post(runs, headers=headers, json={"parameters": {"grade": i % 13, "year": 2019, "floor": 0}})

    health = drive(args.seconds, args.clients, lambda client, i: client.get(f"{base}/healthz"))
    new = drive(args.seconds, args.clients, fresh)
    replayed = drive(args.seconds, args.clients, repeated)
    print(f"{args.clients} clients on loopback, {args.seconds:g}s each, demo of {args.children} children")
    print(f"{'':46}{'req/s':>8}{'vs healthz':>12}")
    for label, rate in (("GET /healthz (baseline)", health), ("template run, new parameters (spends ε)", new),
                        ("template run, repeated parameters (replayed)", replayed)):
        print(f"{label:46}{rate:>8.1f}{rate / health:>11.3f}x")
    server.should_exit = True
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
