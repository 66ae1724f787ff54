"""Researcher routes: datasets and rules (public metadata), check, query, their own queries, budget."""

from __future__ import annotations

from fastapi import APIRouter

from enclave.api.answers import answered
from enclave.api.deps import EnclaveDep, Researcher
from enclave.api.errors import ApiError, refused
from enclave.api.schemas import (
    BudgetOut,
    CheckOut,
    DatasetDetail,
    DatasetSummary,
    PlanOut,
    QueryIn,
    QuerySummary,
    RulesOut,
    TableOut,
)
from enclave.budget.ledger import grants_of, remaining, today
from enclave.catalog.manifest import Manifest
from enclave.disclosure import replay
from enclave.disclosure.plan import PlanError
from enclave.disclosure.release import Release
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
        plan = enclave.plan(body.dataset, prepared.rewritten, body.epsilon)
    except PlanError as error:  # the code and status the query route gives for the same cause
        raise refused(QueryError(error.code, error.message)) from None
    query = prepared.rewritten.checked
    return out.model_copy(update={"canonical_sql": query.canonical_sql, "rules_sha256": query.rules_sha256,
                                  "plan": PlanOut.model_validate(plan_summary(plan, prepared.cost))})


@router.post("/queries", operation_id="researcher-submit-query", response_model=Release,
             responses={400: {"description": "Refused"}})
async def submit_query(body: QueryIn, enclave: EnclaveDep, principal: Researcher) -> Release:
    """Run a query through the whole pipeline and return its protected release (or why it was refused),
    at the deadline its worst case set before it ran."""
    _manifest(enclave, body.dataset)
    try:
        return await answered(lambda: enclave.query(principal.name, body.dataset, body.sql, body.epsilon,
                                                    hold=False))
    except QueryError as error:
        raise refused(error) from None


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


@router.get("/queries/{query_id}", operation_id="researcher-get-query", response_model=Release)
def get_query(query_id: str, enclave: EnclaveDep, principal: Researcher) -> Release:
    """A released answer; another researcher's query id is answered as not found."""
    with enclave.audit.transaction() as tx:
        rows = replay.of_researcher(tx, principal.name)
    for found, status, payload in rows:
        if found == query_id and status == "released" and payload:
            return Release.model_validate_json(payload)
    raise ApiError(404, "not_found", "No released query with that id.")


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
