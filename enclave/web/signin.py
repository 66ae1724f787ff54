"""Sign-in with an API key into a server-side session, and sign-out.

The sign-in form is guarded by a double-submit token (a SameSite=Strict cookie and a hidden field that must
match), so another site cannot sign a visitor in under its own key. Each sign-in opens a new session id;
attempts are rate-limited per client address like the API's keys.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from enclave.access.keys import authenticate
from enclave.web.pages import HEADERS, HOMES, PageError, render, sessions, viewer_of
from enclave.web.sessions import COOKIE

router = APIRouter(include_in_schema=False)
SIGNIN_COOKIE = "enclave_signin"


def _secure(request: Request) -> bool:
    """Secure cookies when served over TLS (uvicorn reads X-Forwarded-Proto from a trusted proxy)."""
    return request.url.scheme == "https"


def _local(path: str | None) -> str | None:
    """A path on this site to come back to after sign-in; anything else (another host) is dropped."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return None


def _form(request: Request, status: int = 200, problem: str | None = None, next_path: str | None = None) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "signin.html", None, status, token=token, problem=problem, next_path=next_path)
    response.set_cookie(SIGNIN_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request),
                        path="/signin", max_age=3600)
    return response


@router.get("/")
def home(request: Request, next_path: Annotated[str | None, Query(alias="next", max_length=500)] = None) -> Response:
    """The sign-in page, or the signed-in viewer's first role's home."""
    viewer = viewer_of(request)
    if viewer is None:
        return _form(request, next_path=_local(next_path))
    response = RedirectResponse(_local(next_path) or viewer.homes[0][1], status_code=303)
    response.headers.update(HEADERS)
    return response


@router.post("/signin")
def sign_in(request: Request, key: Annotated[str, Form(max_length=200)] = "",
            token: Annotated[str, Form(max_length=100)] = "",
            sent_next: Annotated[str | None, Form(alias="next", max_length=500)] = None) -> Response:
    next_path = _local(sent_next)
    sent = request.cookies.get(SIGNIN_COOKIE, "")
    if not token or not hmac.compare_digest(token.encode(), sent.encode()):
        return _form(request, 403, "The sign-in form had expired. Please enter your key again.", next_path)
    address = request.client.host if request.client else "unknown"
    if not request.app.state.limiter.allow(f"signin:{address}"):
        return _form(request, 429, "Too many sign-in attempts; wait a minute and try again.", next_path)
    enclave = request.app.state.enclave
    principal = authenticate(enclave.audit, enclave.settings.pepper, key.strip())
    if principal is None:
        return _form(request, 401, "That key is unknown or has been revoked.", next_path)
    session_id, _ = sessions(request).open(principal.key_id, principal.name)
    home_path = next(path for role, path in HOMES.items() if principal.has(role))  # type: ignore[arg-type]
    response = RedirectResponse(next_path or home_path, status_code=303)
    response.headers.update(HEADERS)
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict", secure=_secure(request), path="/",
                        max_age=sessions(request).max_seconds)
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout")
def sign_out(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """End the session (its CSRF token guards this form too, so another site cannot sign anyone out)."""
    viewer = viewer_of(request)
    if viewer is not None:
        if not hmac.compare_digest(csrf.encode(), viewer.session.csrf.encode()):
            raise PageError(403, "Form refused", "This sign-out was not sent from this site's page.")
        sessions(request).close(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/", status_code=303)
    response.headers.update(HEADERS)
    response.delete_cookie(COOKIE, path="/")
    return response
