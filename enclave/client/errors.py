"""What can go wrong when asking an enclave, as exceptions carrying the API's stable `code`.

Every error the service returns is one JSON envelope, `{"ok": false, "error": {"code", "message",
"violations"}}`; `error_from` turns it into the class below that its code (or, failing a known code, its
HTTP status) names, so a notebook can `except QueryRejected` or `except BudgetExhausted` instead of
reading status numbers. A rejection renders each violation as sqlglot renders a parse error: the line of
the SQL, a caret line under the offending token, the rule and the remedy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from enclave import caret


@dataclass(frozen=True)
class Violation:
    """One reason the check refused a query, at its token (`line` and `col` are 1-based)."""

    code: str
    message: str
    line: int | None = None
    col: int | None = None
    highlight: str = ""
    remedy: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Violation:
        return cls(code=str(data["code"]), message=str(data["message"]), line=data.get("line"),  # type: ignore[arg-type]
                   col=data.get("col"), highlight=str(data.get("highlight") or ""),  # type: ignore[arg-type]
                   remedy=data.get("remedy"))  # type: ignore[arg-type]

    def render(self, sql: str | None = None) -> str:
        """The rule and message, then (given the SQL) its line with carets under the token, then the remedy:
        the same text as the enclave's own `enclave check` prints (one function renders both)."""
        return caret.render(self.code, self.message, self.line, self.col, self.highlight, self.remedy, sql or "")


class EnclaveError(Exception):
    """An error answered by the enclave (or the failure to reach it). `code` is the API's stable code."""

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 violations: Sequence[Violation] = (), sql: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.violations = tuple(violations)
        self.sql = sql

    def __str__(self) -> str:
        return "\n".join([f"{self.code}: {self.message}", *(v.render(self.sql) for v in self.violations)])


class Unavailable(EnclaveError):
    """The enclave could not be reached (connection refused, name not resolved, TLS failure)."""


class Unauthenticated(EnclaveError):
    """No key, or one that is unknown, malformed or revoked (401): check ENCLAVE_TOKEN."""


class Forbidden(EnclaveError):
    """The key's principal may not do this: a missing role, no grant, a revoked, expired or templates-only grant."""


class NotFound(EnclaveError):
    """No such dataset, query or template (or one that is someone else's)."""


class InvalidRequest(EnclaveError):
    """The request does not match the API's schema, or a template's parameters do not match its declaration."""


class Conflict(EnclaveError):
    """The request conflicts with the resource's state: a template not approved, a run limit reached."""


class RateLimited(EnclaveError):
    """Too many requests with this key; `retry_after` is how many seconds the enclave asks to wait."""

    retry_after: float | None = None


class QueryRejected(EnclaveError):
    """The enclave refused the query before spending anything: `violations` says where and why."""


class BudgetExhausted(QueryRejected):
    """The query costs more ε or δ than the grant has left; nothing ran, nothing was spent."""


class QueryFailed(EnclaveError):
    """The query was charged and then failed (it overran its deadline, could not be protected, ...): nothing
    was released and the charge stays spent."""


class QueryTimeout(EnclaveError, TimeoutError):
    """No answer within the client's timeout. `query_id` is the query's id where the enclave gave one (look
    it up later with `Enclave.query_result`); `charged` says whether its cost is already spent."""

    def __init__(self, message: str, *, query_id: str | None = None, charged: bool | None = None) -> None:
        super().__init__("client_timeout", message)
        self.query_id = query_id
        self.charged = charged


class ServerError(EnclaveError):
    """An unexpected failure inside the enclave (500); nothing was released and no detail is given."""


# codes whose meaning is the same wherever they are met; other codes fall back on the HTTP status
_BY_CODE: dict[str, type[EnclaveError]] = {
    "budget_exceeded": BudgetExhausted,
    **dict.fromkeys(("execution_timeout", "execution_resources", "execution_failed", "too_many_groups",
                     "protection_failed", "audit_unavailable", "job_abandoned"), QueryFailed),
}
_BY_STATUS: dict[int, type[EnclaveError]] = {400: QueryRejected, 401: Unauthenticated, 403: Forbidden, 404: NotFound,
                                             409: Conflict, 422: InvalidRequest, 429: RateLimited}


def error_from(status: int, body: object, sql: str | None = None, retry_after: str | None = None) -> EnclaveError:
    """The exception for an error response: its envelope's code, message and violations (with the SQL they
    point into, for rendering)."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        return ServerError("internal_error", f"the enclave answered {status} without its error envelope",
                           status=status)
    return error_of(detail, status=status, sql=sql, retry_after=retry_after)


def error_of(detail: Mapping[str, object], *, status: int | None = None, sql: str | None = None,
             retry_after: str | None = None) -> EnclaveError:
    """The exception for an envelope's `error` object (also an asynchronous query's `error`)."""
    code = str(detail.get("code", "internal_error"))
    kind = _BY_CODE.get(code) or _BY_STATUS.get(status or 0) or (ServerError if (status or 0) >= 500 else EnclaveError)
    violations = [Violation.from_json(v) for v in detail.get("violations") or ()]  # type: ignore[attr-defined]
    error = kind(code, str(detail.get("message", "")), status=status, violations=violations, sql=sql)
    if isinstance(error, RateLimited) and retry_after:
        error.retry_after = float(retry_after)
    return error
