"""The web pages: a face for each role (researcher, reviewer, steward, auditor), served by the API's app.

`install(app)` adds the sign-in, the role pages and their static files; enclave.web.pages says what every
page shares (sessions, roles, CSRF, headers, errors).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from enclave.pipeline import Enclave
from enclave.web import auditor, researcher, reviewer, signin, steward
from enclave.web.pages import PageError, SignInFirst, error_page, render, to_sign_in
from enclave.web.sessions import Sessions, SessionsUnavailable


def install(app: FastAPI, enclave: Enclave) -> None:
    settings = enclave.settings
    app.state.sessions = Sessions(settings.session_idle_minutes * 60, settings.session_hours * 3600,
                                  settings.redis_url, enclave.namespace)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for router in (signin.router, researcher.router, reviewer.router, steward.router, auditor.router):
        app.include_router(router)

    @app.exception_handler(PageError)
    async def _refused(request: Request, error: PageError) -> Response:
        return error_page(request, error.status, error.title, error.message)

    @app.exception_handler(SignInFirst)
    async def _sign_in(request: Request, error: SignInFirst) -> Response:
        return to_sign_in(error.path)

    @app.exception_handler(SessionsUnavailable)
    async def _unavailable(request: Request, error: SessionsUnavailable) -> Response:
        return render(request, "error.html", None, 503, title="Sign-in unavailable",
                      message="Sessions cannot be checked for a moment. Please try again shortly.")
