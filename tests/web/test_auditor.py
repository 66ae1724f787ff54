"""The auditor's pages in a real browser: the verify banner (verified, then a failure after a record is
edited in the state store, SQLite or PostgreSQL), the log filtered and paged, the export and public key,
and each grant's budget spent over time as a chart with its table."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect

from enclave.catalog.demo import DemoData
from tests.api.conftest import Service, fresh_home, running_service
from tests.web.browser import assert_accessible, screenshot
from tests.web.conftest import sign_in


def _seqs(page: Page) -> list[int]:
    return [int(n) for n in page.locator("table.records tbody tr td:first-child").all_inner_texts()]


def test_the_auditors_home_says_the_log_verifies_and_exports_it(page: Page, service: Service,
                                                                 tmp_path: Path) -> None:
    sign_in(page, service, "auditor")
    records = len(service.enclave.audit.records())
    banner = page.locator("#verify-banner")
    expect(banner).to_have_class("verified")
    expect(banner).to_contain_text(f"Chain verified up to record {records}, signed checkpoint at ")
    expect(banner).to_contain_text(f"(record {records})")
    expect(page.locator("table.records tbody tr")).to_have_count(10)
    assert _seqs(page) == list(range(records, records - 10, -1))
    assert_accessible(page)
    screenshot(page, "auditor-home")

    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile("Download the log")).click()
    saved = tmp_path / "log.jsonl"
    download.value.save_as(saved)
    entries = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [e["record"]["seq"] for e in entries if e["kind"] == "event"] == list(range(1, records + 1))
    assert entries[-1]["kind"] == "checkpoint"
    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile("Download the public key")).click()
    download.value.save_as(tmp_path / "key.pem")
    assert (tmp_path / "key.pem").read_text() == service.enclave.public_key_path.read_text()


def test_an_auditor_filters_the_log_with_the_keyboard_and_pages_through_it(page: Page, service: Service) -> None:
    for n in range(55):  # more than a page of key.issued records
        service.issue(f"load{n}", {"researcher"})
    issued = [r["seq"] for r in service.enclave.audit.records() if r["event"] == "key.issued"]
    assert len(issued) > 50
    sign_in(page, service, "auditor", "/auditor/log")
    page.get_by_label("Event").focus()
    page.keyboard.type("key.issued")  # the select's type-ahead
    expect(page.get_by_label("Event")).to_have_value("key.issued")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Principal (actor)")).to_be_focused()
    page.keyboard.type("steward")
    page.keyboard.press("Enter")  # submits the filter form
    expect(page).to_have_url(re.compile(r"event=key\.issued"))
    assert _seqs(page) == issued[:50]
    assert set(page.locator("table.records tbody tr td:nth-child(3)").all_inner_texts()) == {"key.issued"}
    assert "digest" not in page.content() or '"digest": "(in the export only)"' in page.content()
    assert_accessible(page)
    screenshot(page, "auditor-log-filtered")

    page.get_by_role("link", name="Next page").click()
    assert _seqs(page) == issued[50:]
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    expect(page.get_by_label("Event")).to_have_value("key.issued")  # the filters stay
    page.get_by_role("link", name="Previous page").click()
    assert _seqs(page) == issued[:50]
    expect(page.get_by_role("link", name="Previous page")).to_have_count(0)

    page.goto("/auditor/log?event=grant.created&dataset=demo&decision=allow")
    grants = [r["seq"] for r in service.enclave.audit.records() if r["event"] == "grant.created"]
    assert _seqs(page) == grants
    times = {r["seq"]: r["time"] for r in service.enclave.audit.records()}
    page.goto(f"/auditor/log?event=key.issued&since={quote(times[issued[50]])}")
    assert _seqs(page) == issued[50:]
    page.goto(f"/auditor/log?event=key.issued&until={quote(times[issued[2]])}")
    assert _seqs(page) == issued[:3]
    page.goto("/auditor/log?since=not-a-time")
    expect(page.get_by_role("alert")).to_contain_text("The times must be dates and times")


def test_each_grants_budget_is_charted_with_a_table(page: Page, service: Service) -> None:
    alice = service.client("alice")
    for epsilon in (0.5, 1.0):
        sql = f"SELECT gender, COUNT(*) AS n FROM children GROUP BY gender -- {epsilon}"
        assert alice.post("/v1/queries", json={"dataset": "demo", "sql": sql, "epsilon": epsilon}).status_code == 200
    sign_in(page, service, "auditor", "/auditor/budget")
    section = page.get_by_role("region", name="alice on demo")
    chart = section.get_by_role("img")
    label = chart.get_attribute("aria-label")
    assert label is not None
    assert label.startswith("ε spent by alice on demo over time: 1.5 of a cap of 5, in 2 charges")
    path = section.locator("path.line").get_attribute("d")
    assert path is not None
    assert path.count("V") == 2
    section.get_by_text("The charges as a table").click()
    rows = section.locator("table.charges tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(1).get_by_role("cell")).to_have_text([re.compile(r"\d+"), re.compile("UTC$"), "1", "0", "1.5",
                                                          "0"])
    expect(page.get_by_role("region", name="bob on demo")).to_contain_text("Nothing spent yet.")
    assert_accessible(page)
    screenshot(page, "auditor-budget")


def test_a_steward_cannot_open_the_auditors_pages(page: Page, service: Service) -> None:
    sign_in(page, service, "steward")
    for path in ("/auditor", "/auditor/log", "/auditor/export.jsonl", "/auditor/budget"):
        response = page.goto(path)
        assert response is not None
        assert response.status == 403


# -- a log edited behind the store's back: a service of this test's own -------------------------------------


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory, demo_data: DemoData) -> Iterator[Service]:
    with running_service(fresh_home(tmp_path_factory.mktemp("tampered-home"), demo_data)) as running:
        yield running


def edit_record(service: Service, seq: int, change: Callable[[dict], None]) -> None:
    """Rewrite record `seq` in the state store directly, past its guards, as someone holding the store would
    (tests/audit: SQLite's file with its trigger dropped, PostgreSQL as the owner with the trigger off)."""
    backend = service.enclave.audit.backend
    if backend.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(backend.path, isolation_level=None)) as connection:  # type: ignore[attr-defined]
            connection.execute("DROP TRIGGER events_append_only_update")
            record = json.loads(connection.execute("SELECT record FROM events WHERE seq = ?", (seq,)).fetchone()[0])
            change(record)
            connection.execute("UPDATE events SET record = ? WHERE seq = ?", (json.dumps(record, sort_keys=True), seq))
        return
    with psycopg.connect(service.settings.admin_database_url) as connection:  # type: ignore[arg-type]
        connection.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        record = json.loads(connection.execute("SELECT record FROM events WHERE seq = %s", (seq,)).fetchone()[0])
        change(record)
        connection.execute("UPDATE events SET record = %s WHERE seq = %s", (json.dumps(record, sort_keys=True), seq))
        connection.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")


def test_the_verify_banner_turns_to_a_failure_after_a_record_is_edited(browser: Browser, tampered: Service) -> None:
    context = browser.new_context(base_url=tampered.base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        sign_in(page, tampered, "auditor")
        records = len(tampered.enclave.audit.records())
        expect(page.locator("#verify-banner")).to_contain_text(f"Chain verified up to record {records}")
        granted = next(r for r in tampered.enclave.audit.records()
                       if r["event"] == "grant.created" and r["researcher"] == "alice")

        def more_budget(record: dict) -> None:
            record["epsilon_cap"], record["epsilon_cap_units"] = 500.0, 500 * 10**9

        edit_record(tampered, int(granted["seq"]), more_budget)
        page.reload()
        banner = page.get_by_role("alert")
        expect(banner).to_contain_text(f"Verification failed: record {granted['seq']} does not match its hash (edited)")
        expect(page.locator("#differences li")).to_have_count(1)
        expect(page.locator("#differences li")).to_contain_text("grants")
        expect(page.locator("#differences li")).to_contain_text("alice")
        newest = page.locator("table.records tbody tr").first.locator("td").first
        expect(newest).to_have_text(str(records))  # the latest records are the log's newest, past the failure
        assert_accessible(page)
        screenshot(page, "auditor-verify-failed")
    finally:
        context.close()
