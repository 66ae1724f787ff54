"""End-to-end cost of a protected query against raw DuckDB, measured in one run.

    .venv/bin/python bench/release_overhead.py [--children N | --rows N] [--runs R] [--tiny]

The data is either a demo variant (`--children N`, the default: 300,000 children, about 1M enrollment
rows and 3.1M rows in all, generated through intake and linkage) or, with `--rows N`, a synthetic
analysis database of N enrollment rows (three rows a person, no linkage, so 10M or 100M rows build in
minutes, not hours; the other tables empty), prepared by `enclave.catalog.bounding.prepare` as a real
build is and recorded as the demo's data version. For each query shape it then times, interleaved run
by run over R runs (different ε each run, so no answer is replayed; interleaved so machine load hits all
three alike):
- the protected query through the whole enclave (check, rewrite, bind, plan, reserve and record,
  execute, protect, record the release, and the hold until the query's deadline), with its stages;
- raw DuckDB running the same contribution-bounded SQL the enclave executes (the issue's baseline);
- raw DuckDB running the plain, unbounded aggregate (the physical limit of the aggregate itself).
Prints medians, the ratios to the plain aggregate, the enclave's deadline and its execute stage. The
measurement runs in a child process, so the peak RSS printed is the enclave's (with the baseline's
DuckDB beside it), not the generator's. Where the rules refuse a shape at this size (worst case or
deadline above their limits), the child runs on a copy of the rules with larger limits and says so.
`--tiny` runs both paths at a tiny size (tests/test_benches.py).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import duckdb
import yaml

from enclave.budget.ledger import grant
from enclave.catalog import bounding, versions
from enclave.catalog.manifest import Column, KeyRange, Manifest, load_manifest
from enclave.pipeline import Enclave
from enclave.settings import PROJECT_ROOT, Settings

SHAPES = {
    "by school": "SELECT school, COUNT(*) AS n, AVG(days_absent) AS mean_absent FROM enrollments GROUP BY school",
    "by school, grade > 3": "SELECT school, COUNT(*) AS n, AVG(days_absent) AS mean_absent FROM enrollments "
                            "WHERE grade > 3 GROUP BY school",
    "by year and grade": "SELECT school_year, grade, COUNT(*) AS n, SUM(days_absent) AS s FROM enrollments "
                         "GROUP BY school_year, grade",
}
ROWS_PER_PERSON = 3
TABLE = "enrollments"


def timed(function: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def fetch(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    """Run `sql` to its last row, as the enclave does, so both sides pay for the whole result."""
    return con.execute(sql).fetchall()


# ---------------------------------------------------------------------------------------------- synthetic build

def _value(name: str, column: Column, seed: int, unit: str) -> tuple[str, list[object]]:
    """The SQL (over `i`, the row number) of one synthetic column within its manifest keys or bounds, and its
    parameters. Values come from a keyed hash of the row number, so a build of N rows is the same every time."""
    draw = f"hash(i, {seed})"
    if name == unit:
        return f"'p' || (i // {ROWS_PER_PERSON})", []
    if isinstance(column.keys, KeyRange):
        return f"CAST({column.keys.first} + {draw} % {column.keys.last - column.keys.first + 1} AS {column.type})", []
    if column.keys is not None:
        return f"list_extract(?, CAST(1 + {draw} % {len(column.keys)} AS BIGINT))", [list(column.keys)]
    if column.bounds is not None:
        low, high = column.bounds
        if column.type in ("INTEGER", "BIGINT"):
            return f"CAST({int(low)} + {draw} % {int(high) - int(low) + 1} AS {column.type})", []
        return f"CAST({low} + random() * {high - low} AS {column.type})", []
    return f"CAST(NULL AS {column.type})", []


def generate(database: Path, manifest: Manifest, rows: int) -> dict[str, int]:
    """Write a synthetic analysis build of `rows` enrollment rows to `database`: every manifest table with its
    columns and types (all but enrollments empty), filled in SQL over range(N), then bounded by
    `bounding.prepare` as a real build is. Prints the build's size and what generating and preparing cost."""
    database.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with duckdb.connect(str(database)) as con:
        for name, table in manifest.tables.items():
            columns = ", ".join(f'"{c}" {spec.type}' for c, spec in table.columns.items())
            con.execute(f'CREATE TABLE "{name}" ({columns})')
        values, parameters = [], []
        for seed, (name, column) in enumerate(manifest.tables[TABLE].columns.items()):
            sql, given = _value(name, column, seed, manifest.privacy_unit)
            values.append(sql)
            parameters += given
        con.execute(f'INSERT INTO "{TABLE}" SELECT {", ".join(values)} FROM range({int(rows)}) AS t(i)',
                    parameters)
        generated = time.perf_counter() - started
        started = time.perf_counter()
        bounding.prepare(con, manifest, bounding.sampling_salt(b"bench", f"synthetic-{rows}"))
        con.execute("CHECKPOINT")
        prepared = time.perf_counter() - started
        counts = {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in manifest.tables}
        persons = con.execute(f'SELECT count(DISTINCT "{manifest.privacy_unit}") FROM "{TABLE}"').fetchone()[0]
    print(f"synthetic build: {counts[TABLE]:,} {TABLE} rows, {persons:,} persons, generated in {generated:.1f}s, "
          f"bounding.prepare {prepared:.1f}s, file {database.stat().st_size / 2**20:,.0f} MB", flush=True)
    return counts


# ------------------------------------------------------------------------------------------------- the child

def widened_rules(home: Path, enclave: Enclave, rows: int) -> Path:
    """A copy of the default rules with room for one-table queries over `rows` rows: the worst case and the
    deadline ceilings are raised, the cost model (what the deadline is computed from) is left as it is."""
    rules = yaml.safe_load(enclave.settings.rules_file.read_text())
    execution = enclave.rules.execution
    worst = 2 * rows  # table sizes are rounded up to two significant digits before costing
    rules["execution"]["max_worst_case_rows"] = max(execution.max_worst_case_rows, worst)
    rules["execution"]["timeout_seconds"] = min(600, max(execution.timeout_seconds,
                                                         math.ceil(execution.base_seconds + worst /
                                                                   execution.rows_per_second)))
    path = home / "rules-widened.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    print(f"the rules refused a shape at this size: using a copy ({path.name}) with execution."
          f"max_worst_case_rows {rules['execution']['max_worst_case_rows']:,} and timeout_seconds "
          f"{rules['execution']['timeout_seconds']} (default {execution.max_worst_case_rows:,} and "
          f"{execution.timeout_seconds:g})", flush=True)
    return path


def open_enclave(settings: Settings, database: Path | None, counts: dict[str, int]) -> Enclave:
    """The enclave, with the synthetic build (if any) recorded as the demo's first version before anything
    asks for one (which would generate the demo)."""
    enclave = Enclave(settings)
    if database is not None:
        with enclave.audit.transaction() as tx:
            versions.record(tx, "bench", "demo", "synthetic bench build", database=database, rows=counts,
                            build=hashlib.sha256(f"synthetic-{counts}".encode()).hexdigest())
    return enclave


def accepting(enclave: Enclave, home: Path, rows: int) -> Enclave:
    """`enclave`, or, if the rules refuse a shape at this size, an enclave on rules widened for it."""
    refused = {v.code for sql in SHAPES.values() for v in enclave.prepare("demo", sql).result.violations}
    if not refused:
        return enclave
    if refused != {"worst_case_too_large"}:
        raise SystemExit(f"a shape was refused for another reason than its size: {sorted(refused)}")
    path = widened_rules(home, enclave, rows)
    enclave.close()
    return Enclave(enclave.settings.model_copy(update={"rules_file": path}))


def measure(home: Path, children: int, runs: int, database: Path | None, counts: dict[str, int]) -> None:
    """Time every shape, interleaved run by run, and print medians, ratios, deadline and execute stage."""
    started = time.perf_counter()
    enclave = open_enclave(Settings(home=home, demo_children=children), database, counts)
    version = enclave.version("demo")
    # the baseline opens its own copy of the version's database: DuckDB shares one instance per file, and
    # the sandbox's is locked
    copy = home / "baseline.duckdb"
    shutil.copyfile(version.database, copy)
    raw = duckdb.connect(str(copy), read_only=True, config={"threads": enclave.rules.execution.threads})
    rows = raw.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    enclave = accepting(enclave, home, rows)
    enclave.data_version("demo")
    source = "synthetic build" if database is not None else f"demo variant: {children} children"
    print(f"{source}, {rows:,} {TABLE} rows, data version {version.label}, ready in "
          f"{time.perf_counter() - started:.1f}s; {runs} runs, {enclave.rules.execution.threads} threads", flush=True)
    with enclave.audit.transaction() as tx:
        grant(tx, "bench", "bench", "demo", 1e6, 1e-3)
    epsilons = iter(0.5 + i / 1000 for i in range(10_000))

    for shape, sql in SHAPES.items():
        prepared = enclave.prepare("demo", sql)
        assert prepared.rewritten is not None, prepared.result.violations
        assert prepared.cost is not None
        bounded_sql = prepared.rewritten.sql
        enclave.query("bench", "demo", sql, next(epsilons))  # warm-up: binds, caches, file pages
        raw.execute(bounded_sql).fetchall()
        raw.execute(sql).fetchall()
        protected, bounded, plain, stages = [], [], [], []
        for _ in range(runs):
            timings: dict[str, float] = {}
            protected.append(timed(partial(enclave.query, "bench", "demo", sql, next(epsilons), timings)))
            stages.append(timings)
            bounded.append(timed(partial(fetch, raw, bounded_sql)))
            plain.append(timed(partial(fetch, raw, sql)))
        p, b, q = (statistics.median(s) for s in (protected, bounded, plain))
        split = {name: statistics.median(t.get(name, 0.0) for t in stages) for name in stages[0]}
        print(f"\n{shape}: {sql}")
        print(f"  {'protected, end to end (enclave.query)':44}{p:>9.3f} s{p / q:>10.2f}x  protected/plain")
        print(f"  {'raw DuckDB, same contribution-bounded SQL':44}{b:>9.3f} s{b / q:>10.2f}x  bounded/plain")
        print(f"  {'raw DuckDB, plain unbounded aggregate':44}{q:>9.3f} s")
        print(f"  deadline {prepared.cost.deadline_seconds:.3f} s (worst case {prepared.cost.worst_case_rows:,} rows), "
              f"engine execute stage {split.get('execute', 0.0):.3f} s, all stages {sum(split.values()):.3f} s")
        print("  stages (median ms): " + ", ".join(f"{name} {1000 * s:.1f}" for name, s in split.items()), flush=True)
    raw.close()
    enclave.close()


# ------------------------------------------------------------------------------------------------ the parent

def run_child(home: Path, children: int, runs: int, database: Path | None, counts: dict[str, int]) -> None:
    """Run `measure` as a child process of this script and print its peak RSS: wait4 reports that one child's
    ru_maxrss (getrusage(RUSAGE_CHILDREN) would report the largest of every child so far)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(home), "--children", str(children),
            "--runs", str(runs)]
    if database is not None:
        argv += ["--database", str(database), "--counts", ",".join(f"{k}={v}" for k, v in counts.items())]
    sys.stdout.flush()
    pid = os.posix_spawn(sys.executable, argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the measuring child failed with status {os.waitstatus_to_exitcode(status)}")
    print(f"peak RSS of the measuring process (enclave + baseline DuckDB): {usage.ru_maxrss / 1024:,.0f} MB\n",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=300_000)
    parser.add_argument("--rows", type=int, help="a synthetic build of this many enrollment rows instead of the demo")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tiny", action="store_true",
                        help="both paths at a tiny size: seconds, to show the script runs (tests/test_benches.py)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: measure in this home
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--counts", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        counts = {k: int(v) for k, v in (item.split("=") for item in args.counts.split(",") if item)}
        measure(args.child, args.children, args.runs, args.database, counts)
        return
    sizes: list[tuple[int, int | None]] = [(args.children, args.rows)]
    runs = args.runs
    if args.tiny:
        sizes, runs = [(300, None), (300, 3000)], 2
    manifest = load_manifest(PROJECT_ROOT / "datasets" / "demo" / "manifest.yaml")
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as scratch:
        for index, (children, rows) in enumerate(sizes):
            home = Path(scratch) / f"home-{index}"
            database, counts = None, {}
            if rows is not None:
                database = home / "data" / "synthetic" / "analysis.duckdb"
                counts = generate(database, manifest, rows)
            run_child(home, children, runs, database, counts)


if __name__ == "__main__":
    main()
