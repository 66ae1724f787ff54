"""Template routes: propose (researcher or steward), review (reviewer), read, and run (researcher)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from enclave.access.keys import Principal
from enclave.api.answers import answered
from enclave.api.deps import EnclaveDep, Researcher, Reviewer, current_principal
from enclave.api.errors import ApiError, refused
from enclave.api.schemas import ReasonIn
from enclave.disclosure.release import Release
from enclave.pipeline import QueryError, UnknownDataset
from enclave.templates import workflow
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


for _action in ("approve", "reject", "revoke"):
    router.add_api_route(f"/{{template_id}}/{_action}", _review(_action), methods=["POST"],  # type: ignore[arg-type]
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
