"""Onboarding over real HTTP: a steward delivers files (multipart), reads the quality report, records and
revokes consent, re-links and re-keys; each answer names the new data version, and a researcher's
queries follow it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from enclave.catalog.demo import contributor_deliveries
from tests.api.conftest import Service, assert_envelope, fresh_home, running_service
from tests.intake.conftest import DATASET, consented_home

CHILDREN = 1_500
COUNT = "SELECT COUNT(DISTINCT person_id) AS n FROM children"


@pytest.fixture(scope="module")
def onboarding(tmp_path_factory, demo_data) -> Iterator[Service]:
    home = consented_home(fresh_home(tmp_path_factory.mktemp("onboarding-home"), demo_data))
    with running_service(home, datasets_dir=home / "datasets") as running:
        yield running


@pytest.fixture(scope="module")
def files(onboarding: Service):
    return contributor_deliveries(onboarding.enclave.manifest(DATASET), CHILDREN, 11)


def multipart(delivered) -> dict:
    return {"data": {"contributor": "school_district", "kinds": [f.kind for f in delivered],
                     "sha256": [f.digest for f in delivered]},
            "files": [("files", (f.name, f.content)) for f in delivered]}


def test_a_steward_onboards_a_delivery_and_consent_governs_the_researchers_queries(onboarding: Service, files):
    delivered, truth = files
    steward, alice = onboarding.client("steward"), onboarding.client("alice")
    response = steward.post(f"/v1/datasets/{DATASET}/deliveries", **multipart(delivered["school_district"]))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["data_version"].startswith("v1-")
    assert [f["kind"] for f in body["files"]] == [f.kind for f in delivered["school_district"]]
    assert body["linkage"]["records"] == sum(1 for c, _, _ in truth if c == "school_district")

    report = steward.get(f"/v1/datasets/{DATASET}/quality").json()
    assert report["contributors"]["school_district"]["roster_rows"] == body["linkage"]["records"]
    page = steward.get(f"/v1/datasets/{DATASET}/quality.html")
    assert page.headers["content-type"].startswith("text/html")
    assert "<table>" in page.text

    school = [local_id for c, local_id, _ in truth if c == "school_district"]
    given = steward.post(f"/v1/datasets/{DATASET}/consents", json={"statements": [
        {"contributor": "school_district", "local_id": i, "purpose": "study", "given": "2024-01-01"} for i in school]})
    assert given.status_code == 201, given.text
    steward.post("/v1/grants", json={"researcher": "alice", "dataset": DATASET, "purpose": "study",
                                     "epsilon_cap": 10, "delta_cap": 1e-6}).raise_for_status()
    first = alice.post("/v1/queries", json={"dataset": DATASET, "sql": COUNT, "epsilon": 1})
    assert first.status_code == 200, first.text
    assert first.json()["data_version"] == given.json()["data_version"]

    revoked = steward.post(f"/v1/datasets/{DATASET}/consents/revoke", json={
        "contributor": "school_district", "local_id": school[0], "purpose": "study"})
    assert revoked.status_code == 200, revoked.text
    second = alice.post("/v1/queries", json={"dataset": DATASET, "sql": COUNT, "epsilon": 1}).json()
    assert second["data_version"] == revoked.json()["data_version"] != first.json()["data_version"]
    charged = [e for e in onboarding.enclave.audit.records() if e["event"] == "query.charged"]
    assert charged[-1]["consent"]["persons"] == charged[-2]["consent"]["persons"] - 1

    relinked = steward.post(f"/v1/datasets/{DATASET}/linkage", json={"threshold": 0.8})
    assert relinked.status_code == 200
    assert relinked.json()["linkage"]["threshold"] == 0.8
    rekeyed = steward.post(f"/v1/datasets/{DATASET}/rekey")
    assert rekeyed.status_code == 200
    assert rekeyed.json()["data_version"] != relinked.json()["data_version"]


def test_a_malformed_delivery_is_a_400_naming_file_row_and_column(onboarding: Service, files):
    delivered, _ = files
    roster = delivered["school_district"][0]
    lines = roster.content.decode().splitlines()
    cells = lines[4].split(",")
    cells[3] = "2012-02-30"
    broken = roster.__class__(roster.kind, roster.name, "\n".join([*lines[:4], ",".join(cells), *lines[5:]]).encode())
    response = onboarding.client("steward").post(f"/v1/datasets/{DATASET}/deliveries", **multipart([broken]))
    error = assert_envelope(response, 400, "delivery_refused")
    assert error["problems"] == [{"code": "bad_value", "file": roster.name, "row": 5, "column": "birth_date",
                                  "message": "row 5, column birth_date: the value is not a date as YYYY-MM-DD"}]
    assert "2012-02-30" not in response.text
    mismatch = multipart([roster])
    mismatch["data"]["sha256"] = ["0" * 64]
    error = assert_envelope(onboarding.client("steward").post(f"/v1/datasets/{DATASET}/deliveries", **mismatch),
                            400, "delivery_refused")
    assert error["problems"][0]["code"] == "checksum_mismatch"
    unknown = onboarding.client("steward").post(f"/v1/datasets/{DATASET}/consents", json={"statements": [
        {"contributor": "clinic", "local_id": "C0000000", "purpose": "study", "given": "2024-01-01"}]})
    assert assert_envelope(unknown, 400, "consent_refused")["problems"][0]["code"] == "unknown_local_id"
    assert_envelope(onboarding.client("steward").get("/v1/datasets/nope/quality"), 404, "not_found")
    assert_envelope(onboarding.client("alice").get(f"/v1/datasets/{DATASET}/quality"), 403, "forbidden")
