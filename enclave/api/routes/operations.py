"""Operations routes: liveness, readiness and metrics.

`/healthz` and `/readyz` need no key (a load balancer probes them; they name checks, nothing else).
`/metrics` needs an auditor's key, or `Bearer $ENCLAVE_METRICS_TOKEN` for a scraper: its stage durations
are the timings invariant 10 keeps from researchers (enclave.ops.metrics).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from enclave.access.keys import Principal
from enclave.api.deps import EnclaveDep, current_principal
from enclave.api.errors import TEXT_ROUTE_ERRORS, ApiError
from enclave.api.schemas import Health
from enclave.jobs import store as jobs_store
from enclave.ops import metrics
from enclave.ops.ready import is_ready, readiness

router = APIRouter()


@router.get("/healthz", operation_id="health-live", response_model=Health, tags=["health"])
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", operation_id="health-ready", response_model=Health, tags=["health"],
            responses={503: {"model": Health, "description": "A check failed; `checks` names it."}})
def readyz(enclave: EnclaveDep) -> Health | JSONResponse:
    checks = readiness(enclave)
    if is_ready(checks):
        return Health(status="ok", checks=checks)
    return JSONResponse(Health(status="unavailable", checks=checks).model_dump(), status_code=503)


def metrics_reader(request: Request, enclave: EnclaveDep) -> None:
    """The scraper's token (`ENCLAVE_METRICS_TOKEN`), or an auditor's API key."""
    token = enclave.settings.metrics_token
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if token is not None and scheme.lower() == "bearer" and hmac.compare_digest(
            sent.strip().encode(), token.get_secret_value().encode()):
        return
    principal: Principal = current_principal(request, enclave)
    if not principal.has("auditor"):
        raise ApiError(403, "forbidden", "This route needs the auditor role (or the metrics token).")


@router.get("/metrics", operation_id="auditor-get-metrics", response_class=PlainTextResponse, tags=["auditor"],
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
                       **TEXT_ROUTE_ERRORS})
def metrics_text(reader: Annotated[None, Depends(metrics_reader)], enclave: EnclaveDep) -> Response:
    with enclave.audit.reading() as connection:
        metrics.set_queue_depth(jobs_store.waiting(connection))
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
