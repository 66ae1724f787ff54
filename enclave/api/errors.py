"""One JSON error envelope for every error the service returns.

    {"ok": false, "error": {"code": ..., "message": ..., "violations": [{code, message, line, col, ...}]}}

Codes are stable and documented (README.md, a test checks it). A failure nobody foresaw becomes a
generic 500 `internal_error`: never a stack trace, an engine message or a path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave.check.violations import Violation
from enclave.intake.delivery import Problem
from enclave.pipeline import QueryError
from enclave.web.pages import error_page, is_page

# code -> meaning, for errors of the HTTP edge itself; README.md documents each.
API_CODES: dict[str, str] = {
    "unauthenticated": "No API key, or one that is unknown, malformed or revoked (401).",
    "forbidden": "The key's principal does not hold the role the route needs (403).",
    "not_found": "No such resource, or one that belongs to someone else (404).",
    "invalid_request": "The request body or parameters do not match the route's schema (422).",
    "request_too_large": "The request body is larger than the service accepts (413).",
    "method_not_allowed": "The route does not take that HTTP method (405).",
    "rate_limited": "Too many requests with this key; try again shortly (429).",
    "delivery_refused": "A delivery was refused; `problems` gives file, row, column and what is wrong (400). "
    "Nothing was loaded.",
    "consent_refused": "Consent statements were refused (a local ID not on the roster, impossible dates); "
    "`problems` says which (400). Nothing was recorded.",
    "conflict": "The request conflicts with the resource's state, e.g. a decided template (409).",
    "async_unavailable": "Asynchronous mode was asked for, but this enclave has no query queue "
    "(ENCLAVE_REDIS_URL is not set); send the query in sync mode (409).",
    "async_not_allocated": "Asynchronous mode was asked for a query with weights or accuracy targets, which only "
    "sync mode runs (a queued job keeps its SQL and ε only); send it in sync mode (409).",
    "internal_error": "An unexpected failure; nothing was released and no detail is given (500).",
}

# errors of routes that answer text (JSONL, PEM, HTML) are JSON envelopes all the same: declared as such
_ENVELOPE = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
TEXT_ROUTE_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"description": "Error", "content": _ENVELOPE} for code in (400, 401, 403, 404, 409, 413, 422, 429, 500)}

_STATUS_CODES = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 413: "request_too_large", 422: "invalid_request", 429: "rate_limited", 409: "conflict"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, violations: Sequence[Violation] = (),
                 problems: Sequence[Problem] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.violations = list(violations)
        self.problems = problems


# query code -> HTTP status on every route that refuses with it (check, query, templates): one cause, one
# (status, code) pair wherever it is met. Codes not named here answer 400.
QUERY_STATUS: dict[str, int] = {
    "no_grant": 403, "grant_revoked": 403, "grant_expired": 403, "grant_not_started": 403, "templates_only": 403,
    "template_not_found": 404, "template_not_approved": 409, "review_not_allowed": 409, "run_limit_reached": 409,
    "invalid_parameters": 422, "unknown_output_column": 422, "invalid_weight": 422, "invalid_accuracy_target": 422,
    "epsilon_and_accuracy": 422,
}


def refused(error: QueryError) -> ApiError:
    """The API error for a refused or failed query, with the status its code has on every route."""
    return ApiError(QUERY_STATUS.get(error.code, 400), error.code, error.message, error.violations)


def envelope(code: str, message: str, violations: Sequence[Violation] = (),
             problems: Sequence[Problem] | None = None) -> dict[str, object]:
    error: dict[str, object] = {"code": code, "message": message, "violations": [v.to_dict() for v in violations]}
    if problems is not None:
        error["problems"] = [asdict(p) for p in problems]
    return {"ok": False, "error": error}


_TITLES = {400: "Refused", 401: "Sign in first", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
           409: "Conflict", 413: "Too large", 422: "Invalid input", 429: "Too many requests", 500: "Something failed"}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the envelope (a web page's into an HTML page that
    says the same in words)."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, error: ApiError) -> Response:
        if is_page(request.url.path):
            return error_page(request, error.status, _TITLES.get(error.status, "Refused"), error.message)
        headers = {"Retry-After": "1"} if error.status == 429 else None
        return JSONResponse(envelope(error.code, error.message, error.violations, error.problems), error.status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        where = "; ".join(".".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", ""))
                          for e in error.errors()[:5])
        if is_page(request.url.path):
            return error_page(request, 422, _TITLES[422], f"Some fields were not valid: {where}"[:500])
        return JSONResponse(envelope("invalid_request", f"Invalid request: {where}"[:500]), 422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> Response:
        code = _STATUS_CODES.get(error.status_code, "invalid_request")
        if is_page(request.url.path):
            return error_page(request, error.status_code, _TITLES.get(error.status_code, "Refused"),
                              API_CODES.get(code, "Request refused."))
        headers = dict(getattr(error, "headers", None) or {})
        if error.status_code == 405:  # every method the path takes, not only the first route's
            headers["Allow"] = ", ".join(_methods(app, request.url.path))
        return JSONResponse(envelope(code, API_CODES.get(code, "Request refused.")), error.status_code,
                            headers=headers or None)


    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        if is_page(request.url.path):
            return error_page(request, 500, _TITLES[500], "An unexpected error occurred; nothing was released.")
        return JSONResponse(envelope("internal_error", "An unexpected error occurred; nothing was released."), 500)


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document gives for the route templates that match `path`."""
    found = set()
    for template, operations in app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^/}]+\}", "[^/]+", template), path):
            found |= {method.upper() for method in operations if method in _HTTP_METHODS}
    return sorted(found)


UPLOADS = re.compile(r"^/v1/datasets/[^/]+/(deliveries|consents|consents/import)$")  # bulk bodies


class BodyLimit:
    """Request bodies over `limit` bytes (`upload_limit` for file uploads) are refused with the envelope
    (413), announced or streamed."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if UPLOADS.match(scope["path"]) else self.limit
        announced = dict(scope["headers"]).get(b"content-length", b"")
        if announced.isdigit() and int(announced) > limit:
            response = JSONResponse(envelope("request_too_large", API_CODES["request_too_large"]), 413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(status_code=413)  # answered by the handler above, in the envelope
            return message

        await self.app(scope, counted, send)
