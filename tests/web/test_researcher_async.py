"""A query that goes asynchronous, from the editor: its status page shows its progress and reloads itself
until the release (a real Redis and a real `enclave worker` process, as tests/jobs/test_async.py runs them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from enclave.catalog.demo import DemoData
from tests.api.conftest import Service
from tests.jobs.test_async import SLOW, rules_file, service_on, worker
from tests.web.browser import assert_accessible
from tests.web.conftest import sign_in

__all__ = ["rules_file"]  # the fixture, for this module's service


@pytest.fixture
def service(tmp_path: Path, demo_data: DemoData, redis_url: str, rules_file: Path) -> Iterator[Service]:
    with service_on(tmp_path, demo_data, redis_url=redis_url, rules_file=rules_file) as running:
        yield running


def test_an_asynchronous_query_shows_its_progress_until_its_release(page: Page, service: Service) -> None:
    with worker(service):
        sign_in(page, service, "alice")
        page.goto("/researcher/query")
        page.get_by_label("SQL", exact=True).fill(SLOW)
        page.get_by_label("ε to spend").fill("1")
        with page.expect_response(re.compile(r"/researcher/query$")) as answer:
            page.get_by_role("button", name="Run", exact=True).click()
        assert answer.value.status == 202
        assert answer.value.headers["refresh"].startswith("2; url=/researcher/queries/")
        expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Query (queued|executing)$"))
        expect(page.get_by_label("Progress")).to_be_visible()
        expect(page.get_by_text("This page refreshes itself until the release.")).to_be_visible()
        assert_accessible(page)
        expect(page.get_by_role("heading", name="Release", exact=True)).to_be_visible(timeout=45_000)
        expect(page.locator("table.release tbody tr")).to_have_count(1)
        expect(page.locator(".spent")).to_have_text("ε 1, δ 0")
