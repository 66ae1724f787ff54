"""Prometheus metrics, one set per process, aggregated across API worker processes.

With `PROMETHEUS_MULTIPROC_DIR` set (`enclave serve --workers N` creates a private one when it is unset)
every process writes its values to files there and `exposition()` merges them; without it, the process's
own default registry is served (one process). The variable must be set before `prometheus_client` is
imported, which is why the parent of the workers sets it before it starts them.

Labels carry only bounded, public vocabularies: route templates (never the raw URL), HTTP status codes,
decisions, stage names of `enclave.pipeline`, registered dataset names and documented error codes. Never
SQL, parameters, results, researcher names, key ids or any other identity.

Who may read `/metrics`: stage durations of a query are exactly the timing that invariant 10 keeps from
researchers (the answer is held until a deadline fixed before the run), so the route needs an auditor key
or, for a scraper, `Authorization: Bearer $ENCLAVE_METRICS_TOKEN` (enclave.api.routes.operations).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from enclave.disclosure.release import Release

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DECISIONS = ("released", "refused", "failed", "replayed")
# seconds: from a millisecond check to a query held to a long deadline
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

REQUESTS = Counter("enclave_http_requests", "HTTP requests answered, by route template, method and status.",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("enclave_http_request_duration_seconds", "Time to answer an HTTP request, by route "
                            "template (a query's answer is held until its deadline).", ["route", "method"],
                            buckets=_BUCKETS)
QUERIES = Counter("enclave_queries", "Queries by decision (released, refused, failed, replayed), the pipeline "
                  "stage it was taken in, dataset and error code (empty when released or replayed).",
                  ["decision", "stage", "dataset", "code"])
STAGE_SECONDS = Histogram("enclave_stage_duration_seconds", "Wall time of each pipeline stage.", ["stage"],
                          buckets=_BUCKETS)
EPSILON_SPENT = Counter("enclave_epsilon_spent", "ε charged to grants, per dataset (charged before execution; "
                        "a query that executed has spent).", ["dataset"])
CELLS_SUPPRESSED = Counter("enclave_cells_suppressed", "Released cells suppressed as small, per dataset.",
                           ["dataset"])
AUDIT_APPEND_SECONDS = Histogram("enclave_audit_append_duration_seconds", "Time of a committed audit-store write "
                                 "transaction, from BEGIN to COMMIT (waiting for the writer lock included).",
                                 buckets=_BUCKETS)
QUEUE_DEPTH = Gauge("enclave_queue_depth", "Asynchronous queries waiting in the queue.",
                    multiprocess_mode="mostrecent")
API_WORKERS = Gauge("enclave_api_workers", "Live API worker processes (a dead one's share is removed).",
                    multiprocess_mode="livesum")

# the stage the current query is in (set by `stage`), so a decision is counted with the stage it was taken in
_current_stage: ContextVar[str] = ContextVar("enclave_stage", default="")


def observe_stage(name: str, seconds: float) -> None:
    """One pipeline stage took `seconds` (enclave.pipeline._stage calls this for every stage, always)."""
    _current_stage.set(name)
    STAGE_SECONDS.labels(name).observe(seconds)


def query_decided(decision: str, dataset: str, code: str = "", suppressed_cells: int = 0) -> None:
    """A query was released, refused, failed or replayed, in the stage it last entered. `dataset` must be
    a registered dataset's name (the pipeline decides only on those)."""
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}")
    QUERIES.labels(decision, _current_stage.get() or "none", dataset, code).inc()
    if suppressed_cells:
        CELLS_SUPPRESSED.labels(dataset).inc(suppressed_cells)


def query_released(release: Release) -> None:
    """A release answered: replayed (nothing spent, nothing new suppressed) or released with its cells."""
    if release.replayed:
        query_decided("replayed", release.dataset)
        return
    suppressed = sum(1 for row in release.rows for cell in row if cell.suppressed)
    query_decided("released", release.dataset, suppressed_cells=suppressed)


def charged(dataset: str, epsilon: float) -> None:
    EPSILON_SPENT.labels(dataset).inc(epsilon)


def set_queue_depth(n: int) -> None:
    """The number of asynchronous queries waiting, read from the store when /metrics is scraped."""
    QUEUE_DEPTH.set(n)


P = ParamSpec("P")
T = TypeVar("T")


def timed_audit_append(transaction: Callable[P, AbstractContextManager[T]]) -> Callable[P, AbstractContextManager[T]]:
    """Decorate a store's `transaction()` context manager: each committed one is observed (a rolled-back
    one appended nothing and is not)."""

    @wraps(transaction)
    @contextmanager
    def observed(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        started = time.perf_counter()
        with transaction(*args, **kwargs) as tx:
            yield tx
        AUDIT_APPEND_SECONDS.observe(time.perf_counter() - started)

    return observed


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type: every worker's values when they share a directory."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
