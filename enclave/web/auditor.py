"""The auditor's pages: the verify banner, the log with filters and pages, its export and public key, and
each grant's budget spent over time.

Each page calls the JSON API's route functions (enclave.api.routes.auditor) with the viewer's principal:
`verify_log` and `list_checkpoints` for the banner, `list_events` for the log (a page of records after a
sequence number), `export_log` and `public_key` for the downloads, `budget_history` for the chart. A
record is shown by its public fields and, in a disclosure, its JSON; records never hold data values, and
the page leaves out what could name a person or a key (a consent pseudonym, a key's digest), which the
export keeps for offline verification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from enclave.api.routes import auditor
from enclave.api.routes.auditor import GrantHistory
from enclave.audit.records import EVENT_TYPES
from enclave.pipeline import Enclave
from enclave.web.pages import HEADERS, AuditorPage, render

router = APIRouter(prefix="/auditor", include_in_schema=False)
PAGE = 50
DECISIONS = ("allow", "deny")
# fields the page leaves out of a record's JSON (the export has them): pseudonyms of persons, key digests
WITHHELD = frozenset({"subject", "entries", "digest"})


def _enclave(request: Request) -> Enclave:
    return request.app.state.enclave


def _shown(record: dict[str, object]) -> str:
    return json.dumps({k: ("(in the export only)" if k in WITHHELD else v) for k, v in record.items()},
                      indent=2, ensure_ascii=False, sort_keys=True)


def _banner(request: Request, viewer: AuditorPage) -> dict[str, object]:
    enclave = _enclave(request)
    verified = auditor.verify_log(enclave, viewer.principal)
    signed = auditor.list_checkpoints(enclave, viewer.principal)
    latest = signed[-1]["checkpoint"] if signed else None
    return {"verified": verified, "checkpoint": latest}


@router.get("")
def home(request: Request, viewer: AuditorPage) -> HTMLResponse:
    banner = _banner(request, viewer)
    enclave = _enclave(request)  # the newest records, wherever verification stopped
    latest = auditor.list_events(enclave, viewer.principal, after=max(enclave.audit.size() - 10, 0), limit=10)
    rows = [(r, _shown(r)) for r in reversed(latest.events)]
    return render(request, "auditor/home.html", viewer, rows=rows, **banner)


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@router.get("/log")
def log(request: Request, viewer: AuditorPage, event: Annotated[str | None, Query(max_length=40)] = None,
        actor: Annotated[str | None, Query(max_length=100)] = None,
        dataset: Annotated[str | None, Query(max_length=64)] = None,
        decision: Annotated[str | None, Query(max_length=10)] = None,
        since: Annotated[str | None, Query(max_length=40)] = None,
        until: Annotated[str | None, Query(max_length=40)] = None,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        back: Annotated[str, Query(max_length=2000, pattern=r"^[0-9,]*$")] = "") -> HTMLResponse:
    """A page of records after `after` that match the filters; `back` is the `after` of each earlier page,
    so the previous page is one link away."""
    filters = {"event": event or None, "actor": (actor or "").strip() or None,
               "dataset": (dataset or "").strip() or None, "decision": decision or None, "since": since or None,
               "until": until or None}
    try:
        moments = _moment(filters["since"]), _moment(filters["until"])
    except ValueError:
        return render(request, "auditor/log.html", viewer, 422, rows=[], filters=filters, events=EVENT_TYPES,
                      decisions=DECISIONS, problem="The times must be dates and times, like 2026-12-03T09:00 (UTC).")
    found = auditor.list_events(_enclave(request), viewer.principal, actor=filters["actor"], event=filters["event"],
                                dataset=filters["dataset"], decision=filters["decision"], since=moments[0],
                                until=moments[1], after=after, limit=PAGE)
    trail = [int(n) for n in back.split(",") if n]
    kept = {k: v for k, v in filters.items() if v}
    pages = {"next": {**kept, "after": found.next_after, "back": ",".join(map(str, [*trail, after]))}
             if found.next_after is not None else None,
             "previous": {**kept, "after": trail[-1], "back": ",".join(map(str, trail[:-1]))} if trail else None}
    return render(request, "auditor/log.html", viewer, rows=[(r, _shown(r)) for r in found.events], filters=filters,
                  events=EVENT_TYPES, decisions=DECISIONS, pages=pages, first=after + 1 if after else None)


def _download(response: Response, name: str) -> Response:
    response.headers.update(HEADERS)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@router.get("/export.jsonl")
def export(request: Request, viewer: AuditorPage) -> Response:
    """The whole log as JSONL with a fresh signed checkpoint (`enclave audit verify` checks it offline)."""
    return _download(auditor.export_log(_enclave(request), viewer.principal, start=1, end=None), "enclave-audit.jsonl")


@router.get("/public-key.pem")
def public_key(request: Request, viewer: AuditorPage) -> Response:
    return _download(auditor.public_key(_enclave(request), viewer.principal), "enclave-audit-public-key.pem")


# -- each grant's budget over time -----------------------------------------------------------------------

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 180, 56, 16, 14, 34


@dataclass(frozen=True)
class Chart:
    """One grant's step line of cumulative ε against time, drawn in SVG coordinates."""

    grant: GrantHistory
    path: str
    cap_y: float | None
    top_label: str
    start: str
    end: str
    label: str


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def chart(grant: GrantHistory, now: datetime) -> Chart:
    """The step line from the grant (or its first charge) to now: flat between charges, up at each one."""
    times = [_time(c.time) for c in grant.charges]
    start = _time(grant.granted) if grant.granted else (times[0] if times else now)
    start = min([start, *times])
    end = max([now, *times])
    span = max((end - start).total_seconds(), 1.0)
    spent = grant.charges[-1].epsilon_total if grant.charges else 0.0
    top = max(grant.epsilon_cap or 0.0, spent) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(moment: datetime) -> float:
        return round(LEFT + plot_w * (moment - start).total_seconds() / span, 1)

    def y(value: float) -> float:
        return round(TOP + plot_h * (1 - value / top), 1)

    steps = [f"M{x(start)} {y(0)}"]
    for moment, charge in zip(times, grant.charges, strict=True):
        steps.append(f"H{x(moment)} V{y(charge.epsilon_total)}")
    steps.append(f"H{x(end)}")
    cap = f" of a cap of {grant.epsilon_cap:g}" if grant.epsilon_cap is not None else ""
    label = (f"ε spent by {grant.researcher} on {grant.dataset} over time: {spent:g}{cap}, in "
             f"{len(grant.charges)} charges, from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    return Chart(grant, " ".join(steps), y(grant.epsilon_cap) if grant.epsilon_cap is not None else None,
                 f"{top:g}", f"{start:%Y-%m-%d %H:%M:%S}", f"{end:%Y-%m-%d %H:%M:%S}", label)


@router.get("/budget")
def budget(request: Request, viewer: AuditorPage) -> HTMLResponse:
    history = auditor.budget_history(_enclave(request), viewer.principal)
    now = datetime.now(UTC)
    return render(request, "auditor/budget.html", viewer, charts=[chart(g, now) for g in history],
                  size={"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": RIGHT, "top": TOP, "bottom": BOTTOM})
