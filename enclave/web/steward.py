"""The steward's pages: principals and their keys, grants, deliveries and data versions, the data-quality
report, consent changes.

Each page calls the JSON API's route functions with the viewer's principal (enclave.api.routes.steward and
.onboarding), so it shows exactly what `GET /v1/principals`, `/v1/grants`, `/v1/datasets/{d}/deliveries`,
`/consents/history` and `/quality` answer, and every change goes through the same route as the API's.
A new key is shown once, in the answer to the post that issued it: never stored in the session, never in
a URL, never logged; the form carries how many keys the principal had, so a resent post issues nothing.
No page shows an identifier: the quality report's borderline pairs (names, dates of birth, local IDs) are
counted here and given to stewards only by `GET /v1/datasets/{d}/quality`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from enclave.access.keys import ROLES
from enclave.api.errors import ApiError
from enclave.api.routes import onboarding, steward
from enclave.api.schemas import GrantIn, KeyIn, PrincipalIn, ReasonIn
from enclave.pipeline import Enclave
from enclave.web.pages import HEADERS, TEMPLATES, StewardForm, StewardPage, Viewer, render

router = APIRouter(prefix="/steward", include_in_schema=False)

# what a post that redirects says on the page it lands on, chosen by code (never text from the URL)
DONE = {
    "principal": "The principal was created, or given the roles.",
    "revoked-key": "The key was revoked: it no longer signs anyone in or opens the API.",
    "granted": "The grant was recorded; it takes effect at once.",
    "revoked-grant": "The grant was revoked; it takes effect at the next query.",
}


def utc(moment: object) -> str:
    """An ISO 8601 time of the log as `YYYY-MM-DD HH:MM:SS UTC` (empty for none)."""
    text = str(moment or "")
    return f"{text[:10]} {text[11:19]} UTC" if len(text) >= 19 else text


TEMPLATES.env.filters["utc"] = utc


Done = Annotated[str | None, Query(max_length=20)]  # a code of DONE


def _enclave(request: Request) -> Enclave:
    return request.app.state.enclave


def _done(done: str | None) -> str | None:
    return DONE.get(done or "")


def _problem(error: ValidationError) -> str:
    """A form's invalid fields in words (pydantic's messages, which never repeat the value sent)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5])


def _back(path: str, done: str) -> Response:
    response = RedirectResponse(f"{path}?done={done}", status_code=303)
    response.headers.update(HEADERS)
    return response


def _onboarded(enclave: Enclave) -> list[str]:
    return [name for name, manifest in enclave.manifests.items() if manifest.intake is not None]


@router.get("")
def home(request: Request, viewer: StewardPage) -> HTMLResponse:
    enclave = _enclave(request)
    principals = steward.list_principals(enclave, viewer.principal)
    grants = steward.list_grants(enclave, viewer.principal)
    datasets = [onboarding.list_deliveries(name, enclave, viewer.principal, limit=1) for name in _onboarded(enclave)]
    return render(request, "steward/home.html", viewer, principals=principals, grants=grants, datasets=datasets,
                  active_keys=sum(not k.revoked for p in principals for k in p.keys))


# -- principals and keys ---------------------------------------------------------------------------------


def _principals(request: Request, viewer: Viewer, status: int = 200, **context: Any) -> HTMLResponse:
    found = steward.list_principals(_enclave(request), viewer.principal)
    return render(request, "steward/principals.html", viewer, status, principals=found, roles=ROLES, **context)


@router.get("/principals")
def principals(request: Request, viewer: StewardPage, done: Done = None) -> HTMLResponse:
    return _principals(request, viewer, notice=_done(done))


@router.post("/principals")
def create_principal(request: Request, viewer: StewardForm, name: Annotated[str, Form(max_length=200)] = "",
                     roles: Annotated[list[str] | None, Form()] = None) -> Response:
    try:
        body = PrincipalIn(name=name.strip(), roles=roles or [])  # type: ignore[arg-type]
    except ValidationError as error:
        return _principals(request, viewer, 422, problem=f"The principal was not created: {_problem(error)}")
    steward.create_principal(body, _enclave(request), viewer.principal)
    return _back("/steward/principals", "principal")


@router.post("/principals/{name}/keys")
def issue_key(request: Request, name: str, viewer: StewardForm,
              seen: Annotated[int, Form(ge=0, le=10**6)] = 0) -> Response:
    """Issue a key and show it in this answer only. `seen` is how many keys the page showed the principal
    holding: if it holds more now, this post was sent before (a reload), and nothing is issued again."""
    enclave = _enclave(request)
    held = next((p for p in steward.list_principals(enclave, viewer.principal) if p.name == name), None)
    if held is None:
        return _principals(request, viewer, 404, problem="No principal of that name.")
    if len(held.keys) != seen:
        return _principals(request, viewer, 409, problem=f"A key was already issued to {name} from this form (it "
                           "was sent again, perhaps by a reload). That key is not shown again; issue another if "
                           "it was not copied, and revoke the one you cannot use.")
    issued = steward.create_key(KeyIn(principal=name), enclave, viewer.principal)
    return _principals(request, viewer, 201, issued=issued)


@router.post("/keys/{key_id}/revoke")
def revoke_key(request: Request, key_id: str, viewer: StewardForm) -> Response:
    try:
        steward.delete_key(key_id, _enclave(request), viewer.principal)
    except ApiError as error:
        return _principals(request, viewer, error.status, problem=error.message)
    return _back("/steward/principals", "revoked-key")


# -- grants ----------------------------------------------------------------------------------------------


def _grants(request: Request, viewer: Viewer, status: int = 200, **context: Any) -> HTMLResponse:
    enclave = _enclave(request)
    researchers = [p.name for p in steward.list_principals(enclave, viewer.principal) if "researcher" in p.roles]
    return render(request, "steward/grants.html", viewer, status, grants=steward.list_grants(enclave, viewer.principal),
                  researchers=researchers, datasets=sorted(enclave.manifests), **context)


def _changed_grants(request: Request, viewer: Viewer, change: Callable[[], None], what: str, done: str) -> Response:
    """Make a change through the API's route; back to the grants page, or the page again with the refusal."""
    try:
        change()
    except ValidationError as error:
        return _grants(request, viewer, 422, problem=f"The grant was not {what}: {_problem(error)}")
    except ApiError as error:
        return _grants(request, viewer, error.status, problem=f"The grant was not {what}: {error.message}")
    return _back("/steward/grants", done)


@router.get("/grants")
def grants(request: Request, viewer: StewardPage, done: Done = None) -> HTMLResponse:
    return _grants(request, viewer, notice=_done(done))


@router.post("/grants")
def create_grant(request: Request, viewer: StewardForm, researcher: Annotated[str, Form(max_length=200)] = "",
                 dataset: Annotated[str, Form(max_length=200)] = "", purpose: Annotated[str, Form(max_length=400)] = "",
                 starts: Annotated[str, Form(max_length=20)] = "", expires: Annotated[str, Form(max_length=20)] = "",
                 epsilon_cap: Annotated[str, Form(max_length=40)] = "",
                 delta_cap: Annotated[str, Form(max_length=40)] = "",
                 templates_only: Annotated[str, Form(max_length=10)] = "") -> Response:
    def change() -> None:
        body = GrantIn.model_validate({
            "researcher": researcher, "dataset": dataset, "purpose": purpose.strip(), "starts": starts or None,
            "expires": expires or None, "epsilon_cap": epsilon_cap, "delta_cap": delta_cap or "0",
            "adhoc": not templates_only})
        steward.create_grant(body, _enclave(request), viewer.principal)

    return _changed_grants(request, viewer, change, "created", "granted")


@router.post("/grants/revoke")
def revoke_grant(request: Request, viewer: StewardForm, grant: Annotated[str, Form(max_length=300)] = "",
                 reason: Annotated[str, Form(max_length=600)] = "") -> Response:
    """`grant` is `researcher|dataset` as the page's choice of grants gives it."""
    researcher, _, dataset = grant.rpartition("|")

    def change() -> None:
        steward.delete_grant(researcher, dataset, ReasonIn(reason=reason.strip()), _enclave(request), viewer.principal)

    return _changed_grants(request, viewer, change, "revoked", "revoked-grant")


# -- datasets built from deliveries ------------------------------------------------------------------------


@router.get("/datasets/{dataset}")
def dataset(request: Request, dataset: str, viewer: StewardPage) -> HTMLResponse:
    """A dataset's data versions, the deliveries that made them, and its consent changes."""
    enclave = _enclave(request)
    deliveries = onboarding.list_deliveries(dataset, enclave, viewer.principal, limit=100)
    consents = onboarding.consent_history(dataset, enclave, viewer.principal, limit=100)
    return render(request, "steward/dataset.html", viewer, found=deliveries, consents=consents)


@router.get("/datasets/{dataset}/quality")
def quality(request: Request, dataset: str, viewer: StewardPage) -> HTMLResponse:
    """The linkage and data-quality report's figures; its borderline pairs as a count only."""
    found = onboarding.quality(dataset, _enclave(request), viewer.principal)
    pairs = found.pop("borderline_pairs", [])
    return render(request, "steward/quality.html", viewer, report=found, borderline=len(pairs))
