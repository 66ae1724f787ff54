"""The auditor's pages."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from enclave.web.pages import AuditorPage, render

router = APIRouter(prefix="/auditor", include_in_schema=False)


@router.get("")
def home(request: Request, viewer: AuditorPage) -> HTMLResponse:
    return render(request, "auditor/home.html", viewer)
