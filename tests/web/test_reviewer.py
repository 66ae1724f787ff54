"""The reviewer's pages in a real browser: the queue, a template's review report, decisions with a required
reason (an empty one refused), and the researcher running the approved template from its form."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.api.conftest import Service
from tests.web.browser import assert_accessible, screenshot
from tests.web.conftest import sign_in

TEMPLATE: dict[str, Any] = {
    "title": "Enrollment by school for one grade",
    "purpose": "How many children each school enrolls in a grade, for planning.",
    "dataset": "demo",
    "sql": "SELECT school, COUNT(*) AS n\nFROM enrollments\nWHERE grade = $grade\nGROUP BY school",
    "parameters": [{"name": "grade", "type": "integer", "min": 0, "max": 12, "description": "0 is kindergarten"}],
    "epsilon": 0.5,
    "run_limit": 3,
}


def _propose(service: Service, **changes: Any) -> int:
    response = service.client("alice").post("/v1/templates", json={**TEMPLATE, **changes})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _decide(page: Page, action: str, reason: str) -> None:
    """Type a reason and press the decision's button with the keyboard."""
    page.get_by_label(re.compile(f"^Reason to {action}")).fill(reason)
    page.get_by_role("button", name=action.capitalize(), exact=True).focus()
    page.keyboard.press("Enter")
    page.wait_for_load_state()


def test_a_reviewer_approves_and_the_researcher_runs_it_from_its_form(page: Page, service: Service) -> None:
    template_id = _propose(service)
    sign_in(page, service, "reviewer")
    row = page.locator("table.queue tbody tr", has=page.get_by_role("link", name=f"#{template_id} "))
    expect(row.locator("td")).to_have_text(["alice", TEMPLATE["purpose"], "demo", "0.5", "3", "none",
                                            re.compile(r"^\d+ s \(since .* UTC\)$")])
    assert_accessible(page)
    screenshot(page, "reviewer-home")

    row.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Template #{template_id}: {TEMPLATE['title']}")
    mark = page.locator("pre.sql mark")
    expect(mark).to_have_text("$grade")
    assert mark.evaluate("m => m.closest('.line').dataset.line") == "3"
    expect(page.locator(".cost")).to_have_text("ε 0.5, δ 0")
    expect(page.locator("ul.warnings li")).to_have_count(1)
    expect(page.locator("ul.warnings li")).to_contain_text("narrow_filter")
    decisions = page.locator("table.decisions tbody tr")
    expect(decisions.first.locator("th")).to_have_text("table enrollments")
    expect(decisions.nth(2)).to_contain_text("COUNT")
    expect(page.locator("pre.rewritten")).to_contain_text('"enrollments"."__r_1" <= 12')  # the prepared bound
    assert_accessible(page)
    screenshot(page, "reviewer-template")

    _decide(page, "approve", "aggregate counts over public keys, a small ε and a few runs")
    expect(page.get_by_role("status").first).to_have_text(re.compile("^Approved"))
    expect(page.locator(".status")).to_have_text("approved")
    expect(page.get_by_role("button", name="Revoke")).to_be_visible()
    page.goto("/reviewer")
    decided = page.locator("table.decided tbody tr", has=page.get_by_role("link", name=f"#{template_id} "))
    expect(decided.locator("td").nth(0)).to_have_text("approved")
    expect(decided.locator("td").nth(1)).to_have_text("reviewer")
    expect(decided.locator("td").nth(3)).to_have_text("aggregate counts over public keys, a small ε and a few runs")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, service, "alice", "/researcher/templates")
    grade = page.get_by_label(re.compile("^grade"))
    for attribute, value in (("type", "number"), ("min", "0"), ("max", "12"), ("step", "1")):
        assert grade.get_attribute(attribute) == value
    grade.fill("3")
    page.get_by_role("button", name=f"Run “{TEMPLATE['title']}”").click()
    expect(page.get_by_role("status")).to_have_text(f"Released by the template “{TEMPLATE['title']}”.")
    expect(page.locator(".spent")).to_have_text("ε 0.5, δ 0")
    expect(page.locator("table.release tbody tr")).to_have_count(21)
    expect(page.locator("svg.chart")).to_have_count(1)
    assert_accessible(page)


def test_an_empty_reason_is_refused(page: Page, service: Service) -> None:
    template_id = _propose(service, title="Enrollment by school, once more")
    sign_in(page, service, "reviewer", f"/reviewer/templates/{template_id}")
    reason = page.get_by_label("Reason to reject (recorded in the audit log)")
    assert reason.get_attribute("required") is not None  # the browser asks first; the server refuses anyway
    _decide(page, "reject", "   ")
    expect(page.get_by_role("alert")).to_have_text("Give a reason for your decision (at least 3 characters): it "
                                                   "is recorded in the audit log with it.")
    expect(page.locator(".status")).to_have_text("proposed")
    status = service.client("reviewer").get(f"/v1/templates/{template_id}").json()["status"]
    assert status == "proposed"
    assert_accessible(page)

    _decide(page, "reject", "the same question as an approved template")
    expect(page.get_by_role("status").first).to_have_text(re.compile("^Rejected"))
    expect(page.locator(".status")).to_have_text("rejected")
    expect(page.get_by_text("no decision is left to take")).to_be_visible()


def test_a_researcher_cannot_open_a_review_report(page: Page, service: Service) -> None:
    template_id = _propose(service, title="Enrollment by school, a third time")
    sign_in(page, service, "alice")
    response = page.goto(f"/reviewer/templates/{template_id}")
    assert response is not None
    assert response.status == 403
    assert "SELECT" not in page.content()


def test_typed_forms_refused_values_csrf_and_revoke(page: Page, service: Service) -> None:
    reviewer = service.client("reviewer")
    schools = ["Alder Elementary", "Birch Elementary"]
    by_school = _propose(service, title="Enrollment by grade for one school", run_limit=2,
                         sql="SELECT grade, COUNT(*) AS n FROM enrollments WHERE school = $school GROUP BY grade",
                         parameters=[{"name": "school", "type": "string", "choices": schools}])
    by_grade = _propose(service, title="Enrollment by school for a grade, revocable")
    for template_id in (by_school, by_grade):
        assert reviewer.post(f"/v1/templates/{template_id}/approve", json={"reason": "fine"}).status_code == 200
    sign_in(page, service, "alice", "/researcher/templates")
    school = page.locator(f"#t{by_school}-school")
    expect(school.locator("option")).to_have_text(schools)
    assert school.evaluate("e => e.tagName") == "SELECT"
    assert_accessible(page)

    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    # past the browser's own min and max: the route refuses it, and the form says why
    refused = page.request.post(f"/researcher/templates/{by_grade}/run", form={"csrf": csrf, "p_grade": "13"})
    assert refused.status == 422
    assert '<p class="problem" role="alert">grade must be at least 0 and at most 12</p>' in refused.text()
    forged = page.request.post("/researcher/query", form={"sql": "SELECT COUNT(*) AS n FROM children",
                                                          "dataset": "demo", "action": "run"})
    assert forged.status == 403
    assert "Form refused" in forged.text()

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, service, "reviewer", f"/reviewer/templates/{by_grade}")
    _decide(page, "revoke", "replaced by a template over a range of grades")
    expect(page.get_by_role("status").first).to_have_text(re.compile("^Revoked"))
    expect(page.locator(".status")).to_have_text("revoked")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, service, "alice", "/researcher/templates")
    expect(page.get_by_role("heading", name="Enrollment by grade for one school")).to_be_visible()
    expect(page.get_by_role("heading", name="Enrollment by school for a grade, revocable")).to_have_count(0)
