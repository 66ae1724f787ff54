"""Audit appends and checkpoints as the log grows: their cost at a small and at a large log.

    .venv/bin/python bench/audit_append.py [--sizes 1000 1000000] [--samples 50] [--tiny]

On the embedded SQLite store (synchronous=FULL), it grows one log to each size (in batches of 1,000
records a transaction), then times, at that size, one durable transaction that appends one record and
one that appends a record and signs a checkpoint of the head (from the Merkle frontier the appends keep).
It prints p50 and p99 of each and the ratio of the largest size's p50 to the smallest's; and, as the
baseline measured in the same run, the pass over every record a checkpoint used to make (the RFC 9162
root recomputed from the log), against the frontier's checkpoint at the largest size.
(tiny: sizes 100 and 5,000, 10 samples.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from enclave.audit.merkle import leaf_hash, root_of_hashes
from enclave.audit.signing import Signer
from enclave.audit.sqlite import SqliteBackend
from enclave.audit.store import AuditStore

BATCH = 1000


def grow(store: AuditStore, size: int) -> None:
    """Append records until the log holds `size` of them."""
    with store.reading() as connection:
        have = connection.execute("SELECT count(*) FROM events").fetchone()[0]
    while have < size:
        with store.transaction() as tx:
            for _ in range(min(BATCH, size - have)):
                tx.append("query.refused", "bench", "deny", ["bench"], dataset="demo", sql_submitted="SELECT 1")
                have += 1


def timed(run, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        run()
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 1_000_000])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        args.sizes, args.samples = [100, 5000], 10
    scratch = Path(tempfile.mkdtemp(prefix="enclave-bench-"))
    try:
        store = AuditStore(SqliteBackend(scratch / "log.sqlite3"), Signer.load_or_create(scratch / "key.pem"),
                           checkpoint_every=10**9)  # checkpoints only when this bench asks for them

        def append() -> None:
            with store.transaction() as tx:
                tx.append("query.refused", "bench", "deny", ["bench"], dataset="demo", sql_submitted="SELECT 1")

        def append_and_checkpoint() -> None:
            with store.transaction() as tx:
                tx.append("query.refused", "bench", "deny", ["bench"], dataset="demo", sql_submitted="SELECT 1")
                tx.checkpoint()

        def full_pass() -> None:
            with store.reading() as connection:
                root_of_hashes([leaf_hash(text.encode()) for (text,) in
                                connection.execute("SELECT record FROM events ORDER BY seq")])

        rows: list[tuple[int, list[float], list[float]]] = []
        for size in sorted(args.sizes):
            started = time.perf_counter()
            grow(store, size)
            print(f"grew the log to {size:,} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            rows.append((size, timed(append, args.samples), timed(append_and_checkpoint, args.samples)))
        baseline = timed(full_pass, max(3, args.samples // 10))
        print(f"{'records':>10} {'append p50 ms':>14} {'p99':>8} {'+checkpoint p50 ms':>19} {'p99':>8}")
        for size, appends, checkpoints in rows:
            print(f"{size:>10,} {1000 * statistics.median(appends):>14.2f} {1000 * max(appends):>8.2f} "
                  f"{1000 * statistics.median(checkpoints):>19.2f} {1000 * max(checkpoints):>8.2f}")
        (small, small_a, small_c), (large, large_a, large_c) = rows[0], rows[-1]
        print(f"append at {large:,} records: {statistics.median(large_a) / statistics.median(small_a):.2f}x "
              f"its p50 at {small:,}; append + checkpoint: "
              f"{statistics.median(large_c) / statistics.median(small_c):.2f}x")
        print(f"the old checkpoint's pass over {large:,} records: p50 {1000 * statistics.median(baseline):.1f} ms, "
              f"{statistics.median(baseline) / statistics.median(large_c):.1f}x the frontier's append + checkpoint")
        store.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
