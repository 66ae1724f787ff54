"""The queue of asynchronous queries in Redis (rq), the workers' leases, and the sweeper.

Redis holds nothing that cannot be lost. The store's `jobs` table is the record; Redis carries
- the rq queue `<namespace>:queries`, one rq job per query, its id the query id (so a job enqueued twice
  is one job; a duplicate delivery finds the job done, or leased, and does nothing);
- a lease per executing job, `<namespace>:lease:<query id>`, set with NX by the worker that starts it
  and refreshed every second while it runs (it expires LEASE_SECONDS after its worker died);
- released answers (enclave.disclosure.cache).

The sweeper (`sweep`, run by `enclave worker` at start and every SWEEP_SECONDS) recovers what Redis
lost or a dead worker left: a job the store has queued or executing that has neither a live lease nor
a waiting rq job, on two sweeps at least LEASE_SECONDS apart, is enqueued again. Its next start is a
new attempt (enclave.jobs.store): it re-uses a charge already recorded, and a job started
MAX_ATTEMPTS times is given up (`job_abandoned`). rq's own abandoned-job handling does not fit here: a
SimpleWorker sends no heartbeat while it runs a job, so rq notices a dead one only after the job's
whole timeout, and its failed registry is lost with Redis anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job as RqJob
from rq.job import JobStatus

from enclave.audit.store import AuditStore
from enclave.jobs import store

LEASE_SECONDS = 5
SWEEP_SECONDS = 2.0
JOB_TIMEOUT_SECONDS = 3600  # rq's backstop only: the engine is interrupted at the query's own deadline
WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
RUN = "enclave.jobs.worker.run_job"


class JobQueue:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis = client
        self.namespace = namespace
        self.queue = Queue(f"{namespace}:queries", connection=client)
        self._suspects: dict[str, float] = {}

    @classmethod
    def connect(cls, url: str, namespace: str) -> JobQueue:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2), namespace)

    @property
    def name(self) -> str:
        return self.queue.name

    def enqueue(self, query_id: str) -> bool:
        """Put a job on the queue (its rq id is the query id); False if Redis cannot be reached, in which
        case the sweeper enqueues it once Redis is back (the store has it queued)."""
        try:
            self.queue.enqueue(RUN, query_id, job_id=query_id, result_ttl=0, failure_ttl=24 * 3600,
                               job_timeout=JOB_TIMEOUT_SECONDS)
        except redis.RedisError:
            return False
        return True

    def waiting(self, query_id: str) -> bool:
        """The rq job is queued (not taken by a worker, not failed, not lost)."""
        try:
            return RqJob.fetch(query_id, connection=self.redis).get_status() in WAITING
        except NoSuchJobError:
            return False

    def _lease_key(self, query_id: str) -> str:
        return f"{self.namespace}:lease:{query_id}"

    def leased(self, query_id: str) -> bool:
        return bool(self.redis.exists(self._lease_key(query_id)))

    @contextmanager
    def lease(self, query_id: str, worker: str) -> Iterator[bool]:
        """Take the job's lease (False if a live worker holds it) and keep it while the block runs."""
        key = self._lease_key(query_id)
        if not self.redis.set(key, worker, nx=True, ex=LEASE_SECONDS):
            yield False
            return
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(1.0):
                with suppress(redis.RedisError):  # set again after a flush too: the worker is alive
                    self.redis.set(key, worker, ex=LEASE_SECONDS)

        thread = threading.Thread(target=refresh, name=f"lease-{query_id[:8]}", daemon=True)
        thread.start()
        try:
            yield True
        finally:
            stop.set()
            thread.join()
            with suppress(redis.RedisError):
                self.redis.delete(key)

    def sweep(self, audit: AuditStore, now: float | None = None) -> list[str]:
        """Enqueue again every active job that Redis lost or whose worker died; the ids enqueued."""
        now = time.monotonic() if now is None else now
        with audit.reading() as connection:
            jobs = store.active(connection)
        enqueued = []
        for job in jobs:
            if self.leased(job.query_id) or self.waiting(job.query_id):
                self._suspects.pop(job.query_id, None)
                continue
            first = self._suspects.setdefault(job.query_id, now)
            if now - first >= LEASE_SECONDS and self.enqueue(job.query_id):
                self._suspects.pop(job.query_id, None)
                enqueued.append(job.query_id)
        active = {job.query_id for job in jobs}
        for gone in set(self._suspects) - active:
            del self._suspects[gone]
        return enqueued
