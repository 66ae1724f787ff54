"""What answering at the deadline costs: padded response time against the unpadded time, in one run.

    .venv/bin/python bench/padding.py [--children N] [--runs R] [--tiny]

Builds a demo variant (default 50,000 children) and, for a few query shapes (one table, a self-join,
a left join), times R protected queries each (a new ε each run, so nothing is replayed):
- unpadded: the time the enclave's stages really need (check to release record);
- padded: the response time, answered at the deadline set from the worst case before the run, as
  every researcher sees it.
Prints the deadline, medians, the padding overhead (padded / unpadded) and the engine's time (execute
and protect) as a share of the deadline: the margin before an overrun (above 1 would be one). The wait
for the previous query's slot, held to that query's deadline, is left out of both times.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from enclave.budget.ledger import grant
from enclave.pipeline import Enclave
from enclave.settings import Settings

QUERIES = {
    "one table": "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments GROUP BY school",
    "self-join": "SELECT a.subject, COUNT(*) AS n FROM assessments a JOIN assessments a2 "
                 "ON a.person_id = a2.person_id WHERE a2.scale_score >= 300 GROUP BY a.subject",
    "left join": "SELECT c.gender, COUNT(*) AS n, COUNT(DISTINCT v.person_id) AS patients FROM children c "
                 "LEFT JOIN clinic_visits v ON v.person_id = c.person_id GROUP BY c.gender",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny size: seconds, to show the script still runs (tests/test_benches.py)")
    args = parser.parse_args()
    if args.tiny:
        args.children, args.runs = 300, 2
    home = Path(tempfile.mkdtemp(prefix="enclave-bench-"))
    enclave = Enclave(Settings(home=home, demo_children=args.children))
    try:
        with enclave.audit.transaction() as tx:
            grant(tx, "bench", "bench", "demo", 1000.0, 1e-3)
        print(f"demo: {args.children:,} children; {args.runs} runs per shape")
        runs = iter(range(10**6))
        for name, sql in QUERIES.items():
            cost = enclave.prepare("demo", sql).cost
            assert cost is not None, name
            unpadded, padded, engine = [], [], []
            for _ in range(args.runs):
                epsilon = 0.01 + 1e-6 * next(runs)
                timings: dict[str, float] = {}
                started = time.perf_counter()
                enclave.query("bench", "demo", sql, epsilon, timings)
                wall = time.perf_counter() - started
                waited = timings.pop("queue", 0.0)  # the previous query's slot, held to its deadline
                unpadded.append(sum(timings.values()))
                padded.append(wall - waited)
                engine.append(timings["execute"] + timings["protect"])
            work, shown = statistics.median(unpadded), statistics.median(padded)
            print(f"{name}: deadline {cost.deadline_seconds:.3f} s (worst case {cost.worst_case_rows:,} rows); "
                  f"unpadded {work * 1000:.1f} ms, padded {shown * 1000:.1f} ms; "
                  f"padding overhead {shown / work:.2f}x; "
                  f"engine {statistics.median(engine) / cost.deadline_seconds:.2f}x of the deadline")
    finally:
        enclave.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
