"""The steward's pages in a real browser: principals and keys (a new key shown once, working, gone on
reload), grants created and revoked, deliveries and consent changes, the data-quality report's figures.
No page shows an identifier: local IDs, names and pseudonyms are looked for and must be absent."""

from __future__ import annotations

import csv
import io
import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from enclave.catalog.demo import DemoData
from tests.api.conftest import SQL, Service
from tests.web.browser import assert_accessible, screenshot
from tests.web.conftest import sign_in


def _local_ids(demo_data: DemoData, contributor: str, n: int) -> list[str]:
    text = (demo_data.directory / "deliveries" / contributor / f"{contributor}-roster.csv").read_text()
    return [row["local_id"] for row, _ in zip(csv.DictReader(io.StringIO(text)), range(n), strict=False)]


def test_the_stewards_home_sums_up_access_and_datasets(page: Page, service: Service) -> None:
    service.enclave.version("demo")  # the demo's deliveries are recorded when it is first used
    sign_in(page, service, "steward")
    expect(page).to_have_url(re.compile(r"/steward$"))
    expect(page.get_by_role("row", name=re.compile(r"^Principals"))).to_contain_text("6")
    expect(page.get_by_role("row", name=re.compile(r"^Active API keys"))).to_contain_text("6")
    expect(page.get_by_role("row", name=re.compile(r"^Active grants"))).to_contain_text("3 of 3")
    version = service.enclave.version("demo").label
    demo = page.get_by_role("row", name=re.compile(r"^demo"))
    expect(demo).to_contain_text(version)
    expect(demo).to_contain_text("demo generated")
    assert_accessible(page)
    screenshot(page, "steward-home")


def test_a_steward_issues_a_key_shown_once_that_works_and_is_gone_on_reload(page: Page, service: Service,
                                                                          capfd: pytest.CaptureFixture[str]) -> None:
    sign_in(page, service, "steward", "/steward/principals")
    page.get_by_label("Name (letters, digits and . _ @ -)").fill("dora")
    page.get_by_label("researcher").check()
    page.get_by_role("button", name="Create principal").click()
    expect(page.get_by_role("status")).to_have_text("The principal was created, or given the roles.")
    expect(page.get_by_role("row", name=re.compile(r"^dora"))).to_contain_text("no key")

    issue = page.get_by_role("button", name="Issue a key to dora")  # with the keyboard
    issue.focus()
    page.keyboard.press("Enter")
    box = page.get_by_role("region", name="New API key for dora")
    expect(box).to_be_visible()
    expect(box).to_contain_text("it will not be shown again")
    key = page.locator("#new-key").inner_text().strip()
    assert re.fullmatch(r"enc_[0-9a-f]{16}_[A-Za-z0-9_-]+", key)
    assert page.content().count(key) == 1  # shown once, in its box, nowhere else
    assert_accessible(page)
    key_id = key.split("_")[1]
    expect(page.get_by_role("row", name=re.compile(r"^dora"))).to_contain_text(key_id)

    works = httpx.get(f"{service.base_url}/v1/budget", headers={"Authorization": f"Bearer {key}"})
    assert works.status_code == 200, works.text
    sessions = service.app.state.sessions._backend._sessions  # the memory store: what the server keeps
    assert key.split("_", 2)[2] not in repr(sessions)
    logged = capfd.readouterr()
    assert "route=/steward/principals/{name}/keys status=201" in logged.err  # the request log, captured
    assert key.split("_", 2)[2] not in logged.out + logged.err

    page.reload()  # the post is sent again: nothing is issued, nothing shown
    expect(page.get_by_role("alert")).to_contain_text("A key was already issued to dora from this form")
    assert key not in page.content()
    page.goto("/steward/principals")
    assert key not in page.content()
    row = page.get_by_role("row", name=re.compile(r"^dora"))
    expect(row.locator("code")).to_have_count(1)  # the reload issued no second key

    page.get_by_role("button", name=f"Revoke key {key_id} of dora").click()
    expect(page.get_by_role("status")).to_contain_text("The key was revoked")
    expect(page.get_by_role("row", name=re.compile(r"^dora"))).to_contain_text("revoked")
    assert httpx.get(f"{service.base_url}/v1/budget", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_an_invalid_principal_is_refused_on_the_page(page: Page, service: Service) -> None:
    sign_in(page, service, "steward", "/steward/principals")
    page.get_by_label("Name (letters, digits and . _ @ -)").fill("nobody")
    page.get_by_role("button", name="Create principal").click()  # no role ticked
    expect(page.get_by_role("alert")).to_contain_text("The principal was not created: roles:")
    assert all(p["name"] != "nobody" for p in service.client("steward").get("/v1/principals").json())


def test_grants_are_created_and_revoked_through_the_page(page: Page, service: Service) -> None:
    service.issue("erin", {"researcher"})
    assert service.client("alice").post("/v1/queries", json={"dataset": "demo", "sql": SQL,
                                                             "epsilon": 1}).status_code == 200
    sign_in(page, service, "steward", "/steward/grants")
    alice = page.get_by_role("row", name=re.compile(r"^alice demo"))
    expect(alice.get_by_role("cell")).to_have_text(["alice", "demo", "study", "—", "—", "ad hoc and templates", "5",
                                                    "1", "4", "1e-05", "0", "1e-05", "active"])

    page.get_by_label("Researcher", exact=True).select_option("erin")
    page.get_by_label("Dataset", exact=True).select_option("demo")
    page.get_by_label("Purpose", exact=True).fill("evaluation")
    page.get_by_label("Expires (optional)").fill("2099-12-31")
    page.get_by_label("ε cap (total privacy budget)").fill("2")
    page.get_by_label("δ cap").fill("0.000001")
    page.get_by_label("Approved templates only (no ad-hoc SQL)").check()
    page.get_by_role("button", name="Create grant").press("Enter")
    expect(page.get_by_role("status")).to_have_text("The grant was recorded; it takes effect at once.")
    erin = page.get_by_role("row", name=re.compile(r"^erin demo"))
    expect(erin.get_by_role("cell")).to_have_text(["erin", "demo", "evaluation", "—", "2099-12-31", "templates only",
                                                   "2", "0", "2", "1e-06", "0", "1e-06", "active"])
    assert_accessible(page)
    screenshot(page, "steward-grants")

    page.get_by_label("Grant", exact=True).select_option(label="erin on demo (evaluation)")
    page.get_by_label("Reason (recorded in the audit log)").fill("ok")  # too short: refused, nothing revoked
    page.get_by_label("Reason (recorded in the audit log)").evaluate("e => e.removeAttribute('minlength')")
    page.get_by_role("button", name="Revoke grant").click()
    expect(page.get_by_role("alert")).to_contain_text("The grant was not revoked: reason:")
    page.get_by_label("Grant", exact=True).select_option(label="erin on demo (evaluation)")
    page.get_by_label("Reason (recorded in the audit log)").fill("evaluation finished")
    page.get_by_role("button", name="Revoke grant").click()
    expect(page.get_by_role("status")).to_have_text("The grant was revoked; it takes effect at the next query.")
    expect(page.get_by_role("row", name=re.compile(r"^erin demo")).get_by_role("cell").last).to_have_text("revoked")
    grants = {(g["researcher"], g["dataset"]): g for g in service.client("steward").get("/v1/grants").json()}
    assert (grants[("erin", "demo")]["revoked"], grants[("erin", "demo")]["adhoc"]) == (True, False)
    revoked = [e for e in service.enclave.audit.records() if e["event"] == "grant.revoked"]
    assert (revoked[-1]["researcher"], revoked[-1]["reasons"]) == ("erin", ["evaluation finished"])


def test_deliveries_versions_and_consent_changes_name_no_one(page: Page, service: Service,
                                                            demo_data: DemoData) -> None:
    service.enclave.version("demo")
    ids = _local_ids(demo_data, "school_district", 2)
    steward = service.client("steward")
    assert steward.post("/v1/datasets/demo/consents", json={"statements": [
        {"contributor": "school_district", "local_id": i, "purpose": "study", "given": "2026-01-01"}
        for i in ids]}).status_code == 201
    sign_in(page, service, "steward", "/steward/datasets/demo")
    deliveries = page.locator("#deliveries tbody tr")
    expect(deliveries).to_have_count(3)
    clinic = page.locator("#deliveries tbody tr", has_text="clinic")
    expect(clinic).to_contain_text("roster: clinic-roster.csv")
    expect(clinic).to_contain_text("clinic_visits: clinic-clinic_visits.parquet")
    expect(page.locator("#versions tbody tr").last).to_contain_text("demo generated")
    consent = page.locator("#consents tbody tr")
    expect(consent).to_have_count(1)
    expect(consent.get_by_role("cell")).to_have_text([re.compile(r"UTC$"), "imported", "study", "2", "0", "api",
                                                      "steward", service.enclave.version("demo").label])
    imported = [e for e in service.enclave.audit.records() if e["event"] == "consent.imported"]
    subjects = [subject for e in imported for subject, *_ in e["entries"]]
    body = page.content()
    for identifier in (*ids, *subjects):
        assert identifier not in body
    assert_accessible(page)


def test_the_quality_page_shows_figures_and_counts_the_borderline_pairs(page: Page, service: Service) -> None:
    report = service.client("steward").get("/v1/datasets/demo/quality").json()
    sign_in(page, service, "steward", "/steward/datasets/demo/quality")
    expect(page.locator("#summary")).to_contain_text(f"{report['records']} roster rows linked into "
                                                     f"{report['persons']} persons at threshold {report['threshold']}")
    clinic = report["contributors"]["clinic"]
    expect(page.locator("#contributors tr", has_text="clinic").get_by_role("cell").nth(1)).to_have_text(
        str(clinic["roster_rows"]))
    expect(page.locator("#contributors tr", has_text="clinic").get_by_role("cell").nth(2)).to_have_text(
        f"{clinic['match_rate'] * 100:.1f}%")
    expect(page.locator("#clusters tbody tr")).to_have_count(len(report["clusters_by_size"]))
    pairs = report["borderline_pairs"]
    assert pairs
    expect(page.locator("#borderline")).to_contain_text(f"{len(pairs)} pairs sampled near the threshold")
    expect(page.locator("#borderline")).to_contain_text("GET /v1/datasets/demo/quality")
    body = page.content()
    for pair in pairs:
        for side in (pair["left"], pair["right"]):
            for field in ("local_id", "last_name", "birth_date"):
                assert str(side[field]) not in body
    assert_accessible(page)


def test_a_researcher_cannot_open_the_stewards_pages(page: Page, service: Service) -> None:
    sign_in(page, service, "alice")
    for path in ("/steward/principals", "/steward/grants", "/steward/datasets/demo/quality"):
        response = page.goto(path)
        assert response is not None
        assert response.status == 403
        expect(page.get_by_role("heading", level=1)).to_have_text("Not for your role")
