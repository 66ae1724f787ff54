"""Template routes: propose (researcher or steward), review (reviewer), read, and run (researcher)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from enclave.access.keys import Principal
from enclave.api.answers import answered
from enclave.api.deps import EnclaveDep, Researcher, Reviewer, current_principal
from enclave.api.errors import ApiError, refused
from enclave.api.schemas import QuantityOut, ReasonIn
from enclave.budget.ledger import EPSILON_UNIT
from enclave.check.violations import Violation
from enclave.disclosure.release import Release
from enclave.pipeline import Enclave, QueryError, UnknownDataset
from enclave.templates import review, workflow
from enclave.templates.model import TemplateSpec, Value

router = APIRouter(prefix="/v1/templates", tags=["templates"])
TemplateId = Annotated[int, Path(ge=1, le=2**62)]


class TemplateOut(BaseModel):
    id: int
    status: Literal["proposed", "approved", "rejected", "revoked"]
    proposer: str
    approvals: list[str]
    spec: TemplateSpec


class RunIn(BaseModel):
    parameters: dict[str, Value] = Field(default_factory=dict)


class TemplateEvent(BaseModel):
    """The latest audit record of a template: its proposal, an approval or its decision."""

    seq: int
    event: str
    actor: str
    time: str
    reasons: list[str]


class TemplateListed(TemplateOut):
    last_event: TemplateEvent | None


class SlotOut(BaseModel):
    name: str
    line: int
    col: int
    text: str


class DecisionOut(BaseModel):
    subject: str
    decision: str
    rule: str


class WarningOut(BaseModel):
    code: Literal["epsilon_above_default", "total_above_grant_cap", "narrow_filter", "noisy_group_selection"]
    message: str


class TemplateReview(TemplateListed):
    """What a reviewer decides on (enclave.templates.review): the check, each decision's rule, the SQL that
    will execute (its keyed salt hidden), what it touches, its cost, and where a setting weakens protection."""

    accepted: bool
    slots: list[SlotOut]
    violations: list[Violation]
    decisions: list[DecisionOut]
    rewritten_sql: str | None
    tables: dict[str, list[str]]
    epsilon_per_run: float
    delta_per_run: float | None
    run_limit: int
    epsilon_total: float
    worst_case_rows: int | None
    deadline_seconds: float | None
    quantities: list[QuantityOut]
    warnings: list[WarningOut]


def _out(template: workflow.Template) -> TemplateOut:
    return TemplateOut(id=template.id, status=template.status, proposer=template.proposer,
                       approvals=list(template.approvals), spec=template.spec)


def _visible(template: workflow.Template, principal: Principal) -> bool:
    """Researchers see approved templates and their own proposals; other roles see all."""
    return bool(principal.roles - {"researcher"}) or template.status == "approved" or (
        template.proposer == principal.name)


Proposer = Annotated[Principal, Depends(current_principal)]


@router.post("", operation_id="templates-propose", response_model=TemplateOut, status_code=201)
def propose(body: TemplateSpec, enclave: EnclaveDep, principal: Proposer) -> TemplateOut:
    """Propose a template (researchers and stewards); it is checked now, and runs once approved."""
    if not principal.roles & {"researcher", "steward"}:
        raise ApiError(403, "forbidden", "Proposing a template needs the researcher or steward role.")
    try:
        return _out(workflow.propose(enclave, principal.name, body))
    except UnknownDataset:
        raise ApiError(404, "not_found", f"No dataset named {body.dataset!r}.") from None
    except QueryError as error:
        raise refused(error) from None


@router.get("", operation_id="templates-list", response_model=list[TemplateOut])
def list_templates(enclave: EnclaveDep, principal: Annotated[Principal, Depends(current_principal)]
                   ) -> list[TemplateOut]:
    with enclave.audit.transaction() as tx:
        return [_out(t) for t in workflow.listing(tx) if _visible(t, principal)]


def _last_events(enclave: Enclave, template_id: int | None = None) -> dict[int, TemplateEvent]:
    """Each template's latest audit record (the one its `seq` names), or one template's, in one statement."""
    sql = "SELECT t.id, e.record FROM templates t JOIN events e ON e.seq = t.seq"
    with enclave.audit.reading() as connection:
        rows = connection.execute(sql + " WHERE t.id = ?", (template_id,)).fetchall() if template_id is not None \
            else connection.execute(sql).fetchall()
    out = {}
    for found, text in rows:
        record = json.loads(text)
        out[found] = TemplateEvent(seq=record["seq"], event=record["event"], actor=record["actor"],
                                   time=record["time"], reasons=record["reasons"])
    return out


@router.get("/reviews", operation_id="templates-list-reviews", response_model=list[TemplateListed])
def list_reviews(enclave: EnclaveDep, principal: Reviewer) -> list[TemplateListed]:
    """Every template with its latest audit record (reviewers): the queue and the decided ones."""
    with enclave.audit.transaction() as tx:
        templates = workflow.listing(tx)
    events = _last_events(enclave)
    return [TemplateListed(**_out(t).model_dump(), last_event=events.get(t.id)) for t in templates]


@router.get("/{template_id}/review", operation_id="templates-get-review", response_model=TemplateReview)
def get_review(template_id: TemplateId, enclave: EnclaveDep, principal: Reviewer) -> TemplateReview:
    """A template's review report (reviewers), checked now against the current rules and data version."""
    with enclave.audit.transaction() as tx:
        template = workflow.find(tx.connection, template_id)
        cap = tx.connection.execute("SELECT max(epsilon_cap) FROM grants WHERE dataset = ? AND revoked = 0",
                                    (template.spec.dataset if template else "",)).fetchone()[0]
    if template is None:
        raise ApiError(404, "not_found", "No such template.")
    spec = template.spec
    built = review.report(enclave, spec, cap / EPSILON_UNIT if cap is not None else None)
    plan = built.plan
    quantities = [QuantityOut(column=q.column, mechanism=q.mechanism, sensitivity=q.sensitivity, scale=q.scale,
                              epsilon=q.epsilon, weight=q.weight, accuracy=q.accuracy)
                  for q in (plan.quantities if plan else ())]
    return TemplateReview(
        **_out(template).model_dump(), last_event=_last_events(enclave, template.id).get(template.id),
        accepted=built.accepted, slots=[SlotOut(**vars(s)) for s in built.slots], violations=built.violations,
        decisions=[DecisionOut(**vars(d)) for d in built.decisions], rewritten_sql=built.rewritten_sql,
        tables=built.tables, epsilon_per_run=spec.epsilon, delta_per_run=plan.delta if plan else None,
        run_limit=spec.run_limit, epsilon_total=spec.epsilon * spec.run_limit, worst_case_rows=built.worst_case_rows,
        deadline_seconds=built.deadline_seconds, quantities=quantities,
        warnings=[WarningOut(code=w.code, message=w.message) for w in built.warnings])  # type: ignore[arg-type]


@router.get("/{template_id}", operation_id="templates-get", response_model=TemplateOut)
def get_template(template_id: TemplateId, enclave: EnclaveDep,
                 principal: Annotated[Principal, Depends(current_principal)]) -> TemplateOut:
    with enclave.audit.transaction() as tx:
        template = workflow.find(tx.connection, template_id)
    if template is None or not _visible(template, principal):
        raise ApiError(404, "not_found", "No such template.")
    return _out(template)


def _review(action: Literal["approve", "reject", "revoke"]) -> Callable[..., TemplateOut]:
    def handler(template_id: TemplateId, body: ReasonIn, enclave: EnclaveDep, principal: Reviewer) -> TemplateOut:
        try:
            return _out(workflow.review(enclave, principal.name, template_id, action, body.reason))
        except QueryError as error:
            raise refused(error) from None

    return handler


# the review routes' functions by action (the reviewer's pages call them too)
REVIEWS = {action: _review(action) for action in ("approve", "reject", "revoke")}
for _action, _handler in REVIEWS.items():
    router.add_api_route(f"/{{template_id}}/{_action}", _handler, methods=["POST"],  # type: ignore[arg-type]
                         operation_id=f"templates-{_action}", response_model=TemplateOut,
                         summary=f"{_action.capitalize()} a template (reviewer), with a reason")


@router.post("/{template_id}/runs", operation_id="templates-run", response_model=Release)
async def run_template(template_id: TemplateId, body: RunIn, enclave: EnclaveDep, principal: Researcher) -> Release:
    """Run an approved template with parameters: the same pipeline as any query, at its per-run ε, answered
    at its deadline."""
    try:
        return await answered(lambda: workflow.run(enclave, principal.name, template_id, body.parameters,
                                                   hold=False))
    except QueryError as error:
        raise refused(error) from None
