"""End-to-end cost of a protected query against raw DuckDB, measured in one run.

    .venv/bin/python bench/release_overhead.py [--children N] [--runs R] [--tiny]

Builds a demo variant (by default 300,000 children: about 1M enrollment rows and 3.1M rows in all),
then times, over R runs each (different ε each run, so no answer is replayed):
- the protected query through the whole enclave (check, rewrite, bind, plan, reserve and record,
  execute, protect, record the release), with its per-stage split;
- raw DuckDB running the same contribution-bounded SQL the enclave executes (the issue's baseline);
- raw DuckDB running the plain, unbounded aggregate (the physical limit of the aggregate itself).
Prints medians and the ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from enclave.budget.ledger import grant
from enclave.pipeline import Enclave
from enclave.settings import Settings

SQL = "SELECT school, COUNT(*) AS enrollments, AVG(days_absent) AS mean_absent FROM enrollments GROUP BY school"


def median_seconds(function, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny size: seconds, to show the script still runs (tests/test_benches.py)")
    args = parser.parse_args()
    runs = args.runs
    if args.tiny:
        args.children, runs = 300, 2
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as scratch:
        measure(Path(scratch), args.children, runs)


def measure(home: Path, children: int, runs: int) -> None:
    started = time.perf_counter()
    enclave = Enclave(Settings(home=home, demo_children=children))
    version = enclave.version("demo")
    enclave.data_version("demo")
    # the baseline opens its own copy of the version's database: DuckDB shares one instance per file, and
    # the sandbox's is locked
    database = home / "baseline.duckdb"
    shutil.copyfile(version.database, database)
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM enrollments").fetchone()[0]
    print(f"demo variant: {children} children, {rows} enrollment rows, data version {version.label}, "
          f"built in {time.perf_counter() - started:.1f}s")
    with enclave.audit.transaction() as tx:
        grant(tx, "bench", "bench", "demo", 1e6, 1e-3)

    timings: dict[str, float] = {}
    epsilons = iter(0.5 + i / 1000 for i in range(10_000))
    enclave.query("bench", "demo", SQL, next(epsilons))  # warm-up
    protected = median_seconds(lambda: enclave.query("bench", "demo", SQL, next(epsilons), timings), runs)
    bounded_sql = enclave.prepare("demo", SQL).rewritten.sql
    raw = duckdb.connect(str(database), read_only=True, config={"threads": enclave.rules.execution.threads})
    bounded = median_seconds(lambda: raw.execute(bounded_sql).fetchall(), runs)
    plain = median_seconds(lambda: raw.execute(SQL).fetchall(), runs)
    raw.close()

    print(f"\n{'':42}{'median s':>10}{'ratio':>10}")
    print(f"{'protected, end to end (enclave.query)':42}{protected:>10.3f}{protected / bounded:>9.2f}x  "
          "vs bounded raw")
    print(f"{'raw DuckDB, same contribution-bounded SQL':42}{bounded:>10.3f}{1.0:>9.2f}x")
    print(f"{'raw DuckDB, plain unbounded aggregate':42}{plain:>10.3f}{protected / plain:>9.2f}x  "
          "protected vs plain")
    print(f"\nstage split of the protected query (mean of {runs} runs):")
    total = sum(timings.values())
    for stage, seconds in timings.items():
        print(f"  {stage:<22}{1000 * seconds / runs:>9.1f} ms {100 * seconds / total:>6.1f}%")
    enclave.close()


if __name__ == "__main__":
    main()
