"""Utility of a release against OpenDP used directly, on the same query, bounds and ε, in one run.

    .venv/bin/python bench/utility.py [--children N] [--releases R] [--epsilon E] [--tiny]

Issue 14's reproduction: `SELECT school, COUNT(*), AVG(days_absent) FROM enrollments GROUP BY school` on
the demo at ε = 1. The truth is plain DuckDB on the same data (the unprotected engine; nothing of it leaves
this script but the errors). For R releases it prints the mean absolute error (MAE) of the count and of
the mean over the cells released (suppressed ones left out), and how often each 95% interval held the
truth, for:
- the enclave: the whole pipeline in process (each release with its own ε, 1 + i·1e-9, so none replays);
- OpenDP directly, the count and the sum each at ε/2 under L1 sensitivity R (count) and R·max|x| (sum),
  R the manifest's rows per person (a person's rows, in whatever groups, are at most R);
- OpenDP directly with the sum centred on its bounds' midpoint (sensitivity R·(hi - lo)/2).
Both OpenDP baselines release every public school key and suppress nothing. Ratios are enclave / OpenDP.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import duckdb
import opendp.prelude as dp

from enclave.budget.ledger import grant
from enclave.pipeline import Enclave
from enclave.settings import Settings

SQL = "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments GROUP BY school"
dp.enable_features("contrib")


def laplace(values: list[float], sensitivity: float, epsilon: float, integer: bool) -> list[float]:
    """OpenDP's vector Laplace (discrete for integers), its scale found from OpenDP's own privacy map."""
    atom = dp.atom_domain(T=int) if integer else dp.atom_domain(T=float, nan=False)
    space = dp.vector_domain(atom), dp.l1_distance(T=int if integer else float)
    d_in = int(sensitivity) if integer else float(sensitivity)
    scale = dp.binary_search_param(lambda s: space >> dp.m.then_laplace(s), d_in=d_in, d_out=epsilon)
    measurement = space >> dp.m.then_laplace(scale)
    return list(measurement([int(v) for v in values] if integer else [float(v) for v in values]))


def opendp_direct(truth: dict[str, tuple[int, float]], rows: int, low: float, high: float, epsilon: float,
                  centred: bool) -> dict[str, tuple[float, float]]:
    keys = sorted(truth)
    counts = [truth[k][0] for k in keys]
    middle = (low + high) / 2 if centred else 0.0
    sums = [truth[k][0] * (truth[k][1] - middle) for k in keys]
    reach = (high - low) / 2 if centred else max(abs(low), abs(high))
    noisy_counts = laplace(counts, rows, epsilon / 2, integer=True)
    noisy_sums = laplace(sums, rows * reach, epsilon / 2, integer=False)
    return {k: (c, min(high, max(low, s / c + middle)) if c > 0 else (low + high) / 2)
            for k, c, s in zip(keys, noisy_counts, noisy_sums, strict=True)}


def mae(errors: list[float]) -> float:
    return statistics.fmean(errors) if errors else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=50_000)
    parser.add_argument("--releases", type=int, default=200)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny size: seconds, to show the script still runs (tests/test_benches.py)")
    args = parser.parse_args()
    if args.tiny:
        args.children, args.releases = 2_000, 3
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as scratch:
        measure(Path(scratch), args.children, args.releases, args.epsilon)


def measure(home: Path, children: int, releases: int, epsilon: float) -> None:
    enclave = Enclave(Settings(home=home, demo_children=children))
    version = enclave.version("demo")
    database = home / "truth.duckdb"  # DuckDB shares one instance per file, and the sandbox's is locked
    shutil.copyfile(version.database, database)
    with duckdb.connect(str(database), read_only=True) as con:
        truth = {school: (n, mean) for school, n, mean in con.execute(SQL).fetchall() if school is not None}
    manifest = enclave.manifest("demo")
    rows = manifest.contribution_bounds.max_rows_per_unit
    low, high = manifest.tables["enrollments"].columns["days_absent"].bounds
    with enclave.audit.transaction() as tx:
        grant(tx, "bench", "bench", "demo", 10.0 * epsilon * releases + 10, 1e-3)

    count_errors: list[float] = []
    mean_errors: list[float] = []
    covered: dict[str, list[bool]] = {"n": [], "absent": []}
    for i in range(releases):
        release = enclave.query("bench", "demo", SQL, epsilon + i * 1e-9, hold=False)
        for key, n, absent in release.rows:
            if key.value not in truth or n.suppressed:
                continue
            true_n, true_mean = truth[str(key.value)]
            count_errors.append(abs(float(n.value) - true_n))
            if n.interval is not None:
                covered["n"].append(n.interval[0] <= true_n <= n.interval[1])
            if absent.value is not None:
                mean_errors.append(abs(float(absent.value) - true_mean))
                if absent.interval is not None:
                    covered["absent"].append(absent.interval[0] <= true_mean <= absent.interval[1])

    baselines: dict[str, tuple[float, float]] = {}
    for name, centred in (("opendp", False), ("opendp centred", True)):
        counts, means = [], []
        for _ in range(releases):
            for key, (n, mean) in opendp_direct(truth, rows, low, high, epsilon, centred).items():
                counts.append(abs(n - truth[key][0]))
                means.append(abs(mean - truth[key][1]))
        baselines[name] = (mae(counts), mae(means))

    enclave_count, enclave_mean = mae(count_errors), mae(mean_errors)
    print(f"{SQL}\ndemo: {children} children, {len(truth)} schools, ε = {epsilon:g}, {releases} releases each; "
          f"R = {rows} rows per person, days_absent in [{low}, {high}]")
    print(f"{'mechanism':<34}{'count MAE':>12}{'AVG MAE (days)':>16}")
    print(f"{'enclave':<34}{enclave_count:>12.2f}{enclave_mean:>16.3f}")
    for name, (count, mean) in baselines.items():
        print(f"{name + ' (no suppression)':<34}{count:>12.2f}{mean:>16.3f}")
    for name, (count, mean) in baselines.items():
        print(f"enclave / {name}: count MAE {enclave_count / count:.2f}x, AVG MAE {enclave_mean / mean:.2f}x")
    for column, hits in covered.items():
        share = sum(hits) / len(hits) if hits else float("nan")
        print(f"enclave's 95% intervals held the truth of {column} in {share:.1%} of {len(hits)} cells")


if __name__ == "__main__":
    main()
