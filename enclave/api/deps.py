"""Dependencies of the routes: the enclave, the calling principal, and the role a route needs.

Every route but health declares the role it needs (`Researcher`, `Reviewer`, `Steward`, `Auditor`);
authentication reads `Authorization: Bearer <key>`, and each key is rate-limited on its own. A dependency
that never blocks is `async`: FastAPI runs a plain `def` one in a worker thread, a hand-off per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from limits import parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from enclave.access.keys import Principal, Role, authenticate
from enclave.api.errors import ApiError
from enclave.jobs.queue import JobQueue
from enclave.pipeline import Enclave
from enclave.settings import Settings


class RateLimiter:
    """Requests per API key, in memory or in Redis (`ENCLAVE_REDIS_URL`), apart from the privacy budget.

    Redis holds nothing that cannot be lost: while it cannot be reached (restarted, flushed, away), this
    worker limits in its own memory instead, so a key is never unlimited and a request never fails for it.
    """

    def __init__(self, settings: Settings) -> None:
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._shared = MovingWindowRateLimiter(storage_from_string(settings.redis_url, wrap_exceptions=True)) if (
            settings.redis_url) else None
        self._limit = parse(settings.rate_limit)

    def allow(self, key_id: str) -> bool:
        if self._shared is not None:
            try:
                return self._shared.hit(self._limit, "enclave-key", key_id)
            except StorageError:
                pass
        return self._memory.hit(self._limit, "enclave-key", key_id)


async def get_enclave(request: Request) -> Enclave:
    return request.app.state.enclave


EnclaveDep = Annotated[Enclave, Depends(get_enclave)]


async def get_jobs(request: Request) -> JobQueue | None:
    return request.app.state.jobs


JobsDep = Annotated[JobQueue | None, Depends(get_jobs)]  # None without ENCLAVE_REDIS_URL


def current_principal(request: Request, enclave: EnclaveDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, "unauthenticated", "Send an API key as 'Authorization: Bearer <key>'.")
    principal = authenticate(enclave.audit, enclave.settings.pepper, key.strip())
    if principal is None:
        raise ApiError(401, "unauthenticated", "The API key is unknown or revoked.")
    if not request.app.state.limiter.allow(principal.key_id):
        raise ApiError(429, "rate_limited", "Too many requests with this key; try again shortly.")
    return principal


def require(role: Role) -> Callable[[Principal], Principal]:
    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has(role):
            raise ApiError(403, "forbidden", f"This route needs the {role} role.")
        return principal

    return dependency


Researcher = Annotated[Principal, Depends(require("researcher"))]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
Steward = Annotated[Principal, Depends(require("steward"))]
Auditor = Annotated[Principal, Depends(require("auditor"))]
