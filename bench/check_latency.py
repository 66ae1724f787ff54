"""Latency of check and of rewrite for a 20-line query, against parsing alone, measured in one run.

    .venv/bin/python bench/check_latency.py [--runs N] [--tiny]

Prints p50 and p99 of check, of rewrite (of the checked query), of check + rewrite, and each one's
ratio to sqlglot parsing the same text (the floor: every check must at least parse). Every call does
the whole work again: nothing is cached per query text (only the rewrite's fixed query shapes are
parsed once per process). Then, on an enclave of its own (a temporary home, a demo of 2,000 children),
the same query released once and sent again: a replay in process (`Enclave.query`, answered from the
released answer before it is parsed, its `query.replayed` record committed first), against check +
rewrite. Start-up objects are frozen out of the collector's passes first, as the service does.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import sqlglot

from enclave.budget.ledger import grant
from enclave.catalog.manifest import load_manifest
from enclave.check import check
from enclave.pipeline import Enclave
from enclave.policy import load_rules
from enclave.rewrite import rewrite
from enclave.settings import PROJECT_ROOT, Settings

QUERY = """\
SELECT
    c.gender,
    e.school_year,
    CASE
        WHEN e.days_absent >= 18 THEN 'chronic'
        ELSE 'not chronic'
    END AS absence,
    COUNT(DISTINCT e.person_id) AS children,
    COUNT(*) AS enrollments,
    AVG(a.scale_score) AS mean_score,
    AVG(CASE WHEN a.proficient THEN 1 ELSE 0 END) AS proficient_rate,
    SUM(e.suspensions) AS suspensions
FROM enrollments e
JOIN children c ON e.person_id = c.person_id
JOIN assessments a ON a.person_id = e.person_id
WHERE e.grade BETWEEN 3 AND 8
  AND a.subject = 'math'
  AND c.home_zip IN ('99101', '99102', '99103')
GROUP BY c.gender, e.school_year, absence
ORDER BY e.school_year"""


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def timed(function, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny size: seconds, to show the script still runs (tests/test_benches.py)")
    args = parser.parse_args()
    runs = 20 if args.tiny else args.runs
    rules = load_rules(PROJECT_ROOT / "query_rules" / "default.yaml")
    manifest = load_manifest(PROJECT_ROOT / "datasets" / "demo" / "manifest.yaml")
    assert QUERY.count("\n") + 1 == 20
    checked = check(QUERY, rules, manifest)
    assert checked.accepted

    def check_and_rewrite() -> None:
        rewrite(check(QUERY, rules, manifest).query, manifest, 42)

    enclave = Enclave(Settings(home=Path(tempfile.mkdtemp(prefix="check-latency-")), demo_children=2000))
    with enclave.audit.transaction() as tx:
        grant(tx, "bench", "bench", "demo", 10.0, 1e-5)
    assert not enclave.query("bench", "demo", QUERY, 0.5).replayed

    def replay() -> None:
        assert enclave.query("bench", "demo", QUERY, 0.5).replayed

    for _ in range(20):  # warm-up
        check_and_rewrite()
        replay()
    gc.freeze()
    stages = (
        ("sqlglot parse only", lambda: sqlglot.parse_one(QUERY, read="duckdb")),
        ("check", lambda: check(QUERY, rules, manifest)),
        ("rewrite", lambda: rewrite(checked.query, manifest, 42)),
        ("check + rewrite", check_and_rewrite),
        ("replay (in process)", replay),
    )
    samples = {name: timed(function, runs) for name, function in stages}
    enclave.close()
    p50_parse = percentiles(samples["sqlglot parse only"])[0]
    print(f"20-line query, {runs} runs each")
    print(f"{'stage':<22}{'p50 ms':>10}{'p99 ms':>10}{'p50 / parse':>14}")
    for name, _ in stages:
        p50, p99 = percentiles(samples[name])
        print(f"{name:<22}{p50:>10.2f}{p99:>10.2f}{p50 / p50_parse:>13.1f}x")
    replay_p50, both_p50 = percentiles(samples["replay (in process)"])[0], percentiles(samples["check + rewrite"])[0]
    print(f"a replay takes {replay_p50 / both_p50:.2f}x the time of check + rewrite of the same query")


if __name__ == "__main__":
    main()
