"""Linkage quality, run time and peak memory at scale, against exact deterministic matching.

    .venv/bin/python bench/linkage.py [--children 50000 500000] [--thresholds 0.5 0.7 0.9] [--tiny]

For each size, a fresh process generates synthetic rosters with known truth (three contributors,
~60% of children known to two or more; typos, nicknames, swapped dates, missing gender, duplicates),
delivers them through the real intake path (validation and load into an identity store), links them
with Splink, and reports: the time to validate and load, the time to link, the process's peak
memory, and pairwise precision and recall at each threshold. The baseline, measured in the same
process, is exact matching on (first name, last name, date of birth): its time and its quality.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from splink import DuckDBAPI
from splink.clustering import cluster_pairwise_predictions_at_threshold

from enclave.catalog.demo import demo_key
from enclave.catalog.manifest import load_manifest
from enclave.catalog.rosters import MEMBERSHIP, roster_file, synthetic
from enclave.intake.identity import IdentityStore
from enclave.intake.quality import against_truth, pairwise
from enclave.settings import PROJECT_ROOT


def measure(children: int, thresholds: list[float]) -> dict[str, object]:
    manifest = load_manifest(PROJECT_ROOT / "datasets" / "demo" / "manifest.yaml")
    rows = synthetic(children, seed=1)
    truth = [(r.contributor, r.local_id, r.person) for r in rows]
    with tempfile.TemporaryDirectory() as scratch:
        store = IdentityStore(Path(scratch) / "identity.duckdb", manifest, demo_key(1, "identity"))
        started = time.perf_counter()
        with store.transaction() as cursor:
            for contributor in MEMBERSHIP:
                store.load(cursor, contributor, [roster_file(contributor, rows)])
        loaded = time.perf_counter() - started
        with store.transaction() as cursor:
            linked = store.link(cursor)
        found = against_truth(store, truth)
        con = duckdb.connect()  # Splink's clustering runs on a connection of its own, as in linkage.link
        con.execute("CREATE TABLE truth AS SELECT unnest(?) AS contributor, unnest(?) AS local_id, "
                    "unnest(?) AS person", [list(c) for c in zip(*truth, strict=True)])
        roster = store.con.sql("SELECT contributor, local_id, first_name, last_name, birth_date FROM roster")
        pairs = store.con.sql("SELECT * FROM linkage_pairs")
        con.register("roster_arrow", roster.to_arrow_table())
        con.register("pairs_arrow", pairs.to_arrow_table())
        con.execute("CREATE TABLE roster AS SELECT * FROM roster_arrow")
        con.execute("""CREATE TABLE nodes AS SELECT contributor || chr(31) || local_id AS record, person FROM truth""")
        con.execute("""CREATE TABLE edges AS SELECT contributor_l || chr(31) || local_id_l AS record_l,
                       contributor_r || chr(31) || local_id_r AS record_r, match_probability FROM pairs_arrow""")
        sweep = {}
        db_api = DuckDBAPI(connection=con)
        for threshold in thresholds:
            clustered = cluster_pairwise_predictions_at_threshold(
                "nodes", "edges", db_api, "record", "record_l", "record_r", threshold_match_probability=threshold)
            con.execute(f"""CREATE OR REPLACE TABLE swept AS SELECT n.record, n.person, c.cluster_id AS cluster
                            FROM {clustered.physical_name} c JOIN nodes n USING (record)""")
            sweep[str(threshold)] = pairwise(con, "swept")
        started = time.perf_counter()
        con.execute("""CREATE TABLE exact AS SELECT t.contributor || chr(31) || t.local_id AS record, t.person,
                       dense_rank() OVER (ORDER BY upper(r.first_name), upper(r.last_name), r.birth_date) AS cluster
                       FROM truth t JOIN roster r USING (contributor, local_id)""")
        exact_seconds = time.perf_counter() - started
        exact = pairwise(con, "exact")
        con.close()
        store.close()
    return {"children": children, "records": linked.records, "persons": linked.persons,
            "load_seconds": round(loaded, 1), "link_seconds": round(linked.seconds, 1),
            "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "threshold": linked.threshold, "precision": found["precision"], "recall": found["recall"],
            "sweep": sweep, "exact_match": {**exact, "seconds": round(exact_seconds, 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process measuring one size
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny size: seconds, to show the script still runs (tests/test_benches.py)")
    args = parser.parse_args()
    if args.tiny:
        args.children = [300]
    if args.one:
        print(json.dumps(measure(args.one, args.thresholds)))
        return
    print(f"{'children':>9} {'records':>8} {'persons':>8} {'load s':>7} {'link s':>7} {'peak MB':>8} "
          f"{'P@default':>9} {'R@default':>9}  exact-match P / R (link time ratio)")
    for children in args.children:  # a process per size, so that peak memory is that size's own
        out = subprocess.run([sys.executable, __file__, "--one", str(children), "--thresholds",
                              *map(str, args.thresholds)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        exact = r["exact_match"]
        ratio = r["link_seconds"] / max(exact["seconds"], 0.01)
        print(f"{r['children']:>9,} {r['records']:>8,} {r['persons']:>8,} {r['load_seconds']:>7} "
              f"{r['link_seconds']:>7} {r['peak_memory_mb']:>8,} {r['precision']:>9} {r['recall']:>9}  "
              f"{exact['precision']} / {exact['recall']} (Splink {ratio:,.0f}x the time)")
        print("           by threshold: " + ", ".join(f"{t}: P {q['precision']} R {q['recall']}"
                                                     for t, q in r["sweep"].items()))


if __name__ == "__main__":
    main()
