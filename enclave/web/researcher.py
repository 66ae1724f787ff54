"""The researcher's pages: datasets, the SQL editor (check and run), releases, history and templates.

Every page calls the JSON API's own route functions (enclave.api.routes.researcher and .templates) with the
viewer's principal, so it enforces the same checks and shows only what the API would.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from enclave.api.deps import EnclaveDep, JobsDep
from enclave.api.errors import ApiError
from enclave.api.routes import researcher as api
from enclave.api.routes import templates as templates_api
from enclave.api.schemas import BudgetOut, CheckOut, DatasetSummary, QueryIn, QueryStatus
from enclave.check.violations import Violation
from enclave.disclosure.release import Release
from enclave.pipeline import Enclave
from enclave.templates.model import Parameter, Value
from enclave.web.display import Mark, charts, marked_lines
from enclave.web.pages import ResearcherForm, ResearcherPage, Viewer, render

router = APIRouter(prefix="/researcher", include_in_schema=False)
EXAMPLE = "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent\nFROM enrollments\nGROUP BY school"


def _granted(enclave: Enclave, viewer: Viewer) -> tuple[list[DatasetSummary], list[BudgetOut]]:
    """The datasets the viewer holds a grant on (their public metadata), and the grants' budgets."""
    budgets = api.get_budget(enclave, viewer.principal)
    names = {b.dataset for b in budgets}
    return [d for d in api.list_datasets(enclave, viewer.principal) if d.name in names], budgets


@router.get("")
def home(request: Request, viewer: ResearcherPage, enclave: EnclaveDep) -> HTMLResponse:
    datasets, budgets = _granted(enclave, viewer)
    return render(request, "researcher/home.html", viewer, datasets=datasets, budgets=budgets)


@router.get("/datasets/{name}")
def dataset(request: Request, name: str, viewer: ResearcherPage, enclave: EnclaveDep) -> HTMLResponse:
    detail = api.get_dataset(name, enclave, viewer.principal)
    return render(request, "researcher/dataset.html", viewer, dataset=detail)


def _marks(violations: list[Violation]) -> list[Mark]:
    return [Mark(v.line, v.col, len((v.highlight.splitlines() or [""])[0]), v.code)
            for v in violations if v.line and v.col]


def _editor(request: Request, viewer: Viewer, enclave: Enclave, status: int = 200, *, sql: str = EXAMPLE,
            dataset: str = "demo", epsilon: str = "", check: CheckOut | None = None, problem: str | None = None,
            violations: list[Violation] | None = None) -> HTMLResponse:
    datasets, _ = _granted(enclave, viewer)
    shown = violations if violations is not None else (check.violations if check else [])
    return render(request, "researcher/query.html", viewer, status, datasets=datasets, sql=sql, dataset=dataset,
                  epsilon=epsilon, check=check, problem=problem, violations=shown,
                  lines=marked_lines(sql, _marks(shown)) if shown else None, privacy=enclave.rules.privacy)


@router.get("/query")
def editor(request: Request, viewer: ResearcherPage, enclave: EnclaveDep) -> HTMLResponse:
    return _editor(request, viewer, enclave)


def _invalid(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "the form"
    return f"Check the field {field}: {first.get('msg', 'invalid')}."


@router.post("/query")
async def check_or_run(request: Request, viewer: ResearcherForm, enclave: EnclaveDep, jobs: JobsDep,
                       sql: Annotated[str, Form(max_length=20_000)] = "",
                       dataset: Annotated[str, Form(max_length=64)] = "",
                       epsilon: Annotated[str, Form(max_length=40)] = "",
                       action: Annotated[str, Form(max_length=10)] = "check") -> Response:
    """Check (free) or run (spends) the query of the editor; the editor keeps the SQL as typed."""
    kept = {"sql": sql, "dataset": dataset, "epsilon": epsilon}
    try:
        body = QueryIn(dataset=dataset, sql=sql, epsilon=float(epsilon) if epsilon.strip() else None, mode="auto")
    except ValueError as error:  # a ValidationError too
        message = _invalid(error) if isinstance(error, ValidationError) else "ε must be a number, such as 0.5."
        return await run_in_threadpool(_editor, request, viewer, enclave, 422, problem=message, **kept)
    if action != "run":
        try:
            checked = await run_in_threadpool(api.check_query, body, enclave, viewer.principal)
        except ApiError as error:
            return await run_in_threadpool(_editor, request, viewer, enclave, error.status, problem=error.message,
                                           violations=error.violations, **kept)
        return await run_in_threadpool(_editor, request, viewer, enclave, check=checked, **kept)
    try:
        answer = await api.submit_query(body, enclave, jobs, viewer.principal)
    except ApiError as error:
        return await run_in_threadpool(_editor, request, viewer, enclave, error.status, problem=error.message,
                                       violations=error.violations, **kept)
    if isinstance(answer, Response):  # 202: queued, to follow on its status page
        return _status_page(request, viewer, QueryStatus.model_validate(json.loads(bytes(answer.body))), 202)
    return await run_in_threadpool(_release_page, request, viewer, enclave, answer, "Released.")


def _status_page(request: Request, viewer: Viewer, status: QueryStatus, code: int = 200) -> HTMLResponse:
    """An asynchronous query's state and progress; the page reloads itself until it is released or ends."""
    response = render(request, "researcher/status.html", viewer, code, job=status)
    if status.state in ("queued", "executing", "protecting"):
        response.headers["Refresh"] = f"2; url=/researcher/queries/{status.query_id}"
    return response


def _release_page(request: Request, viewer: Viewer, enclave: Enclave, release: Release,
                  notice: str | None = None) -> HTMLResponse:
    budget = next((b for b in api.get_budget(enclave, viewer.principal) if b.dataset == release.dataset), None)
    return render(request, "researcher/release.html", viewer, release=release, charts=charts(release),
                  budget=budget, notice=notice)


@router.get("/queries")
def history(request: Request, viewer: ResearcherPage, enclave: EnclaveDep) -> HTMLResponse:
    queries = api.list_queries(enclave, viewer.principal)
    return render(request, "researcher/history.html", viewer, queries=queries)


@router.get("/queries/{query_id}")
def past(request: Request, query_id: str, viewer: ResearcherPage, enclave: EnclaveDep) -> HTMLResponse:
    found = api.get_query(query_id, enclave, viewer.principal)
    if isinstance(found, QueryStatus):
        return _status_page(request, viewer, found)
    return _release_page(request, viewer, enclave, found)


def _approved(enclave: Enclave, viewer: Viewer) -> list[templates_api.TemplateOut]:
    return [t for t in templates_api.list_templates(enclave, viewer.principal) if t.status == "approved"]


@router.get("/templates")
def templates(request: Request, viewer: ResearcherPage, enclave: EnclaveDep) -> HTMLResponse:
    return render(request, "researcher/templates.html", viewer, templates=_approved(enclave, viewer))


def _value(parameter: Parameter, sent: str) -> Value:
    """A form field's text as the parameter's type (the route checks it against the declaration)."""
    for choice in parameter.choices or []:
        if str(choice).lower() == sent.lower():
            return choice
    if parameter.type == "boolean":
        return sent == "true"
    if parameter.type == "integer":
        return int(sent)
    if parameter.type == "number":
        return float(sent)
    return sent


@router.post("/templates/{template_id}/run")
async def run(request: Request, template_id: templates_api.TemplateId, viewer: ResearcherForm,
              enclave: EnclaveDep) -> Response:
    """Run an approved template with the values of its form: spends its per-run ε."""
    template = await run_in_threadpool(templates_api.get_template, template_id, enclave, viewer.principal)
    form = await request.form()
    try:
        values = {p.name: _value(p, str(form.get(f"p_{p.name}", ""))[:200]) for p in template.spec.parameters}
        release = await templates_api.run_template(template_id, templates_api.RunIn(parameters=values), enclave,
                                                   viewer.principal)
    except (ValueError, ApiError) as error:
        message = error.message if isinstance(error, ApiError) else "Each parameter needs a value of its type."
        status = error.status if isinstance(error, ApiError) else 422
        return render(request, "researcher/templates.html", viewer, status, templates=_approved(enclave, viewer),
                      problem=message, failed=template_id)
    return await run_in_threadpool(_release_page, request, viewer, enclave, release,
                                   f"Released by the template “{template.spec.title}”.")
