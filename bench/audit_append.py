"""Audit appends and checkpoints as the log grows: their cost at a small and at a large log.

    .venv/bin/python bench/audit_append.py [--sizes 1000 1000000] [--samples 50] [--tiny]

On the embedded SQLite store (synchronous=FULL), it grows one log to each size (in batches of 1,000
records a transaction), then times, at that size, one durable transaction that appends one record and
one that appends a record and signs a checkpoint of the head (from the Merkle frontier the appends keep).
It prints p50 and p99 of each and the ratio of the largest size's p50 to the smallest's; and, as the
baseline measured in the same run, the pass over every record a checkpoint used to make (the RFC 9162
root recomputed from the log), against the frontier's checkpoint at the largest size.

On the same log, at each size, it also streams an export to a file and verifies it (the verifier keeps a
Merkle frontier, O(log n)): export and verify throughput in records/s at the largest size, and the
tracemalloc peak of export + verify at the smallest and largest sizes, whose ratio shows memory bounded
while the log grows; and the latency of an inclusion proof of the middle record (O(log n) kept subtrees
and a few hundred records read) at each size.
(tiny: sizes 100 and 5,000, 10 samples, pages of 50 records so that both sizes fill a page.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from enclave.audit.merkle import leaf_hash, root_of_hashes
from enclave.audit.signing import Signer
from enclave.audit.sqlite import SqliteBackend
from enclave.audit.store import AuditStore
from enclave.audit.verify import verify_lines, verify_proof

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


@dataclass(frozen=True)
class Streamed:
    """Export and verify of the whole log at one size."""

    records: int
    export_seconds: float
    verify_seconds: float
    peak_bytes: int
    proofs: list[float]


def export_and_verify(store: AuditStore, scratch: Path, proof_samples: int) -> Streamed:
    """Stream the log to a file and verify it, timed; then both again under tracemalloc for the peak; then
    time inclusion proofs of the middle record (each checked, untimed, with the public key)."""
    path = scratch / "export.jsonl"
    started = time.perf_counter()
    with path.open("w") as out:
        written = store.export(out)
    exported = time.perf_counter() - started
    started = time.perf_counter()
    with path.open() as lines:
        report = verify_lines(lines, store.signer.public)
    verified = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"the export does not verify: {report.summary()}")
    tracemalloc.start()
    verify_lines(store.export_lines(), store.signer.public)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    path.unlink()
    middle = written // 2 + 1
    proofs = timed(lambda: store.prove(middle), proof_samples)
    if not verify_proof(store.prove(middle), store.signer.public).ok:
        raise SystemExit(f"the proof of record {middle} does not verify")
    return Streamed(written, exported, verified, peak, proofs)


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
        if args.tiny:
            store.page = 50

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
        streamed: list[Streamed] = []
        for size in sorted(args.sizes):
            started = time.perf_counter()
            grow(store, size)
            print(f"grew the log to {size:,} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            rows.append((size, timed(append, args.samples), timed(append_and_checkpoint, args.samples)))
            streamed.append(export_and_verify(store, scratch, max(3, args.samples // 10)))
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
        report_streaming(streamed[0], streamed[-1], store.page)
        store.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def report_streaming(small: Streamed, large: Streamed, page: int) -> None:
    print(f"export of {large.records:,} records streamed to a file: {large.records / large.export_seconds:,.0f} "
          f"records/s; verify_lines over it: {large.records / large.verify_seconds:,.0f} records/s")
    print(f"peak memory (tracemalloc) of export + verify: {small.peak_bytes / 1024:,.0f} KiB at {small.records:,} "
          f"records, {large.peak_bytes / 1024:,.0f} KiB at {large.records:,}: "
          f"{large.peak_bytes / small.peak_bytes:.2f}x for {large.records / small.records:,.0f}x the records "
          f"(pages of {page:,} records)")
    small_p50, large_p50 = statistics.median(small.proofs), statistics.median(large.proofs)
    print(f"inclusion proof p50: {1000 * small_p50:.1f} ms at {small.records:,} records, {1000 * large_p50:.1f} ms "
          f"at {large.records:,}: {large_p50 / small_p50:.2f}x (O(log n) kept subtrees read)")


if __name__ == "__main__":
    sys.exit(main())
