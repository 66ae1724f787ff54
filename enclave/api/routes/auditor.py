"""Auditor routes: read, filter and export the log, verify it, and fetch the key that verifies it."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from enclave.api.deps import Auditor, EnclaveDep
from enclave.api.errors import TEXT_ROUTE_ERRORS
from enclave.api.schemas import EventsOut, VerifyOut
from enclave.audit.signing import load_public_key
from enclave.audit.state import differences
from enclave.audit.verify import verify_lines

router = APIRouter(prefix="/v1/audit", tags=["auditor"])


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is read as UTC (the log's own times are UTC)."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@router.get("/events", operation_id="auditor-list-events", response_model=EventsOut)
def list_events(enclave: EnclaveDep, principal: Auditor, actor: str | None = None, event: str | None = None,
                dataset: str | None = None, decision: str | None = None, since: datetime | None = None,
                until: datetime | None = None, after: int = Query(0, ge=0, le=2**62),
                limit: int = Query(100, ge=1, le=1000)) -> EventsOut:
    """Records after `after`, filtered; at most `limit` per page."""
    wanted = {"actor": actor, "event": event, "dataset": dataset, "decision": decision}
    since, until = (_utc(moment) for moment in (since, until))
    found: list[dict[str, object]] = []
    last = after
    for record in enclave.audit.records(after + 1):
        last = int(record["seq"])
        if any(value is not None and record.get(key) != value for key, value in wanted.items()):
            continue
        moment = datetime.fromisoformat(str(record["time"]))
        if (since and moment < since) or (until and moment > until):
            continue
        found.append(record)
        if len(found) == limit:
            return EventsOut(events=found, next_after=last)
    return EventsOut(events=found, next_after=None)


@router.get("/export", operation_id="auditor-export-log", response_class=PlainTextResponse,
            responses={200: {"content": {"application/x-ndjson": {}}}, **TEXT_ROUTE_ERRORS})
def export_log(enclave: EnclaveDep, principal: Auditor, start: int = Query(1, ge=1, le=2**62),
               end: int | None = Query(None, ge=1, le=2**62)) -> PlainTextResponse:
    """JSONL, the format `enclave audit verify` checks offline; ends with a signed checkpoint."""
    buffer = io.StringIO()
    enclave.audit.export(buffer, start, end)
    return PlainTextResponse(buffer.getvalue(), media_type="application/x-ndjson")


@router.get("/verify", operation_id="auditor-verify-log", response_model=VerifyOut)
def verify_log(enclave: EnclaveDep, principal: Auditor) -> VerifyOut:
    buffer = io.StringIO()
    enclave.audit.export(buffer)
    report = verify_lines(buffer.getvalue().splitlines(), load_public_key(enclave.public_key_path))
    found = [d.line() for d in differences(enclave.audit)]
    return VerifyOut(ok=report.ok and not found, records=report.records, checkpoints=report.checkpoints,
                     problem=report.problem, differences=found)


@router.get("/checkpoints", operation_id="auditor-list-checkpoints", response_model=list[dict[str, object]])
def list_checkpoints(enclave: EnclaveDep, principal: Auditor) -> list[dict[str, object]]:
    return enclave.audit.checkpoints()


@router.get("/public-key", operation_id="auditor-get-public-key", response_class=PlainTextResponse,
            responses={200: {"content": {"application/x-pem-file": {}}}, **TEXT_ROUTE_ERRORS})
def public_key(enclave: EnclaveDep, principal: Auditor) -> PlainTextResponse:
    return PlainTextResponse(enclave.public_key_path.read_text(), media_type="application/x-pem-file")
