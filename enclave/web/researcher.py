"""The researcher's pages."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from enclave.web.pages import ResearcherPage, render

router = APIRouter(prefix="/researcher", include_in_schema=False)


@router.get("")
def home(request: Request, viewer: ResearcherPage) -> HTMLResponse:
    return render(request, "researcher/home.html", viewer)
