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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any, Protocol, TextIO, TypeVar

from enclave.audit.group import GroupCommit
from enclave.audit.merkle import (
    Frontier,
    frontier_json,
    grow,
    inclusion_proof,
    leaf_hash,
    made,
    root_of_frontier,
    root_of_hashes,
)
from enclave.audit.records import GENESIS, canonical, now, record_hash
from enclave.audit.signing import Signer, key_id
from enclave.ops.metrics import timed_audit_append

T = TypeVar("T")


# The head of the log as a transaction left it: sequence number, hash and Merkle frontier
Tip = tuple[int, str, Frontier]


class Transaction:
    """One write transaction: append records, checkpoint, and read or change the governed state.

    It reads the head and its frontier once, keeps them as it appends (`Tip`), and writes the frontier
    back once, when it ends (`flush`): many appends in one transaction (a group commit) cost one read and
    one write of them, not one each."""

    def __init__(self, connection: Connection, store: AuditStore) -> None:
        self.connection = connection
        self._store = store
        self._tip: Tip | None = None
        self._moved = False  # appended since the frontier was read: `flush` writes it

    def append(self, event: str, actor: str, decision: str, reasons: list[str] | None = None,
               **fields: object) -> dict[str, object]:
        """Append one record after the current head; it commits with the transaction or not at all."""
        seq, prev, frontier = self.tip()
        record = {**fields, "seq": seq + 1, "time": now(), "actor": actor, "event": event,
                  "decision": decision, "reasons": reasons or [], "prev_hash": prev}
        digest = record_hash(record)
        text = canonical(record)
        self.connection.execute("INSERT INTO events (seq, hash, record) VALUES (?, ?, ?)",
                                (seq + 1, digest, text.decode()))
        frontier, nodes = made(frontier, leaf_hash(text))
        self._keep_nodes(nodes)
        self._tip, self._moved = (seq + 1, digest, frontier), True
        if (seq + 1) % self._store.checkpoint_every == 0:
            self.checkpoint()
        return {**record, "hash": digest}

    def tip(self) -> Tip:
        """The head as this transaction has it (read once; a write restores it with `rewind`)."""
        if self._tip is None:
            row = self.connection.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            seq, digest = (row[0], row[1]) if row else (0, GENESIS)
            self._tip = (seq, digest, self._frontier(seq))
        return self._tip

    def rewind(self, tip: Tip | None) -> None:
        """Back to an earlier `tip()` (or to reading it afresh), after a rollback to a savepoint undid the
        appends made since."""
        self._tip = tip

    def flush(self) -> None:
        """Write the frontier of the head, if the transaction appended (before it commits)."""
        if self._moved and self._tip is not None:
            self._keep(self._tip[0], self._tip[2])

    def _head(self) -> tuple[int, str]:
        seq, digest, _ = self.tip()
        return seq, digest

    def _frontier(self, head: int) -> Frontier:
        """The Merkle frontier of records 1..head, as kept in `merkle`; rebuilt from the log, once, when it
        is not there or not at the head (a store from before migration 9, or a restored one)."""
        row = self.connection.execute("SELECT size, frontier FROM merkle WHERE id = 1").fetchone()
        if row is not None and row[0] == head:
            return [(height, bytes.fromhex(subtree)) for height, subtree in json.loads(row[1])]
        frontier: Frontier = []
        nodes: list[tuple[int, int, bytes]] = []
        for (text,) in self.connection.execute("SELECT record FROM events WHERE seq <= ? ORDER BY seq", (head,)):
            frontier, more = made(frontier, leaf_hash(text.encode()))
            nodes += more
        self._keep_nodes(nodes)  # the subtrees a proof reads, for a log from before they were kept
        return frontier

    def _keep(self, size: int, frontier: Frontier) -> None:
        self.connection.execute(
            "INSERT INTO merkle (id, size, frontier) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "size = excluded.size, frontier = excluded.frontier",
            (size, json.dumps([[height, subtree.hex()] for height, subtree in frontier])))

    def _keep_nodes(self, nodes: list[tuple[int, int, bytes]]) -> None:
        for height, position, root in nodes:
            self.connection.execute("INSERT INTO merkle_nodes (height, position, hash) VALUES (?, ?, ?) "
                                    "ON CONFLICT (height, position) DO NOTHING", (height, position, root.hex()))

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
            root = root_of_frontier(self.tip()[2])
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

    def glance(self) -> AbstractContextManager[Connection]:
        """Reads with no transaction around them: each statement sees what is committed when it runs (no
        BEGIN or COMMIT to wait for). For look-ups whose rows never change once written, or of one row."""

    def close(self) -> None: ...


_EVENTS_PAGE = "SELECT seq, hash, record FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"


class AuditStore:
    # records per read when the log is streamed (export, verify, proofs): what those hold in memory at once
    page = 2000

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
            tx = Transaction(connection, self)
            yield tx
            tx.flush()

    def grouped(self, work: Callable[[Transaction], T]) -> T:
        """Run `work` in a write transaction committed together with other threads' (enclave.audit.group):
        as durable and as ordered as `transaction`, one flush to disk for many. For small writes on hot
        paths; `work` must not wait on anything another writer holds."""
        return self._group.run(work)

    def reading(self) -> AbstractContextManager[Connection]:
        return self.backend.read()

    def glancing(self) -> AbstractContextManager[Connection]:
        """Reads without a snapshot (`Backend.glance`): the request path's look-ups of one key each."""
        return self.backend.glance()

    def close(self) -> None:
        self.backend.close()

    def records(self, start: int = 1, end: int | None = None, limit: int | None = None) -> list[dict[str, object]]:
        """Records start..end in order, at most `limit` of them (one read with LIMIT: a page costs O(limit))."""
        with self.reading() as connection:
            rows = connection.execute(
                "SELECT hash, record FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
                (start, end if end is not None else 2**62, limit if limit is not None else 2**62)).fetchall()
        return [{**json.loads(record), "hash": digest} for digest, record in rows]

    def records_at(self, seqs: Iterable[int]) -> dict[int, dict[str, object]]:
        """The records of these sequence numbers (those that exist), by number: one read per 500 of them."""
        wanted = sorted({int(seq) for seq in seqs})
        found: dict[int, dict[str, object]] = {}
        with self.reading() as connection:
            for first in range(0, len(wanted), 500):
                chunk = wanted[first:first + 500]
                marks = ", ".join("?" for _ in chunk)
                rows = connection.execute(f"SELECT seq, hash, record FROM events WHERE seq IN ({marks})",  # noqa: S608
                                          chunk).fetchall()
                found.update({int(seq): {**json.loads(record), "hash": digest} for seq, digest, record in rows})
        return found

    def _pages(self, start: int, end: int) -> Iterator[list[tuple[int, str, str]]]:
        """(seq, hash, record) of records start..end, `page` rows at a time, each page its own short read.

        Memory stays O(page) on both backends (a psycopg cursor holds its whole result, so one big SELECT
        would not), and no connection stays open between pages: a response streamed from a thread pool may
        resume this on another thread. Records up to an existing `end` never change (the log is append-only),
        so the pages read the same rows one snapshot would.
        """
        after = start - 1
        while after < end:
            with self.reading() as connection:
                rows = connection.execute(_EVENTS_PAGE, (after, end, self.page)).fetchall()
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def size(self) -> int:
        """The number of the newest record (0 for an empty log): one statement, no snapshot."""
        with self.glancing() as connection:
            return int(connection.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

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
        """Write records start..end as JSONL with their checkpoints (`export_lines`); returns how many records."""
        written = 0
        for kind, line in self._entries(start, self._checkpointed(end)):
            out.write(line)
            written += kind == "event"
        return written

    def export_lines(self, start: int = 1, end: int | None = None) -> Iterator[str]:
        """The export's lines (each ending in a newline), streamed a page at a time in O(page + log n) memory.

        The end (default: the head) is signed here, before the first line is asked for; the records after it
        that others append meanwhile are not exported (a tail no checkpoint covers would not verify). A range
        that does not start at 1 begins with a `prefix` line: the Merkle frontier of the records before it
        (the roots of its perfect subtrees, with their heights), their number and the hash of the last of
        them, so its checkpoints can still be verified (computing it is one pass over those records).
        """
        return (line for _, line in self._entries(start, self._checkpointed(end)))

    def _checkpointed(self, end: int | None) -> int:
        """Sign records 1..end (default: the head) unless signed already; the last record the export holds."""
        with self.transaction() as tx:
            tx.checkpoint(end)
            head = int(tx.connection.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        return head if end is None else min(end, head)

    def _entries(self, start: int, last: int) -> Iterator[tuple[str, str]]:
        """(kind, line) of the export of records start..last: the prefix, then each record and checkpoint."""
        if start > 1:
            yield "prefix", self._prefix(start - 1)
        for rows in self._pages(start, last):
            with self.reading() as connection:
                signed = dict(connection.execute("SELECT size, record FROM checkpoints WHERE size >= ? AND size <= ?",
                                                 (rows[0][0], rows[-1][0])).fetchall())
            for seq, digest, record in rows:
                yield "event", json.dumps({"kind": "event", "hash": digest, "record": json.loads(record)},
                                          ensure_ascii=False) + "\n"
                if seq in signed:
                    yield "checkpoint", json.dumps({"kind": "checkpoint", **json.loads(signed[seq])}) + "\n"

    def _prefix(self, size: int) -> str:
        """The prefix line of a range that starts after record `size`: O(log n) of it, in one pass."""
        frontier: Frontier = []
        count, last_hash = 0, GENESIS
        for rows in self._pages(1, size):
            for _, _, record in rows:
                grow(frontier, leaf_hash(record.encode()))
            count, last_hash = rows[-1][0], rows[-1][1]
        return json.dumps({"kind": "prefix", "size": count, "last_hash": last_hash,
                           "frontier": frontier_json(frontier)}) + "\n"

    def prove(self, seq: int) -> dict[str, object] | None:
        """The RFC 9162 inclusion proof of record `seq` in the tree of the latest signed checkpoint, signing
        the head first if no checkpoint covers the record yet; None if there is no such record.

        It reads O(log n) of the complete subtrees appends keep (`merkle_nodes`, enclave.audit.merkle.made)
        and at most a few hundred records, in one snapshot; a subtree not kept is computed from its halves
        or records (bench/audit_append.py measures it). An auditor checks it offline
        (`enclave audit verify-proof`, `enclave.audit.verify.verify_proof`) with the public key alone.
        """
        with self.reading() as connection:
            row = connection.execute("SELECT hash, record FROM events WHERE seq = ?", (seq,)).fetchone()
            signed = self._covering(connection, seq)
        if row is not None and signed is None:
            with self.transaction() as tx:
                tx.checkpoint()
                signed = self._covering(tx.connection, seq)
        if row is None or signed is None:
            return None
        size = int(signed["checkpoint"]["size"])
        with self.reading() as connection:
            path = inclusion_proof(seq - 1, size, partial(_leaf_range, connection), partial(_stored_node, connection))
        return {"seq": seq, "record": row[1], "hash": row[0], "leaf_index": seq - 1, "tree_size": size,
                "path": [node.hex() for node in path], "checkpoint": signed}

    @staticmethod
    def _covering(connection: Connection, seq: int) -> dict[str, Any] | None:
        """The latest signed checkpoint whose tree holds record `seq`."""
        row = connection.execute("SELECT record FROM checkpoints WHERE size >= ? ORDER BY size DESC LIMIT 1",
                                 (seq,)).fetchone()
        return json.loads(row[0]) if row else None


def _leaf_range(connection: Connection, start: int, end: int) -> list[bytes]:
    """The leaf hashes of leaves start..end - 1 (records start + 1..end)."""
    return [leaf_hash(text.encode()) for (text,) in connection.execute(
        "SELECT record FROM events WHERE seq > ? AND seq <= ? ORDER BY seq", (start, end))]


def _stored_node(connection: Connection, height: int, position: int) -> bytes | None:
    row = connection.execute("SELECT hash FROM merkle_nodes WHERE height = ? AND position = ?",
                             (height, position)).fetchone()
    return bytes.fromhex(row[0]) if row else None
