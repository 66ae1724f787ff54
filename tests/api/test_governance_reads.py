"""The steward's and auditor's lists over real HTTP: principals and keys, grants with ε and δ used, a
dataset's deliveries and data versions, its consent history, and each grant's budget over time.

Each answers its role only, and none holds a secret, a key's digest, a local ID or a person's pseudonym.
"""

from __future__ import annotations

import csv
import io

import pytest

from enclave.catalog.demo import DemoData
from tests.api.conftest import SQL, Service, assert_envelope

ROUTES = ("/v1/principals", "/v1/grants", "/v1/datasets/demo/deliveries", "/v1/datasets/demo/consents/history")


def _local_ids(demo_data: DemoData, contributor: str, n: int) -> list[str]:
    """The first `n` local IDs of a contributor's delivered roster (the test plays the steward who has it)."""
    text = (demo_data.directory / "deliveries" / contributor / f"{contributor}-roster.csv").read_text()
    return [row["local_id"] for row, _ in zip(csv.DictReader(io.StringIO(text)), range(n), strict=False)]


@pytest.mark.parametrize("path", ROUTES)
def test_the_steward_lists_are_for_stewards_only(service: Service, path: str) -> None:
    assert_envelope(service.client("alice").get(path), 403, "forbidden")
    assert_envelope(service.client("auditor").get(path), 403, "forbidden")
    assert_envelope(service.client().get(path), 401, "unauthenticated")


def test_the_budget_history_is_for_auditors_only(service: Service) -> None:
    assert_envelope(service.client("steward").get("/v1/audit/budget-history"), 403, "forbidden")


def test_principals_are_listed_with_their_keys_and_no_secret(service: Service) -> None:
    response = service.client("steward").get("/v1/principals")
    assert response.status_code == 200, response.text
    found = {p["name"]: p for p in response.json()}
    assert {"alice", "bob", "reviewer", "steward", "auditor", "multi"} <= set(found)
    assert found["multi"]["roles"] == ["auditor", "researcher"]
    alice = found["alice"]["keys"]
    assert [k["key_id"] for k in alice] == [service.keys["alice"].split("_")[1], service.revoked_key.split("_")[1]]
    assert [k["revoked"] for k in alice] == [False, True]
    assert set(alice[0]) == {"key_id", "issued", "issued_seq", "revoked"}
    assert alice[0]["issued"].startswith("20")
    record = service.client("auditor").get("/v1/audit/events", params={"after": alice[0]["issued_seq"] - 1,
                                                                         "limit": 1}).json()["events"][0]
    assert (record["event"], record["key_id"], record["time"]) == ("key.issued", alice[0]["key_id"], alice[0]["issued"])
    for secret in (service.keys["alice"].split("_", 2)[2], record["digest"]):
        assert secret not in response.text


def test_grants_show_their_caps_and_what_their_charges_used(service: Service) -> None:
    steward = service.client("steward")
    released = service.client("alice").post("/v1/queries", json={"dataset": "demo", "sql": SQL, "epsilon": 0.5})
    assert released.status_code == 200, released.text
    assert steward.post("/v1/grants/bob/demo/revoke", json={"reason": "study ended"}).status_code == 200
    grants = {(g["researcher"], g["dataset"]): g for g in steward.get("/v1/grants").json()}
    alice, bob = grants[("alice", "demo")], grants[("bob", "demo")]
    assert (alice["epsilon_cap"], alice["epsilon_used"], alice["epsilon_left"]) == (5.0, 0.5, 4.5)
    assert alice["delta_cap"] == 1e-5
    assert (alice["purpose"], alice["adhoc"], alice["active"], alice["revoked"]) == ("study", True, True, False)
    assert (bob["revoked"], bob["active"], bob["epsilon_used"]) == (True, False, 0.0)
    budget = service.client("alice").get("/v1/budget").json()[0]
    assert alice["epsilon_left"] == budget["epsilon_remaining"]


def test_the_budget_history_steps_up_with_each_charge(service: Service) -> None:
    alice = service.client("alice")
    for epsilon in (0.25, 0.75):
        sql = f"SELECT gender, COUNT(*) AS n FROM children GROUP BY gender -- {epsilon}"
        assert alice.post("/v1/queries", json={"dataset": "demo", "sql": sql, "epsilon": epsilon}).status_code == 200
    auditor = service.client("auditor")
    history = auditor.get("/v1/audit/budget-history", params={"researcher": "alice"})
    assert history.status_code == 200, history.text
    (grant,) = history.json()
    assert (grant["researcher"], grant["dataset"], grant["epsilon_cap"], grant["delta_cap"]) == ("alice", "demo",
                                                                                                  5.0, 1e-5)
    totals = [c["epsilon_total"] for c in grant["charges"]]
    assert totals == sorted(totals)
    assert [c["epsilon"] for c in grant["charges"]][-2:] == [0.25, 0.75]
    grants = service.client("steward").get("/v1/grants").json()
    spent = {(g["researcher"], g["dataset"]): g["epsilon_used"] for g in grants}
    assert totals[-1] == spent[("alice", "demo")]
    everyone = {(g["researcher"], g["revoked"] is not None) for g in auditor.get("/v1/audit/budget-history").json()}
    assert {("alice", False), ("multi", False)} <= everyone


def test_deliveries_and_data_versions_of_the_demo(service: Service) -> None:
    service.enclave.version("demo")  # the demo's first version is recorded when it is first used
    response = service.client("steward").get("/v1/datasets/demo/deliveries")
    assert response.status_code == 200, response.text
    body = response.json()
    first = body["versions"][-1]
    assert (first["version"], first["reason"], first["actor"]) == (1, "demo generated", "demo-steward")
    assert body["data_version"] == body["versions"][0]["data_version"]
    assert sorted(d["contributor"] for d in body["deliveries"]) == ["after_school", "clinic", "school_district"]
    clinic = next(d for d in body["deliveries"] if d["contributor"] == "clinic")
    assert [f["kind"] for f in clinic["files"]] == ["roster", "clinic_visits"]
    assert all(f["rows"] > 0 and len(f["sha256"]) == 64 for f in clinic["files"])
    assert clinic["data_version"] == first["data_version"]
    assert clinic["linkage"]["persons"] > 0
    assert_envelope(service.client("steward").get("/v1/datasets/nope/deliveries"), 404, "not_found")


def test_consent_history_counts_changes_and_names_no_one(service: Service, demo_data: DemoData) -> None:
    steward = service.client("steward")
    ids = _local_ids(demo_data, "clinic", 3)
    given = steward.post("/v1/datasets/demo/consents", json={"statements": [
        {"contributor": "clinic", "local_id": ids[0], "purpose": "study", "given": "2026-01-01"}]})
    assert given.status_code == 201, given.text
    assert steward.post("/v1/datasets/demo/consents/revoke", json={
        "contributor": "clinic", "local_id": ids[0], "purpose": "study"}).status_code == 200
    imported = steward.post("/v1/datasets/demo/consents/import", data={"contributor": "clinic"}, files={
        "file": ("consents.csv", "local_id,purpose,action,given,expires\n"
                 f"{ids[1]},study,give,2026-01-01,\n{ids[2]},outreach,revoke,,\n")})
    assert imported.status_code == 201, imported.text
    response = steward.get("/v1/datasets/demo/consents/history")
    assert response.status_code == 200, response.text
    history = response.json()
    assert [(h["event"], h["purposes"], h["statements"], h["revocations"]) for h in history] == [
        ("consent.imported", ["outreach", "study"], 2, 1), ("consent.revoked", ["study"], 1, 1),
        ("consent.given", ["study"], 1, 0)]
    assert history[0]["data_version"] == imported.json()["data_version"]
    assert (history[1]["contributor"], history[1]["actor"], history[0]["source"]) == ("clinic", "steward",
                                                                                      "consents.csv")
    subjects = [e["subject"] for e in service.enclave.audit.records() if e["event"] == "consent.given"]
    for identifier in (*ids, *subjects):
        assert identifier not in response.text
    versions = steward.get("/v1/datasets/demo/deliveries").json()
    assert "consent" not in " ".join(v["reason"] for v in versions["versions"])
    assert versions["data_version"] == history[0]["data_version"]
    assert len(steward.get("/v1/datasets/demo/consents/history", params={"limit": 1}).json()) == 1
