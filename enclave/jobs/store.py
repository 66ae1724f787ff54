"""The `jobs` table: one row per asynchronous query, the record of its state (Redis only carries it).

A job is written when its query is queued and changes state only in a transaction that also appends
the audit record the change goes with (`query.queued`, `query.charged`, `query.released`, ...), so the
log explains every state a job was in. A worker's writes are fenced by its attempt number: each start
increments `attempts`, and a write of attempt n changes the row only while the job is still executing
as attempt n (`advance`); a cancelled job, or one another worker took over, makes the write fail
(`Superseded`), and the transaction around it rolls back whole.

The SQL here is portable (SQLite and PostgreSQL): `?` placeholders, conditional UPDATEs whose row
count is the fence, no rowid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from enclave.audit.store import Connection, Transaction
from enclave.pipeline import QUERY_CODES, Superseded

State = Literal["queued", "executing", "released", "failed", "cancelled"]
# what a researcher sees: the stored state, with `protecting` derived from time (see `visible`)
Visible = Literal["queued", "executing", "protecting", "released", "failed", "cancelled"]
ACTIVE: tuple[State, ...] = ("queued", "executing")
MAX_ATTEMPTS = 3  # starts of one job before it is given up (workers killed under it, or lost)

COLUMNS = ("query_id, researcher, dataset, sql, epsilon, adhoc, state, request_key, charged, attempts, "
           "deadline_seconds, answer_at, error_code, error_message, submitted_at, updated_at")


@dataclass(frozen=True)
class Job:
    query_id: str
    researcher: str
    dataset: str
    sql: str
    epsilon: float | None
    adhoc: bool
    state: State
    request_key: str | None
    charged: bool
    attempts: int
    deadline_seconds: float
    answer_at: float | None  # epoch seconds at which a charged attempt is answered
    error_code: str | None
    error_message: str | None
    submitted_at: float
    updated_at: float

    @classmethod
    def of(cls, row: tuple) -> Job:
        values = list(row)
        values[5], values[8] = bool(values[5]), bool(values[8])
        return cls(*values)

    def visible(self, now: float, base_seconds: float) -> Visible:
        """The state a researcher sees. `protecting` is shown from the engine's deadline to the answer
        time (the last `base_seconds`), whatever the data: when the engine really finished is never
        shown, and a job turns released or failed only at its answer time (the worker waits for it)."""
        if self.state == "executing" and self.answer_at is not None and now >= self.answer_at - base_seconds:
            return "protecting"
        return self.state

    def progress(self, now: float, base_seconds: float) -> float:
        """The share of the time to the answer that has passed: from the deadline set before the run (a
        charged attempt is answered `deadline + base_seconds` after it took its execution slot)."""
        if self.state not in ACTIVE:
            return 1.0
        if self.answer_at is None:
            return 0.0
        total = self.deadline_seconds + base_seconds
        return round(min(1.0, max(0.0, (now - (self.answer_at - total)) / total)), 3)


def insert(tx: Transaction, query_id: str, researcher: str, dataset: str, sql: str, epsilon: float | None,
           adhoc: bool, deadline_seconds: float, record: dict[str, object]) -> Job:
    """Queue a job, recorded (`query.queued`) in the same transaction."""
    queued = tx.append("query.queued", researcher, "allow", [], **record, query_id=query_id,
                       epsilon_requested=epsilon, adhoc=adhoc, deadline_seconds=deadline_seconds)
    now = time.time()
    tx.connection.execute(
        "INSERT INTO jobs (query_id, researcher, dataset, sql, epsilon, adhoc, state, attempts, deadline_seconds, "
        "submitted_at, updated_at, seq) VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?)",
        (query_id, researcher, dataset, sql, epsilon, int(adhoc), deadline_seconds, now, now, queued["seq"]))
    found = get(tx.connection, query_id)
    assert found is not None
    return found


def get(connection: Connection, query_id: str) -> Job | None:
    row = connection.execute(f"SELECT {COLUMNS} FROM jobs WHERE query_id = ?",  # noqa: S608 (constant columns)
                             (query_id,)).fetchone()
    return Job.of(row) if row else None


def active(connection: Connection) -> list[Job]:
    """Jobs queued or executing, oldest first: what the sweeper checks against Redis."""
    rows = connection.execute(f"SELECT {COLUMNS} FROM jobs WHERE state IN ('queued', 'executing') "  # noqa: S608
                              "ORDER BY submitted_at").fetchall()
    return [Job.of(row) for row in rows]


def waiting(connection: Connection) -> int:
    """How many jobs are queued (the queue depth an operator sees: the store's count, whatever Redis holds)."""
    return int(connection.execute("SELECT count(*) FROM jobs WHERE state = 'queued'").fetchone()[0])


def start(tx: Transaction, query_id: str) -> Job | None:
    """Begin an attempt: the job, executing as its next attempt; None if it is no longer active, or was
    given up because it has been started MAX_ATTEMPTS times already (recorded as `query.abandoned`)."""
    job = get(tx.connection, query_id)
    if job is None or job.state not in ACTIVE:
        return None
    if job.attempts >= MAX_ATTEMPTS:
        abandon(tx, job)
        return None
    tx.connection.execute("UPDATE jobs SET state = 'executing', attempts = attempts + 1, answer_at = NULL, "
                          "updated_at = ? WHERE query_id = ? AND attempts = ?", (time.time(), query_id, job.attempts))
    return get(tx.connection, query_id)


def advance(tx: Transaction, job: Job, **columns: object) -> None:
    """Change the job's columns as its attempt `job.attempts`, or raise Superseded (cancelled, or taken
    over by a later attempt): the caller's transaction then rolls back."""
    assignments = "".join(f"{name} = ?, " for name in columns)  # column names from this package's callers only
    changed = tx.connection.execute(
        f"UPDATE jobs SET {assignments}updated_at = ? WHERE query_id = ? AND attempts = ? AND state = 'executing'",  # noqa: S608
        (*columns.values(), time.time(), job.query_id, job.attempts)).rowcount
    if changed != 1:
        raise Superseded(job.query_id)


def _drop_claim(tx: Transaction, job: Job) -> None:
    """A charged job that will never be released: its pending claim on the request key is dropped, so an
    identical request is charged and run anew instead of waiting for it."""
    if job.charged and job.request_key is not None:
        tx.connection.execute("UPDATE releases SET status = 'failed' WHERE request_key = ? AND query_id = ? "
                              "AND status = 'pending'", (job.request_key, job.query_id))


def cancel(tx: Transaction, query_id: str, researcher: str) -> Job | None:
    """Cancel a researcher's queued or executing job (recorded as `query.cancelled`); None if it is not an
    active job of theirs. A job cancelled before its charge spends nothing; after it, the charge stays
    spent (the query may have executed) and the worker discards its result."""
    job = get(tx.connection, query_id)
    if job is None or job.researcher != researcher or job.state not in ACTIVE:
        return None
    tx.append("query.cancelled", researcher, "allow", [], query_id=query_id, dataset=job.dataset,
              charged=job.charged, state=job.state)
    changed = tx.connection.execute("UPDATE jobs SET state = 'cancelled', updated_at = ? WHERE query_id = ? "
                                    "AND state IN ('queued', 'executing')", (time.time(), query_id)).rowcount
    if changed != 1:  # pragma: no cover - serialised by the transaction
        raise RuntimeError("job changed while being cancelled")
    _drop_claim(tx, job)
    return get(tx.connection, query_id)


def abandon(tx: Transaction, job: Job) -> None:
    """Give a job up after MAX_ATTEMPTS starts: failed, recorded; a recorded charge stays spent."""
    tx.append("query.abandoned", job.researcher, "deny", [f"job_abandoned: {QUERY_CODES['job_abandoned']}"],
              query_id=job.query_id, dataset=job.dataset, charged=job.charged, attempts=job.attempts,
              code="job_abandoned")
    tx.connection.execute("UPDATE jobs SET state = 'failed', error_code = 'job_abandoned', error_message = ?, "
                          "updated_at = ? WHERE query_id = ? AND state IN ('queued', 'executing')",
                          (QUERY_CODES["job_abandoned"], time.time(), job.query_id))
    _drop_claim(tx, job)
