"""`enclave worker [--concurrency M]`: M query workers that run asynchronous queries from the queue.

Each worker is an rq `SimpleWorker` in its own process, forked by an rq `WorkerPool` that starts a new
one when one dies. SimpleWorker runs a job in the worker process itself, not in a fork per job: the
enclave (rules, manifests, the DuckDB sandbox, OpenDP's caches) is opened once per worker, DuckDB is
never used across a fork, and a kill -9 stops the job with its worker, with no orphaned work horse
left running it. Each worker dies with the pool (PR_SET_PDEATHSIG on Linux), so killing the pool kills
its jobs too, and the sweeper recovers them. SIGTERM (or SIGINT) stops the pool cleanly: each worker
finishes the job it is running (answered at its deadline) and exits.

A job (`run_job`) is the synchronous pipeline with the job's hooks (enclave.pipeline.Hooks): refusals
and outcomes are recorded with the job's state in one transaction, the charge is taken under the job's
id when the worker starts it (so a cancelled queued job spends nothing) and re-used by a retry, and
the outcome of a charged query is written only at its answer time.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import uuid
from contextlib import suppress

from rq import SimpleWorker
from rq.worker_pool import WorkerPool

from enclave.audit.store import AuditStore, Transaction
from enclave.jobs import store
from enclave.jobs.queue import SWEEP_SECONDS, JobQueue
from enclave.pipeline import Enclave, Hooks, QueryError, Superseded
from enclave.settings import Settings

CANCEL_POLL_SECONDS = 0.25
_enclave: Enclave | None = None
_queue: JobQueue | None = None


class JobHooks(Hooks):
    """A job's state, written with the pipeline's records, as attempt `job.attempts` (enclave.jobs.store)."""

    def __init__(self, audit: AuditStore, job: store.Job) -> None:
        self.audit = audit
        self.job = job
        self.query_id = job.query_id
        self.charged_key = job.request_key if job.charged else None

    def refused(self, tx: Transaction, error: QueryError) -> None:
        store.advance(tx, self.job, state="failed", error_code=error.code, error_message=error.message)

    def charged(self, tx: Transaction, query_id: str, key: str, retried: bool) -> None:
        store.advance(tx, self.job, charged=1, request_key=key)
        if retried:
            tx.append("query.retried", self.job.researcher, "allow", [], query_id=query_id,
                      dataset=self.job.dataset, attempt=self.job.attempts)

    def started(self, answer_at: float) -> None:
        with self.audit.transaction() as tx:
            store.advance(tx, self.job, answer_at=time.time() + (answer_at - time.monotonic()))

    def hold(self, answer_at: float) -> None:
        """Wait for the answer time; stop early (Superseded) once the job is cancelled or taken over."""
        while (delay := answer_at - time.monotonic()) > 0:
            time.sleep(min(delay, CANCEL_POLL_SECONDS))
            with self.audit.reading() as connection:
                now = store.get(connection, self.job.query_id)
            if now is None or now.state != "executing" or now.attempts != self.job.attempts:
                raise Superseded(self.job.query_id)

    def replayed(self, tx: Transaction, key: str) -> None:
        store.advance(tx, self.job, state="released", request_key=key)

    def failed(self, tx: Transaction, error: QueryError) -> None:
        store.advance(tx, self.job, state="failed", error_code=error.code, error_message=error.message)

    def released(self, tx: Transaction, key: str) -> None:
        store.advance(tx, self.job, state="released")


def _opened() -> tuple[Enclave, JobQueue]:
    global _enclave, _queue
    if _enclave is None or _queue is None:
        settings = Settings()
        if not settings.redis_url:
            raise RuntimeError("ENCLAVE_REDIS_URL is not set")
        _enclave = Enclave(settings)
        _queue = JobQueue.connect(settings.redis_url, _enclave.namespace)
    return _enclave, _queue


def run_job(query_id: str) -> str:
    """Run one asynchronous query (rq calls this by name); its final state, or why nothing was done."""
    enclave, queue = _opened()
    with queue.lease(query_id, f"{os.getpid()}-{uuid.uuid4().hex[:8]}") as taken:
        if not taken:
            return "leased"  # a live worker runs it: this delivery is a duplicate
        with enclave.audit.transaction() as tx:
            job = store.start(tx, query_id)
        if job is None:
            return "inactive"  # done, cancelled, given up or unknown
        # a refusal or failure is recorded with the job's state; a superseded attempt writes nothing
        with suppress(QueryError, Superseded):
            enclave.query(job.researcher, job.dataset, job.sql, job.epsilon, adhoc=job.adhoc, hold=False,
                          hooks=JobHooks(enclave.audit, job))
    with enclave.audit.reading() as connection:
        found = store.get(connection, query_id)
    return found.state if found else "inactive"


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the pool that forked it dies, so no worker outlives it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the pool died before prctl took effect
            os._exit(1)


class EnclaveWorker(SimpleWorker):
    """An rq SimpleWorker that opens the enclave when it starts (not at its first job), and dies with its pool."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        _die_with_parent()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        _opened()

    def work(self, *args: object, **kwargs: object) -> bool:
        """rq's loop without its scheduler process (nothing here is scheduled; a process forked by the
        worker would not die with the pool)."""
        kwargs["with_scheduler"] = False
        return super().work(*args, **kwargs)  # type: ignore[arg-type]


class Pool(WorkerPool):
    """rq's WorkerPool, which also sweeps (enclave.jobs.queue) at start and every SWEEP_SECONDS."""

    def __init__(self, queue: JobQueue, audit: AuditStore, concurrency: int) -> None:
        super().__init__([queue.name], connection=queue.redis, num_workers=concurrency, worker_class=EnclaveWorker)
        self._jobs = queue
        self._audit = audit
        self._swept = 0.0

    def sweep(self) -> None:
        try:
            self._jobs.sweep(self._audit)
        except Exception as error:  # Redis or the store briefly away: the next sweep tries again
            self.log.warning("sweep failed: %s", type(error).__name__)
        self._swept = time.monotonic()

    def check_workers(self, respawn: bool = True) -> None:
        super().check_workers(respawn)
        if time.monotonic() - self._swept >= SWEEP_SECONDS:
            self.sweep()


def run_workers(settings: Settings, concurrency: int) -> int:
    """Run `concurrency` query workers until SIGTERM or SIGINT; exit status 0, or 2 without Redis."""
    if not settings.redis_url:
        print("enclave worker needs ENCLAVE_REDIS_URL: asynchronous queries are queued in Redis.", file=sys.stderr)
        return 2
    audit, _ = Enclave.open_audit(settings)
    namespace = Enclave.namespace_of(audit)
    queue = JobQueue.connect(settings.redis_url, namespace)
    pool = Pool(queue, audit, concurrency)
    pool.sweep()
    pool.start(logging_level="WARNING")
    return 0
