"""The audit store: an append-only, hash-chained log, with the state it governs, on one database.

One database holds the log (events), its signed checkpoints, and the privacy state that the log is the
system of record for: grants, budget charges, released answers, data versions and consents, and the
asynchronous queries' jobs (enclave.jobs). Keeping
them together makes write-ahead exact: a charge and the record of it commit in one transaction, before
the query executes, or neither does. The database is a backend: SQLite for the embedded enclave
(`enclave.audit.sqlite`), PostgreSQL for a service of several processes and hosts
(`enclave.audit.postgres`). Both serialise writers, make a commit durable, and refuse UPDATE and DELETE
on the log in the database itself (`enclave.audit.migrations`); someone editing the database directly is
caught by `verify`. Every module that keeps state writes the same SQL for both, with `?` placeholders.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TextIO, TypeVar

from enclave.audit.group import GroupCommit
from enclave.audit.merkle import Frontier, leaf_hash, push, root_of_frontier, root_of_hashes
from enclave.audit.records import GENESIS, canonical, now, record_hash
from enclave.audit.signing import Signer, key_id
from enclave.ops.metrics import timed_audit_append

T = TypeVar("T")


class Transaction:
    """One write transaction: append records, checkpoint, and read or change the governed state."""

    def __init__(self, connection: Connection, store: AuditStore) -> None:
        self.connection = connection
        self._store = store

    def append(self, event: str, actor: str, decision: str, reasons: list[str] | None = None,
               **fields: object) -> dict[str, object]:
        """Append one record after the current head; it commits with the transaction or not at all."""
        seq, prev = self._head()
        record = {**fields, "seq": seq + 1, "time": now(), "actor": actor, "event": event,
                  "decision": decision, "reasons": reasons or [], "prev_hash": prev}
        digest = record_hash(record)
        text = canonical(record)
        self.connection.execute("INSERT INTO events (seq, hash, record) VALUES (?, ?, ?)",
                                (seq + 1, digest, text.decode()))
        self._keep(seq + 1, push(self._frontier(seq), leaf_hash(text)))
        if (seq + 1) % self._store.checkpoint_every == 0:
            self.checkpoint()
        return {**record, "hash": digest}

    def _head(self) -> tuple[int, str]:
        row = self.connection.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    def _frontier(self, head: int) -> Frontier:
        """The Merkle frontier of records 1..head, as kept in `merkle`; rebuilt from the log, once, when it
        is not there or not at the head (a store from before migration 9, or a restored one)."""
        row = self.connection.execute("SELECT size, frontier FROM merkle WHERE id = 1").fetchone()
        if row is not None and row[0] == head:
            return [(height, bytes.fromhex(subtree)) for height, subtree in json.loads(row[1])]
        frontier: Frontier = []
        for (text,) in self.connection.execute("SELECT record FROM events WHERE seq <= ? ORDER BY seq", (head,)):
            frontier = push(frontier, leaf_hash(text.encode()))
        return frontier

    def _keep(self, size: int, frontier: Frontier) -> None:
        self.connection.execute(
            "INSERT INTO merkle (id, size, frontier) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "size = excluded.size, frontier = excluded.frontier",
            (size, json.dumps([[height, subtree.hex()] for height, subtree in frontier])))

    def checkpoint(self, size: int | None = None) -> dict[str, object] | None:
        """Sign the Merkle root of records 1..size (default: the head), unless that is signed already.

        Signing a size below the head later is sound: the root covers exactly those records, and the
        checkpoint's time says when it was signed.
        """
        head, _ = self._head()
        size = head if size is None else min(size, head)
        if size == 0 or self.connection.execute(
                "SELECT 1 FROM checkpoints WHERE size = ?", (size,)).fetchone():
            return None
        if size == head:  # O(log n): the frontier the appends kept
            root = root_of_frontier(self._frontier(head))
        else:  # a size below the head, signed later (an export's range): its own pass over the records
            root = root_of_hashes([leaf_hash(text.encode()) for (text,) in self.connection.execute(
                "SELECT record FROM events WHERE seq <= ? ORDER BY seq", (size,))])
        body = {"size": size, "root": root.hex(), "time": now(),
                "key_id": key_id(self._store.signer.public)}
        signed = {"checkpoint": body, "signature": self._store.signer.sign(canonical(body))}
        self.connection.execute("INSERT INTO checkpoints (size, record) VALUES (?, ?)",
                                (size, json.dumps(signed, sort_keys=True)))
        return signed


class StoreError(RuntimeError):
    """The store cannot be used as it is (for example, it was written by another schema version)."""


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the modules that keep state see of a database connection: `?` placeholders on both backends."""

    def execute(self, sql: str, parameters: Sequence[object] = ..., /) -> Cursor: ...


class Backend(Protocol):
    """Where the store lives: SQLite (`enclave.audit.sqlite`) or PostgreSQL (`enclave.audit.postgres`)."""

    kind: str

    def write(self) -> AbstractContextManager[Connection]:
        """One write transaction, serialised with every other writer in every process, durable on exit."""

    def read(self) -> AbstractContextManager[Connection]:
        """One consistent read-only snapshot."""

    def close(self) -> None: ...


class AuditStore:
    def __init__(self, backend: Backend, signer: Signer, checkpoint_every: int = 64) -> None:
        self.backend = backend
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self._group = GroupCommit(self)

    @timed_audit_append
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction: serialised with every other writer, durable once it returns."""
        with self.backend.write() as connection:
            yield Transaction(connection, self)

    def grouped(self, work: Callable[[Transaction], T]) -> T:
        """Run `work` in a write transaction committed together with other threads' (enclave.audit.group):
        as durable and as ordered as `transaction`, one flush to disk for many. For small writes on hot
        paths; `work` must not wait on anything another writer holds."""
        return self._group.run(work)

    def reading(self) -> AbstractContextManager[Connection]:
        return self.backend.read()

    def close(self) -> None:
        self.backend.close()

    def records(self, start: int = 1, end: int | None = None) -> list[dict[str, object]]:
        with self.reading() as connection:
            rows = connection.execute("SELECT hash, record FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq",
                                      (start, end if end is not None else 2**62)).fetchall()
        return [{**json.loads(record), "hash": digest} for digest, record in rows]

    def checkpoint_head(self) -> dict[str, object] | None:
        """Sign the head (unless it is signed already) and return the latest signed checkpoint, the one an
        auditor keeps to check later exports against (`enclave audit verify --trusted`)."""
        with self.transaction() as tx:
            tx.checkpoint()
        found = self.checkpoints()
        return found[-1] if found else None

    def checkpoints(self) -> list[dict[str, object]]:
        with self.reading() as connection:
            return [json.loads(r) for (r,) in connection.execute("SELECT record FROM checkpoints ORDER BY size")]

    def export(self, out: TextIO, start: int = 1, end: int | None = None) -> int:
        """Write records start..end as JSONL with their checkpoints, after checkpointing the head.

        A range that does not start at 1 begins with a `prefix` line: the leaf hashes of the records
        before it and the hash of the last of them, so its checkpoints can still be verified.
        """
        with self.transaction() as tx:
            tx.checkpoint(end)
        with self.reading() as connection:
            last = end if end is not None else 2**62
            if start > 1:
                before = connection.execute("SELECT hash, record FROM events WHERE seq < ? ORDER BY seq",
                                            (start,)).fetchall()
                out.write(json.dumps({"kind": "prefix", "size": len(before),
                                      "last_hash": before[-1][0] if before else GENESIS,
                                      "leaf_hashes": [leaf_hash(r.encode()).hex() for _, r in before]}) + "\n")
            checkpoints = dict(connection.execute("SELECT size, record FROM checkpoints WHERE size >= ? AND size <= ?",
                                                  (start, last)).fetchall())
            written = 0
            for seq, digest, record in connection.execute(
                    "SELECT seq, hash, record FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq", (start, last)):
                out.write(json.dumps({"kind": "event", "hash": digest, "record": json.loads(record)},
                                     ensure_ascii=False) + "\n")
                if seq in checkpoints:
                    out.write(json.dumps({"kind": "checkpoint", **json.loads(checkpoints[seq])}) + "\n")
                written += 1
        return written
