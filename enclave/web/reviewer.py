"""The reviewer's pages."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from enclave.web.pages import ReviewerPage, render

router = APIRouter(prefix="/reviewer", include_in_schema=False)


@router.get("")
def home(request: Request, viewer: ReviewerPage) -> HTMLResponse:
    return render(request, "reviewer/home.html", viewer)
