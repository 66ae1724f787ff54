"""The template half of the full flow, over real HTTP: a researcher proposes, a reviewer approves, the
researcher runs it with parameters, and the auditor exports the log and verifies it offline."""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from enclave.audit.verify import verify_lines
from tests.api.conftest import assert_envelope

TEMPLATE = {
    "title": "Enrollment by school for one grade",
    "purpose": "How many children each school enrolls in a grade, for planning.",
    "dataset": "demo",
    "sql": "SELECT school, COUNT(*) AS n FROM enrollments WHERE grade = $grade GROUP BY school",
    "parameters": [{"name": "grade", "type": "integer", "min": 0, "max": 12}],
    "epsilon": 0.25,
    "run_limit": 3,
}


def test_propose_review_run_and_audit_a_template(service):
    alice, reviewer, auditor = service.client("alice"), service.client("reviewer"), service.client("auditor")
    proposed = alice.post("/v1/templates", json=TEMPLATE)
    assert proposed.status_code == 201, proposed.text
    template = proposed.json()
    assert template["status"] == "proposed"
    assert template["proposer"] == "alice"
    template_id = template["id"]

    assert_envelope(alice.post(f"/v1/templates/{template_id}/runs", json={"parameters": {"grade": 3}}), 409,
                    "template_not_approved")
    assert_envelope(alice.post(f"/v1/templates/{template_id}/approve", json={"reason": "mine"}), 403, "forbidden")
    approved = reviewer.post(f"/v1/templates/{template_id}/approve", json={"reason": "aggregate, bounded, public keys"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["approvals"] == ["reviewer"]

    before = alice.get("/v1/budget").json()[0]["epsilon_remaining"]
    run = alice.post(f"/v1/templates/{template_id}/runs", json={"parameters": {"grade": 3}})
    assert run.status_code == 200, run.text
    release = run.json()
    assert release["epsilon"] == 0.25
    assert [c["name"] for c in release["columns"]] == ["school", "n"]
    assert alice.get("/v1/budget").json()[0]["epsilon_remaining"] == before - 0.25
    assert_envelope(alice.post(f"/v1/templates/{template_id}/runs", json={"parameters": {"grade": 13}}), 422,
                    "invalid_parameters")
    assert_envelope(alice.post(f"/v1/templates/{template_id}/runs", json={"parameters": {"grade": "3 OR 1=1"}}),
                    422, "invalid_parameters")

    revoked = reviewer.post(f"/v1/templates/{template_id}/revoke", json={"reason": "superseded"})
    assert revoked.json()["status"] == "revoked"
    assert_envelope(alice.post(f"/v1/templates/{template_id}/runs", json={"parameters": {"grade": 4}}), 409,
                    "template_not_approved")

    events = auditor.get("/v1/audit/events", params={"limit": 1000}).json()["events"]
    mine = [(e["event"], e["actor"]) for e in events if e.get("template_id") == template_id]
    assert mine == [("template.proposed", "alice"), ("template.approved", "reviewer"), ("template.run", "alice"),
                    ("template.revoked", "reviewer")]
    exported = auditor.get("/v1/audit/export")
    public = load_pem_public_key(auditor.get("/v1/audit/public-key").content)
    report = verify_lines(exported.text.splitlines(), public)
    assert report.ok, report.problem
