"""End to end over real HTTP: a steward onboards a researcher, who checks and runs queries until the
steward revokes the grant and then the key; an auditor reads, pages, exports and verifies the log offline.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import duckdb
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from enclave.audit.verify import verify_lines
from tests.api.conftest import SQL, Service, assert_envelope

REFUSED_SQL = "SELECT person_id FROM children"
AFTER_REVOKE_SQL = "SELECT gender, COUNT(*) AS n FROM children GROUP BY gender"
COLUMN_FIELDS = {"type", "role", "description", "keys", "bounds"}
DATASET_FIELDS = {"name", "title", "description", "privacy_unit", "max_rows_per_unit", "max_groups_per_unit",
                  "suppression_threshold", "tables"}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    return response.json()


def budget_of(client: httpx.Client) -> dict[str, Any]:
    [entry] = ok(client.get("/v1/budget"))
    return entry


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def all_events(auditor: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    """Every matching record, page by page with `after` and `next_after`."""
    events, after = [], 0
    while True:
        page = ok(auditor.get("/v1/audit/events", params={**filters, "after": after, "limit": 3}))
        assert len(page["events"]) <= 3
        events += page["events"]
        if page["next_after"] is None:
            return events
        assert page["next_after"] > after
        after = page["next_after"]


def test_a_researcher_is_onboarded_queries_and_is_cut_off_and_the_auditor_verifies_it_all(service: Service,
                                                                                          demo_data):
    steward, auditor = service.client("steward"), service.client("auditor")

    # The steward creates carol, her key (shown once) and her grant.
    assert ok(steward.post("/v1/principals", json={"name": "carol", "roles": ["researcher"]}))["ok"] is True
    issued = ok(steward.post("/v1/keys", json={"principal": "carol"}), 201)
    assert issued["principal"] == "carol"
    key = issued["key"]
    assert key.startswith(f"enc_{issued['key_id']}_")
    secret = key.split("_", 2)[2]
    assert ok(steward.post("/v1/grants", json={"researcher": "carol", "dataset": "demo", "purpose": "flow study",
                                               "epsilon_cap": 3.0, "delta_cap": 1e-5}), 201)["ok"] is True
    carol = service.client(authorization=f"Bearer {key}")

    # Public metadata only.
    datasets = ok(carol.get("/v1/datasets"))
    assert "demo" in [d["name"] for d in datasets]
    assert all(set(d) == {"name", "title", "description"} for d in datasets)
    detail_response = carol.get("/v1/datasets/demo")
    detail = ok(detail_response)
    assert set(detail) == DATASET_FIELDS
    assert detail["privacy_unit"] == "person_id"
    columns = [c for table in detail["tables"].values() for c in table["columns"].values()]
    assert all(set(c) == COLUMN_FIELDS for c in columns)
    assert {c["role"] for c in columns} >= {"privacy_unit", "dimension", "measure"}
    assert any(c["keys"] for c in columns)
    assert any(c["bounds"] for c in columns)
    with duckdb.connect(str(demo_data.database), read_only=True) as db:
        for table in detail["tables"]:
            [(rows,)] = db.execute(f'SELECT count(*) FROM "{table}"').fetchall()
            assert rows > 1000
            assert str(rows) not in detail_response.text, f"{table}'s row count is in the metadata"
    rules = ok(carol.get("/v1/rules"))
    assert rules["sha256"] == service.enclave.rules.sha256
    assert rules["rules"]

    # Check: accepted, a plan splitting ε, nothing spent.
    before = budget_of(carol)
    assert before["epsilon_remaining"] == pytest.approx(3.0)
    assert before["active"] is True
    checked = ok(carol.post("/v1/queries/check", json={"dataset": "demo", "sql": SQL, "epsilon": 1.0}))
    assert checked["accepted"] is True
    assert checked["violations"] == []
    assert checked["rules_sha256"] == service.enclave.rules.sha256
    plan = checked["plan"]
    assert plan["epsilon"] == 1.0
    assert len(plan["quantities"]) >= 2
    assert sum(q["epsilon"] for q in plan["quantities"]) == pytest.approx(1.0)
    # split by weight: the count (also what the mean divides by) and the mean's sum 1 each, the count of
    # persons that only decides suppression the rules' suppression_weight
    assert {q["column"]: q["weight"] for q in plan["quantities"]} == {"n": 1.0, "absent__sum": 1.0, "__units": 0.2}
    assert all(q["epsilon"] == pytest.approx(q["weight"] / 2.2) for q in plan["quantities"])
    assert all(q["scale"] > 0 and q["mechanism"] for q in plan["quantities"])
    assert budget_of(carol) == before

    # Submit: a protected release.
    release = ok(carol.post("/v1/queries", json={"dataset": "demo", "sql": SQL, "epsilon": 1.0}))
    assert release["replayed"] is False
    assert release["epsilon"] == 1.0
    assert release["epsilon_remaining"] == pytest.approx(2.0)
    assert [c["name"] for c in release["columns"]] == ["school", "n", "absent"]
    assert release["rows"]
    for row in release["rows"]:
        for column, cell in zip(release["columns"], row, strict=True):
            if column["kind"] == "key":
                continue
            if cell["suppressed"]:  # the NULL school: nobody has it, so mostly suppressed (never dropped)
                assert row[0]["value"] is None
                assert cell["value"] is None
                continue
            assert cell["mechanism"]
            if cell["value"] is None:  # a mean whose noisy count came out not positive: no estimate, says why
                assert cell["reason"].startswith("no estimate")
                continue
            assert cell["scale"] > 0
            low, high = cell["interval"]
            assert low <= high
    assert budget_of(carol)["epsilon_remaining"] == pytest.approx(2.0)
    listed = ok(carol.get("/v1/queries"))
    assert {"query_id": release["query_id"], "status": "released", "dataset": "demo", "epsilon": 1.0} in listed
    fetched = ok(carol.get(f"/v1/queries/{release['query_id']}"))
    assert {k: v for k, v in fetched.items() if k != "replayed"} == {
        k: v for k, v in release.items() if k != "replayed"}  # its audit record and the budget left, as answered

    # The identical request replays the answer and spends nothing.
    again = ok(carol.post("/v1/queries", json={"dataset": "demo", "sql": SQL, "epsilon": 1.0}))
    assert again["replayed"] is True
    assert again["query_id"] == release["query_id"]
    assert again["rows"] == release["rows"]
    assert budget_of(carol)["epsilon_remaining"] == pytest.approx(2.0)

    # A refused query: the envelope with every violation located.
    error = assert_envelope(carol.post("/v1/queries", json={"dataset": "demo", "sql": REFUSED_SQL}), 400,
                            "check_failed")
    assert error["violations"]
    for violation in error["violations"]:
        assert {"code", "message", "line", "col", "highlight"} <= set(violation)
        assert violation["line"] == 1
        assert violation["col"] >= 1
        assert violation["highlight"]
    assert "restricted_column" in {v["code"] for v in error["violations"]}
    assert budget_of(carol)["epsilon_remaining"] == pytest.approx(2.0)

    # The steward revokes the grant: the next query is refused.
    assert ok(steward.post("/v1/grants/carol/demo/revoke", json={"reason": "study ended"}))["ok"] is True
    assert budget_of(carol)["active"] is False
    assert_envelope(carol.post("/v1/queries", json={"dataset": "demo", "sql": AFTER_REVOKE_SQL}), 403,
                    "grant_revoked")

    # The key was shown once: no GET route, for anyone, shows it again.
    gets = [(path, op) for path, ops in service.app.openapi()["paths"].items() for method, op in ops.items()
            if method == "get"]
    values = {"name": "demo", "query_id": release["query_id"], "template_id": "1"}
    for client in (carol, steward, auditor, service.client("multi")):
        for path, _ in gets:
            response = client.get(fill(path, values))
            assert secret not in response.text, path
            assert key not in response.text, path

    # The steward revokes the key: carol is no longer authenticated.
    assert ok(steward.post(f"/v1/keys/{issued['key_id']}/revoke"))["ok"] is True
    assert_envelope(carol.get("/v1/budget"), 401, "unauthenticated")
    assert_envelope(carol.post("/v1/queries", json={"dataset": "demo", "sql": SQL, "epsilon": 1.0}), 401,
                    "unauthenticated")

    # The auditor: filter, page, and find every event of the flow with the right actor.
    everything = all_events(auditor)
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    unpaged = ok(auditor.get("/v1/audit/events", params={"limit": 1000}))
    assert unpaged["next_after"] is None
    assert unpaged["events"] == everything
    by_carol = all_events(auditor, actor="carol")
    assert by_carol
    assert all(e["actor"] == "carol" for e in by_carol)
    assert by_carol == [e for e in everything if e["actor"] == "carol"]
    released = all_events(auditor, event="query.released")
    assert all(e["event"] == "query.released" for e in released)
    assert release["query_id"] in {e["query_id"] for e in released}
    assert released == [e for e in everything if e["event"] == "query.released"]

    def one(event: str, **fields: Any) -> dict[str, Any]:
        found = [e for e in everything if e["event"] == event and all(e.get(k) == v for k, v in fields.items())]
        assert len(found) == 1, (event, fields, found)
        return found[0]

    assert one("principal.roles", principal="carol")["actor"] == "steward"
    assert one("key.issued", principal="carol", key_id=issued["key_id"])["actor"] == "steward"
    assert one("grant.created", researcher="carol")["actor"] == "steward"
    assert one("query.charged", query_id=release["query_id"])["actor"] == "carol"
    assert one("query.released", query_id=release["query_id"])["actor"] == "carol"
    assert one("query.replayed", query_id=release["query_id"])["actor"] == "carol"
    assert one("query.refused", actor="carol", code="check_failed")["decision"] == "deny"
    assert one("query.refused", actor="carol", code="grant_revoked")["sql_submitted"] == AFTER_REVOKE_SQL
    revoked_grant = one("grant.revoked", researcher="carol")
    assert revoked_grant["actor"] == "steward"
    assert revoked_grant["reasons"] == ["study ended"]
    assert one("key.revoked", key_id=issued["key_id"])["actor"] == "steward"
    for record in everything:
        assert secret not in json.dumps(record)

    # Export and verify offline, with nothing but the export and the published public key.
    pem = auditor.get("/v1/audit/public-key")
    assert pem.status_code == 200
    public = load_pem_public_key(pem.content)
    assert isinstance(public, Ed25519PublicKey)
    export = auditor.get("/v1/audit/export")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = export.text.splitlines()
    report = verify_lines(lines, public)
    assert report.ok, report.summary()
    assert report.records >= len(everything)
    assert report.checkpoints >= 1
    entries = [json.loads(line) for line in lines]
    assert [e["record"] for e in entries if e["kind"] == "event"][:len(everything)] == [
        {k: v for k, v in e.items() if k != "hash"} for e in everything]
    tampered = [json.dumps({**entry, "record": {**entry["record"], "actor": "mallory"}})
                if entry["kind"] == "event" and entry["record"]["event"] == "query.released" else line
                for entry, line in zip(entries, lines, strict=True)]
    assert not verify_lines(tampered, public).ok
    assert not verify_lines(lines[:-1], public).ok  # the final checkpoint cut off: the tail is unsigned

    verified = ok(auditor.get("/v1/audit/verify"))
    assert verified["ok"] is True
    assert verified["problem"] is None
    assert verified["records"] >= len(everything)
    checkpoints = ok(auditor.get("/v1/audit/checkpoints"))
    assert checkpoints
    assert all({"checkpoint", "signature"} <= set(c) for c in checkpoints)
    assert checkpoints[-1]["checkpoint"]["size"] >= len(everything)


def test_check_serializes_cleanly(service: Service):
    """An accepted check's plan is a validated model: serializing the answer warns about nothing."""
    with warnings.catch_warnings(record=True) as caught:  # the service runs in this process: its warnings too
        warnings.simplefilter("always")
        response = service.client("alice").post("/v1/queries/check", json={"dataset": "demo", "sql": SQL})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    checked = response.json()
    assert checked["accepted"] is True
    assert checked["plan"]["epsilon"] == 1.0
    assert sum(q["epsilon"] for q in checked["plan"]["quantities"]) == pytest.approx(1.0)
    assert [str(w.message) for w in caught] == []


def test_check_shows_the_interval_each_output_will_have(service: Service):
    """Before anything is spent: a count's interval exactly (its accuracy at 95%), a mean's as a function
    of its group's count n, from the sum's and the count's accuracies and the bounds' midpoint 90."""
    sql = "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments GROUP BY school"
    checked = ok(service.client("alice").post("/v1/queries/check", json={"dataset": "demo", "sql": sql}))
    accuracy = {q["column"]: q["accuracy"] for q in checked["plan"]["quantities"]}
    assert (round(accuracy["n"], 2), round(accuracy["absent__sum"])) == (79.58, 7118)
    assert checked["plan"]["outputs"] == [
        {"column": "n", "kind": "count", "interval": "± 79.58"},
        {"column": "absent", "kind": "avg",
         "interval": "± about (7,118 + 79.6 · |mean - 90|) / n (n the group's count)"},
    ]
