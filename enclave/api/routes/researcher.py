"""Researcher routes: datasets and rules (public metadata), check, query, their own queries, budget."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from enclave.api.answers import answered
from enclave.api.deps import EnclaveDep, JobsDep, Researcher
from enclave.api.errors import API_CODES, ApiError, refused
from enclave.api.schemas import (
    BudgetOut,
    CheckOut,
    DatasetDetail,
    DatasetSummary,
    ErrorDetail,
    PlanOut,
    QueryIn,
    QueryStatus,
    QuerySummary,
    RulesOut,
    TableOut,
)
from enclave.budget.ledger import grants_of, remaining, today
from enclave.catalog.manifest import Manifest
from enclave.disclosure import replay
from enclave.disclosure.plan import PlanError
from enclave.disclosure.release import Release
from enclave.jobs import store as jobs_store
from enclave.jobs import submit
from enclave.pipeline import Enclave, QueryError, UnknownDataset, plan_summary

router = APIRouter(prefix="/v1", tags=["researcher"])


def _manifest(enclave: Enclave, name: str) -> Manifest:
    try:
        return enclave.manifest(name)
    except UnknownDataset:
        raise ApiError(404, "not_found", f"No dataset named {name!r}.") from None


@router.get("/datasets", operation_id="researcher-list-datasets", response_model=list[DatasetSummary])
def list_datasets(enclave: EnclaveDep, principal: Researcher) -> list[DatasetSummary]:
    return [DatasetSummary(name=m.name, title=m.title, description=m.description) for m in enclave.manifests.values()]


@router.get("/datasets/{name}", operation_id="researcher-get-dataset", response_model=DatasetDetail)
def get_dataset(name: str, enclave: EnclaveDep, principal: Researcher) -> DatasetDetail:
    manifest = _manifest(enclave, name)
    threshold = max(enclave.rules.suppression_threshold, manifest.suppression_threshold or 0)
    tables = {
        table_name: TableOut(contributor=table.contributor, description=table.description, columns={
            column: {"type": spec.type, "role": spec.role, "description": spec.description,
                     "keys": list(spec.public_keys) if spec.public_keys is not None else None,
                     "bounds": spec.bounds}
            for column, spec in table.columns.items()})
        for table_name, table in manifest.tables.items()}
    return DatasetDetail(name=manifest.name, title=manifest.title, description=manifest.description,
                         privacy_unit=manifest.privacy_unit, tables=tables, suppression_threshold=threshold,
                         max_rows_per_unit=manifest.contribution_bounds.max_rows_per_unit,
                         max_groups_per_unit=manifest.contribution_bounds.max_groups_per_unit)


@router.get("/rules", operation_id="researcher-get-rules", response_model=RulesOut)
def get_rules(enclave: EnclaveDep, principal: Researcher) -> RulesOut:
    return RulesOut(sha256=enclave.rules.sha256, rules=enclave.rules.model_dump(mode="json"))


@router.post("/queries/check", operation_id="researcher-check-query", response_model=CheckOut)
def check_query(body: QueryIn, enclave: EnclaveDep, principal: Researcher) -> CheckOut:
    """Check a query and show its cost and accuracy. Spends nothing, runs nothing."""
    _manifest(enclave, body.dataset)
    try:
        prepared = enclave.prepare(body.dataset, body.sql)
    except QueryError as error:
        raise refused(error) from None
    out = CheckOut(accepted=prepared.rewritten is not None, violations=list(prepared.result.violations))
    if prepared.rewritten is None:
        return out
    try:
        plan = enclave.plan(body.dataset, prepared.rewritten, body.epsilon, body.weights, body.accuracy)
    except PlanError as error:  # the code and status the query route gives for the same cause
        raise refused(QueryError(error.code, error.message)) from None
    query = prepared.rewritten.checked
    return out.model_copy(update={"canonical_sql": query.canonical_sql, "rules_sha256": query.rules_sha256,
                                  "plan": PlanOut.model_validate(plan_summary(plan, query.columns, prepared.cost))})


@router.post("/queries", operation_id="researcher-submit-query", response_model=Release,
             responses={202: {"model": QueryStatus, "description": "Queued: an asynchronous query, to poll"},
                        400: {"description": "Refused"}})
async def submit_query(body: QueryIn, enclave: EnclaveDep, jobs: JobsDep,
                       principal: Researcher) -> Release | Response:
    """Run a query through the whole pipeline and return its protected release (or why it was refused),
    at the deadline its worst case set before it ran; or, asynchronously (`mode`), queue it and answer
    202 at once. Refusals before the charge are answered at once in both modes, with the same codes."""
    _manifest(enclave, body.dataset)
    if body.mode == "async" and jobs is None:
        raise ApiError(409, "async_unavailable", API_CODES["async_unavailable"])
    allocated = body.weights is not None or body.accuracy is not None
    if body.mode == "async" and allocated:
        raise ApiError(409, "async_not_allocated", API_CODES["async_not_allocated"])
    try:
        planned = await run_in_threadpool(enclave.plan_or_replay, principal.name, body.dataset, body.sql,
                                          body.epsilon, weights=body.weights, accuracy=body.accuracy)
        if isinstance(planned, Release):  # a repeat of a released request: its answer, at once
            return planned
        after = enclave.rules.execution.async_after_seconds
        if jobs is not None and not allocated and (body.mode == "async" or (
                body.mode == "auto" and after is not None and planned.deadline_seconds > after)):
            job = await run_in_threadpool(submit, enclave, jobs, principal.name, planned, body.sql, body.epsilon)
            return JSONResponse(_status(enclave, job).model_dump(mode="json"), status_code=202)
        return await answered(lambda: enclave.run_planned(principal.name, planned))
    except QueryError as error:
        raise refused(error) from None


def _status(enclave: Enclave, job: jobs_store.Job) -> QueryStatus:
    now, base = time.time(), enclave.rules.execution.base_seconds
    state = job.visible(now, base)
    assert state != "released"  # a released job is answered with its release
    error = None
    if job.state == "failed" and job.error_code is not None:
        error = ErrorDetail(code=job.error_code, message=job.error_message or "", violations=[])
    return QueryStatus(query_id=job.query_id, dataset=job.dataset, state=state, deadline_seconds=job.deadline_seconds,
                       progress=job.progress(now, base), charged=job.charged, error=error)


def _own_job(enclave: Enclave, query_id: str, researcher: str) -> jobs_store.Job | None:
    with enclave.audit.reading() as connection:
        job = jobs_store.get(connection, query_id)
    return job if job is not None and job.researcher == researcher else None


@router.get("/queries", operation_id="researcher-list-queries", response_model=list[QuerySummary])
def list_queries(enclave: EnclaveDep, principal: Researcher) -> list[QuerySummary]:
    with enclave.audit.transaction() as tx:
        rows = replay.of_researcher(tx, principal.name)
    out = []
    for query_id, status, payload in rows:
        release = Release.model_validate_json(payload) if payload else None
        out.append(QuerySummary(query_id=query_id, status=status, dataset=release.dataset if release else None,
                                epsilon=release.epsilon if release else None))
    return out


@router.get("/queries/{query_id}", operation_id="researcher-get-query", response_model=Release | QueryStatus)
def get_query(query_id: str, enclave: EnclaveDep, principal: Researcher) -> Release | QueryStatus:
    """A released answer, or an asynchronous query's state and progress; another researcher's query id is
    answered as not found."""
    job = _own_job(enclave, query_id, principal.name)
    if job is not None and job.state == "released" and job.request_key is not None:
        payload = enclave.answers.get(job.request_key)
        if payload is None:
            with enclave.audit.reading() as connection:
                payload = replay.released_payload(connection, job.request_key)
        if payload is not None:
            release = Release.model_validate_json(payload)  # answered as a replay: the first release's id
            return _as_of_now(enclave, principal.name, release.model_copy(
                update={"replayed": release.query_id != job.query_id}))
    if job is not None and job.state != "released":
        return _status(enclave, job)
    with enclave.audit.transaction() as tx:
        rows = replay.of_researcher(tx, principal.name)
    for found, status, payload in rows:
        if found == query_id and status == "released" and payload:
            return _as_of_now(enclave, principal.name, Release.model_validate_json(payload))
    raise ApiError(404, "not_found", "No released query with that id.")


def _as_of_now(enclave: Enclave, researcher: str, release: Release) -> Release:
    """A stored release with the number of the audit record it was released under and the budget left now:
    the stored answer holds neither (they are not part of it), and a poll answers as the query did."""
    with enclave.audit.transaction() as tx:
        seq = replay.seq_of(tx.connection, release.query_id)
        left = remaining(tx, researcher, release.dataset)
    return release.model_copy(update={"audit_seq": seq, "epsilon_remaining": left.epsilon if left else None,
                                      "delta_remaining": left.delta if left else None})


@router.delete("/queries/{query_id}", operation_id="researcher-cancel-query", response_model=QueryStatus)
def cancel_query(query_id: str, enclave: EnclaveDep, principal: Researcher) -> QueryStatus:
    """Cancel an asynchronous query. Queued: nothing is spent. Executing: its result is discarded, and its
    charge, once recorded, stays spent (the query may have run)."""
    if _own_job(enclave, query_id, principal.name) is None:
        raise ApiError(404, "not_found", "No asynchronous query with that id.")
    with enclave.audit.transaction() as tx:
        cancelled = jobs_store.cancel(tx, query_id, principal.name)
    if cancelled is None:
        raise ApiError(409, "conflict", "Only a queued or executing query can be cancelled.")
    return _status(enclave, cancelled)


@router.get("/budget", operation_id="researcher-get-budget", response_model=list[BudgetOut])
def get_budget(enclave: EnclaveDep, principal: Researcher) -> list[BudgetOut]:
    out = []
    with enclave.audit.transaction() as tx:
        for grant in grants_of(tx, principal.name):
            left = remaining(tx, principal.name, grant.dataset)
            out.append(BudgetOut(dataset=grant.dataset, purpose=grant.purpose, starts=grant.starts,
                                 expires=grant.expires, adhoc=grant.adhoc, active=grant.refusal(today()) is None,
                                 epsilon_cap=grant.epsilon_cap, delta_cap=grant.delta_cap,
                                 epsilon_remaining=left.epsilon if left else 0.0,
                                 delta_remaining=left.delta if left else 0.0))
    return out
