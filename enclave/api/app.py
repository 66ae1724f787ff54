"""The enclave service: `create_app(settings)` builds it; uvicorn serves it (`enclave serve`).

`app_from_env()` is the same app from `ENCLAVE_*` variables: the factory each of several worker processes
calls (`enclave serve --workers N`, enclave.ops.workers), so every worker reads the same settings.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from enclave import web
from enclave.api import errors
from enclave.api.deps import RateLimiter
from enclave.api.observe import Observe
from enclave.api.routes import auditor, onboarding, operations, researcher, steward, templates
from enclave.api.schemas import ErrorOut
from enclave.jobs.queue import JobQueue
from enclave.ops import logs, metrics
from enclave.pipeline import Enclave
from enclave.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    logs.configure(settings.log_format)
    enclave = Enclave(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.API_WORKERS.set(1)
        # What start-up built (rules, manifests, the engine, the libraries' own objects) lives as long as the
        # worker: keep it out of the collector's full passes, which otherwise scan it all and pause requests
        gc.freeze()
        logs.logger().info("worker.started")
        yield
        logs.logger().info("worker.stopping")
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
    app.add_middleware(Observe)  # outermost: every answer gets its request id, log line and metrics

    for router in (operations.router, researcher.router, steward.router, onboarding.router, auditor.router,
                   templates.router):
        app.include_router(router)
    web.install(app, enclave)
    return app


def app_from_env() -> FastAPI:
    """The app with `Settings()` read from the environment (a uvicorn factory: `factory=True`)."""
    return create_app(Settings())
