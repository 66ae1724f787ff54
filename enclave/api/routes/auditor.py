"""Auditor routes: read, filter and export the log, verify it, prove a record in it, and fetch the key
that verifies it. Export and verify stream the log a page at a time (memory O(page), not O(n))."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from enclave.api.deps import Auditor, EnclaveDep
from enclave.api.errors import TEXT_ROUTE_ERRORS, ApiError
from enclave.api.schemas import EventsOut, ProofOut, VerifyOut
from enclave.audit.signing import load_public_key
from enclave.audit.state import differences
from enclave.audit.verify import verify_lines
from enclave.budget.ledger import DELTA_UNIT, EPSILON_UNIT

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
    while True:  # pages of `limit` records: an unfiltered page is one read of `limit` rows
        page = enclave.audit.records(last + 1, limit=limit)
        for record in page:
            last = int(record["seq"])
            if any(value is not None and record.get(key) != value for key, value in wanted.items()):
                continue
            moment = datetime.fromisoformat(str(record["time"]))
            if (since and moment < since) or (until and moment > until):
                continue
            found.append(record)
            if len(found) == limit:
                return EventsOut(events=found, next_after=last)
        if len(page) < limit:
            return EventsOut(events=found, next_after=None)


def _chunks(lines: Iterable[str], size: int = 500) -> Iterator[str]:
    """Lines joined `size` at a time: a streamed response sends (and hops threads) per chunk, not per line."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


@router.get("/export", operation_id="auditor-export-log", response_class=PlainTextResponse,
            responses={200: {"content": {"application/x-ndjson": {}}}, **TEXT_ROUTE_ERRORS})
def export_log(enclave: EnclaveDep, principal: Auditor, start: int = Query(1, ge=1, le=2**62),
               end: int | None = Query(None, ge=1, le=2**62)) -> StreamingResponse:
    """JSONL, the format `enclave audit verify` checks offline; ends with a signed checkpoint. Streamed: the
    end is signed before the response starts, then the lines follow a page of records at a time."""
    return StreamingResponse(_chunks(enclave.audit.export_lines(start, end)), media_type="application/x-ndjson")


@router.get("/verify", operation_id="auditor-verify-log", response_model=VerifyOut)
def verify_log(enclave: EnclaveDep, principal: Auditor) -> VerifyOut:
    report = verify_lines(enclave.audit.export_lines(), load_public_key(enclave.public_key_path))
    found = [d.line() for d in differences(enclave.audit)]
    return VerifyOut(ok=report.ok and not found, records=report.records, checkpoints=report.checkpoints,
                     problem=report.problem, differences=found)


@router.get("/proof/{seq}", operation_id="auditor-get-proof", response_model=ProofOut)
def get_proof(enclave: EnclaveDep, principal: Auditor, seq: int = Path(ge=1, le=2**62)) -> ProofOut:
    """Record `seq`'s RFC 9162 inclusion proof in the latest signed checkpoint's tree (the head is signed
    first if none covers it yet); `enclave audit verify-proof` checks it offline with the public key."""
    proof = enclave.audit.prove(seq)
    if proof is None:
        raise ApiError(404, "not_found", f"No audit record {seq}.")
    return ProofOut.model_validate(proof)


@router.get("/checkpoints", operation_id="auditor-list-checkpoints", response_model=list[dict[str, object]])
def list_checkpoints(enclave: EnclaveDep, principal: Auditor) -> list[dict[str, object]]:
    return enclave.audit.checkpoints()


@router.get("/public-key", operation_id="auditor-get-public-key", response_class=PlainTextResponse,
            responses={200: {"content": {"application/x-pem-file": {}}}, **TEXT_ROUTE_ERRORS})
def public_key(enclave: EnclaveDep, principal: Auditor) -> PlainTextResponse:
    return PlainTextResponse(enclave.public_key_path.read_text(), media_type="application/x-pem-file")


class ChargePoint(BaseModel):
    seq: int = Field(description="The `query.charged` record.")
    time: str
    epsilon: float
    delta: float
    epsilon_total: float = Field(description="ε spent on the grant up to and including this charge.")
    delta_total: float


class GrantHistory(BaseModel):
    """One grant's spending over time, from the log alone: its caps as last granted, and every charge."""

    researcher: str
    dataset: str
    epsilon_cap: float | None = Field(description="As its latest `grant.created` set it (null if the log holds "
                                      "charges but no grant, which `verify` would report).")
    delta_cap: float | None
    granted: str | None = Field(description="When it was first granted.")
    revoked: str | None = Field(None, description="When it was last revoked, unless granted again since.")
    charges: list[ChargePoint]


@router.get("/budget-history", operation_id="auditor-budget-history", response_model=list[GrantHistory])
def budget_history(enclave: EnclaveDep, principal: Auditor, researcher: str | None = None,
                   dataset: str | None = None) -> list[GrantHistory]:
    """Each grant's ε and δ spent over time, rebuilt from the log's `grant.created`, `grant.revoked` and
    `query.charged` records (read a page at a time), by researcher and dataset."""
    grants: dict[tuple[str, str], dict[str, object]] = {}
    spent: dict[tuple[str, str], list[int]] = {}
    after = 0
    while page := enclave.audit.records(after + 1, limit=enclave.audit.page):
        after = int(page[-1]["seq"])  # type: ignore[call-overload]
        for record in page:
            event = record["event"]
            if event not in ("grant.created", "grant.revoked", "query.charged"):
                continue
            key = (str(record["researcher"] if event != "query.charged" else record["actor"]), str(record["dataset"]))
            if (researcher is not None and key[0] != researcher) or (dataset is not None and key[1] != dataset):
                continue
            entry = grants.setdefault(key, {"researcher": key[0], "dataset": key[1], "epsilon_cap": None,
                                            "delta_cap": None, "granted": None, "revoked": None, "charges": []})
            if event == "grant.created":
                entry.update(epsilon_cap=record["epsilon_cap_units"] / EPSILON_UNIT,  # type: ignore[operator]
                             delta_cap=record["delta_cap_units"] / DELTA_UNIT,  # type: ignore[operator]
                             granted=entry["granted"] or record["time"], revoked=None)
            elif event == "grant.revoked":
                entry["revoked"] = record["time"]
            else:
                charge = record["charge"]
                totals = spent.setdefault(key, [0, 0])
                totals[0] += int(charge["epsilon_units"])  # type: ignore[index]
                totals[1] += int(charge["delta_units"])  # type: ignore[index]
                entry["charges"].append(ChargePoint(  # type: ignore[attr-defined]
                    seq=int(record["seq"]), time=str(record["time"]),  # type: ignore[call-overload]
                    epsilon=int(charge["epsilon_units"]) / EPSILON_UNIT,  # type: ignore[index]
                    delta=int(charge["delta_units"]) / DELTA_UNIT,  # type: ignore[index]
                    epsilon_total=totals[0] / EPSILON_UNIT, delta_total=totals[1] / DELTA_UNIT))
        if len(page) < enclave.audit.page:
            break
    return [GrantHistory.model_validate(grants[key]) for key in sorted(grants)]
