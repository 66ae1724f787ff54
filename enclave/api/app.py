"""The enclave service: `create_app(settings)` builds it; uvicorn serves it (`enclave serve`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from enclave.api import errors
from enclave.api.deps import EnclaveDep, RateLimiter
from enclave.api.routes import auditor, onboarding, researcher, steward, templates
from enclave.api.schemas import ErrorOut, Health
from enclave.jobs.queue import JobQueue
from enclave.pipeline import Enclave
from enclave.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    enclave = Enclave(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        enclave.close()

    app = FastAPI(title="enclave", version="0.1.0", lifespan=lifespan,
                  description="A secure statistical query enclave: aggregate SQL in, protected tables out.",
                  responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 429, 500)})
    app.state.enclave = enclave
    app.state.limiter = RateLimiter(settings)
    # the queue of asynchronous queries, with Redis only; without it every query is answered synchronously
    app.state.jobs = JobQueue.connect(settings.redis_url, enclave.namespace) if settings.redis_url else None
    errors.install(app)
    app.add_middleware(errors.BodyLimit, limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes)

    @app.get("/healthz", operation_id="health-live", response_model=Health, tags=["health"])
    def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", operation_id="health-ready", response_model=Health, tags=["health"])
    def readyz(enclave: EnclaveDep) -> Health:
        with enclave.audit.reading() as connection:
            connection.execute("SELECT 1").fetchone()
        return Health(status="ok")

    for router in (researcher.router, steward.router, onboarding.router, auditor.router, templates.router):
        app.include_router(router)
    return app
