"""The reviewer's pages: the queue of proposed templates, a template's review report, and the decisions.

The pages call the JSON API's route functions (enclave.api.routes.templates) with the viewer's principal.
A decision needs a reason, recorded in the audit log with it: an empty one is refused before anything is
recorded, with the message below.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from enclave.api.deps import EnclaveDep
from enclave.api.errors import ApiError
from enclave.api.routes import templates as api
from enclave.api.schemas import ReasonIn
from enclave.pipeline import Enclave
from enclave.web.display import Mark, marked_lines
from enclave.web.pages import HEADERS, ReviewerForm, ReviewerPage, Viewer, render

router = APIRouter(prefix="/reviewer", include_in_schema=False)
Action = Literal["approve", "reject", "revoke"]
DONE = {"approve": "Approved: your decision and its reason are recorded in the audit log.",
        "reject": "Rejected: your decision and its reason are recorded in the audit log.",
        "revoke": "Revoked: the template can no longer run; your reason is recorded in the audit log."}
NO_REASON = "Give a reason for your decision (at least 3 characters): it is recorded in the audit log with it."


def age(time: str, now: datetime | None = None) -> str:
    """How long ago an audit record's time was, in words ("4 min", "2 h", "3 days")."""
    try:
        then = datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError:
        return "unknown"
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("days", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@router.get("")
def home(request: Request, viewer: ReviewerPage, enclave: EnclaveDep) -> HTMLResponse:
    listed = api.list_reviews(enclave, viewer.principal)
    ages = {t.id: age(t.last_event.time) if t.last_event else "unknown" for t in listed}
    return render(request, "reviewer/home.html", viewer, queue=[t for t in listed if t.status == "proposed"],
                  decided=[t for t in listed if t.status != "proposed"], ages=ages)


def _page(request: Request, viewer: Viewer, enclave: Enclave, template_id: int, status: int = 200,
          notice: str | None = None, problem: str | None = None, failed: str | None = None,
          reason: str = "") -> HTMLResponse:
    report = api.get_review(template_id, enclave, viewer.principal)
    slots = [Mark(s.line, s.col, len(s.text), f"parameter {s.name}") for s in report.slots]
    return render(request, "reviewer/template.html", viewer, status, report=report,
                  lines=marked_lines(report.spec.sql, slots), notice=notice, problem=problem, failed=failed,
                  reason=reason)


@router.get("/templates/{template_id}")
def template(request: Request, template_id: api.TemplateId, viewer: ReviewerPage, enclave: EnclaveDep,
             done: Annotated[Action | None, Query()] = None) -> HTMLResponse:
    return _page(request, viewer, enclave, template_id, notice=DONE[done] if done else None)


@router.post("/templates/{template_id}/{action}")
async def decide(request: Request, template_id: api.TemplateId, action: Action, viewer: ReviewerForm,
                 enclave: EnclaveDep, reason: Annotated[str, Form(max_length=500)] = "") -> Response:
    """Approve, reject or revoke with a reason; on success, back to the template's page with a notice."""
    try:
        body = ReasonIn(reason=reason.strip())
    except ValidationError:
        return await run_in_threadpool(_page, request, viewer, enclave, template_id, 422, problem=NO_REASON,
                                       failed=action, reason=reason)
    try:
        await run_in_threadpool(api.REVIEWS[action], template_id, body, enclave, viewer.principal)
    except ApiError as error:
        if error.status == 404:
            raise
        return await run_in_threadpool(_page, request, viewer, enclave, template_id, error.status,
                                       problem=error.message, failed=action, reason=reason)
    response = RedirectResponse(f"/reviewer/templates/{template_id}?done={action}", status_code=303)
    response.headers.update(HEADERS)
    return response
