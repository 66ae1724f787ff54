"""The reviewer's JSON: every template with its latest audit record, and a template's review report."""

from __future__ import annotations

from enclave.rewrite import sampling_salt
from tests.api.conftest import assert_envelope
from tests.api.test_template_flow import TEMPLATE as FLOW

# the template flow's, on three lines, with a per-run ε above the default and runs that could use up a grant
TEMPLATE = {**FLOW, "sql": "SELECT school, COUNT(*) AS n\nFROM enrollments\nWHERE grade = $grade GROUP BY school",
            "epsilon": 1.5, "run_limit": 4}


def test_a_review_report_shows_slots_decisions_cost_and_warnings(service):
    alice, reviewer = service.client("alice"), service.client("reviewer")
    template_id = alice.post("/v1/templates", json=TEMPLATE).json()["id"]
    response = reviewer.get(f"/v1/templates/{template_id}/review")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "proposed"
    assert report["accepted"] is True
    assert report["slots"] == [{"name": "grade", "line": 3, "col": 15, "text": "$grade"}]
    assert report["tables"] == {"enrollments": ["grade", "school"]}
    assert report["epsilon_per_run"] == 1.5
    assert report["epsilon_total"] == 6.0
    assert report["run_limit"] == 4
    assert report["delta_per_run"] == 0.0
    assert {q["column"] for q in report["quantities"]} == {"n", "__units"}
    subjects = [d["subject"] for d in report["decisions"]]
    assert subjects[:3] == ["table enrollments", "output school", "output n"]
    assert all(d["rule"] for d in report["decisions"])
    # one table grouped by a dimension: the bound is the build's prepared filter, with no salt in it
    # (a join's per-query bound shows its keyed row-order salt as a slot: tests/templates/test_review.py)
    assert '"enrollments"."__r_1" <= 12' in report["rewritten_sql"]
    assert "HASH" not in report["rewritten_sql"]
    salt = sampling_salt(service.settings.secret("sampling"), service.enclave.version("demo").label)
    assert str(salt) not in response.text  # nor anywhere else in the answer
    # the grant caps are 5: 4 runs at 1.5 could use them up; 1.5 is above the default ε 1
    assert [w["code"] for w in report["warnings"]] == ["epsilon_above_default", "total_above_grant_cap",
                                                       "narrow_filter"]
    assert report["last_event"]["event"] == "template.proposed"
    assert report["last_event"]["actor"] == "alice"


def test_the_review_listing_names_each_templates_latest_decision(service):
    alice, reviewer = service.client("alice"), service.client("reviewer")
    template_id = alice.post("/v1/templates", json={**TEMPLATE, "epsilon": 0.5, "run_limit": 2}).json()["id"]
    decided = reviewer.post(f"/v1/templates/{template_id}/reject", json={"reason": "too narrow a slice"})
    assert decided.status_code == 200, decided.text
    listed = reviewer.get("/v1/templates/reviews")
    assert listed.status_code == 200, listed.text
    mine = next(t for t in listed.json() if t["id"] == template_id)
    assert mine["status"] == "rejected"
    assert mine["last_event"]["event"] == "template.rejected"
    assert mine["last_event"]["actor"] == "reviewer"
    assert mine["last_event"]["reasons"] == ["too narrow a slice"]
    assert mine["last_event"]["time"]
    report = reviewer.get(f"/v1/templates/{template_id}/review").json()
    assert [w["code"] for w in report["warnings"]] == ["narrow_filter"]


def test_only_reviewers_read_review_reports(service):
    assert_envelope(service.client("alice").get("/v1/templates/reviews"), 403, "forbidden")
    assert_envelope(service.client("alice").get("/v1/templates/1/review"), 403, "forbidden")
    assert_envelope(service.client("reviewer").get("/v1/templates/999999/review"), 404, "not_found")
    assert_envelope(service.client().get("/v1/templates/reviews"), 401, "unauthenticated")
