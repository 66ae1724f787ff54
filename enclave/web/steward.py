"""The steward's pages."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from enclave.web.pages import StewardPage, render

router = APIRouter(prefix="/steward", include_in_schema=False)


@router.get("")
def home(request: Request, viewer: StewardPage) -> HTMLResponse:
    return render(request, "steward/home.html", viewer)
