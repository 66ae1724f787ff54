"""Asynchronous queries: queued by the API, run by `enclave worker`, their state in the store.

    POST /v1/queries {"mode": "async"}     check, plan, admit (refusals answered at once, as in sync mode)
      -> jobs row + `query.queued`          one transaction; nothing is charged yet
      -> rq queue in Redis                  202 {"query_id", "state": "queued"}
    worker: lease, start (attempt n)       enclave.jobs.worker.run_job
      -> the synchronous pipeline with the job's hooks: charge under the job's id (`query.charged`),
         execute, protect, wait for the answer time, then release (`query.released` + releases row +
         job state, one transaction)
    GET /v1/queries/{id}                   the release, or the job's state and progress
    DELETE /v1/queries/{id}                cancel: queued -> nothing spent; executing -> charge kept

States: queued, executing, protecting (shown from the engine's deadline to the answer time), released,
failed, cancelled. The store is the record; Redis (the queue, leases, cached answers) can be lost.
"""

from __future__ import annotations

import uuid

from enclave.jobs import store
from enclave.jobs.queue import JobQueue
from enclave.pipeline import Enclave, Planned


def submit(enclave: Enclave, queue: JobQueue, researcher: str, planned: Planned, sql: str,
           epsilon: float | None, *, adhoc: bool = True) -> store.Job:
    """Admit a planned query (a refusal is recorded and raised, with the codes of sync mode), record its
    job and put it on the queue. Charges nothing: the worker charges it when it starts it."""
    dataset = str(planned.record["dataset"])
    enclave.admit(researcher, dataset, planned, adhoc=adhoc)
    query_id = uuid.uuid4().hex
    with enclave.audit.transaction() as tx:
        job = store.insert(tx, query_id, researcher, dataset, sql, epsilon, adhoc, planned.deadline_seconds,
                           planned.record)
    queue.enqueue(query_id)  # if Redis is away, the sweeper enqueues it later: the store has it queued
    return job
