"""What every page shares: its templates, who is signed in, the role a page needs, CSRF, and errors.

Pages are server-rendered (Jinja2, autoescaped) and call the same route functions the JSON API does, so a
page enforces exactly the API's role and object checks and shows nothing the API would not. Every page
answers with a strict Content-Security-Policy (no inline script, nothing from another origin), is never
cached, and cannot be framed. A form carries its session's CSRF token; a post without it is refused.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from enclave.access.keys import ROLES, Principal, Role, principal_of_key
from enclave.web.sessions import COOKIE, Session, Sessions

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
# the first path segment of every page (everything else is the JSON API, health or docs)
PAGE_SEGMENTS = frozenset({"", "signin", "signout", "static", *ROLES})
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
HOMES: dict[str, str] = {role: f"/{role}" for role in ROLES}


def is_page(path: str) -> bool:
    return path.split("/", 2)[1] in PAGE_SEGMENTS if path.startswith("/") else False


@dataclass(frozen=True)
class Viewer:
    """The signed-in principal of a page and its session (whose CSRF token every form carries)."""

    principal: Principal
    session: Session

    @property
    def homes(self) -> list[tuple[str, str]]:
        return [(role, HOMES[role]) for role in ROLES if self.principal.has(role)]


class PageError(Exception):
    """A page that cannot be shown: answered as an HTML page with this status, in words, leaking nothing."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class SignInFirst(Exception):
    """No live session: the page answers with a redirect to the sign-in page, coming back afterwards."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def sessions(request: Request) -> Sessions:
    return request.app.state.sessions


def viewer_of(request: Request) -> Viewer | None:
    """The signed-in viewer of this request, or None (no cookie, an expired session, a revoked key)."""
    session_id = request.cookies.get(COOKIE)
    session = sessions(request).find(session_id) if session_id else None
    if session is None:
        return None
    principal = principal_of_key(request.app.state.enclave.audit, session.key_id)
    return Viewer(principal, session) if principal is not None else None


def page_for(role: Role) -> Callable[[Request], Coroutine[Any, Any, Viewer]]:
    """The dependency of a page for `role`: the signed-in viewer, who must hold that role."""

    async def dependency(request: Request) -> Viewer:
        viewer = viewer_of(request)
        if viewer is None:
            raise SignInFirst(request.url.path)
        if not viewer.principal.has(role):
            raise PageError(403, "Not for your role", f"This page is for the {role} role, which your key "
                            "does not hold.")
        return viewer

    return dependency


def form_for(role: Role) -> Callable[..., Coroutine[Any, Any, Viewer]]:
    """The dependency of a form post for `role`: the viewer, whose session's CSRF token the form carries."""
    page = page_for(role)

    async def dependency(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> Viewer:
        viewer = await page(request)
        if not hmac.compare_digest(csrf.encode(), viewer.session.csrf.encode()):
            raise PageError(403, "Form refused", "This form was not sent from this site's page, or the page "
                            "is older than your session. Go back, reload the page and send it again.")
        return viewer

    return dependency


ResearcherPage = Annotated[Viewer, Depends(page_for("researcher"))]
ReviewerPage = Annotated[Viewer, Depends(page_for("reviewer"))]
StewardPage = Annotated[Viewer, Depends(page_for("steward"))]
AuditorPage = Annotated[Viewer, Depends(page_for("auditor"))]
ResearcherForm = Annotated[Viewer, Depends(form_for("researcher"))]
ReviewerForm = Annotated[Viewer, Depends(form_for("reviewer"))]
StewardForm = Annotated[Viewer, Depends(form_for("steward"))]
AuditorForm = Annotated[Viewer, Depends(form_for("auditor"))]


def render(request: Request, template: str, viewer: Viewer | None = None, status: int = 200,
           **context: Any) -> HTMLResponse:
    """A page from `template`, with the viewer (for the navigation and the forms' CSRF token)."""
    response = TEMPLATES.TemplateResponse(request, template, {"viewer": viewer, **context}, status_code=status)
    response.headers.update(HEADERS)
    return response


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", viewer_of(request) if status != 401 else None, status,
                  title=title, message=message)


def to_sign_in(path: str) -> Response:
    response = RedirectResponse(f"/?next={quote(path)}", status_code=303)
    response.headers.update(HEADERS)
    return response
