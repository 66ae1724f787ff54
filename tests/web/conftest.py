"""The pages' tests: the real service through uvicorn (tests/api/conftest.py), driven by a real chromium.

Each test gets a fresh browser context (no cookies); `sign_in` signs it in as a test principal by typing
the key into the sign-in form, as a person would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.api import conftest as api
from tests.api.conftest import Service
from tests.web.browser import ARGS, ensure_chromium

# the real service of tests/api/conftest.py, one per test module
service = api.service
service_overrides = api.service_overrides


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = ensure_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, service: Service) -> Iterator[Page]:
    context = browser.new_context(base_url=service.base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Page, service: Service, who: str, path: str = "/") -> None:
    """Sign in as `who` with its key, through the sign-in form, with the keyboard."""
    page.goto(path)
    page.get_by_label("API key").fill(service.keys[who])
    page.get_by_label("API key").press("Enter")
    page.wait_for_load_state()
