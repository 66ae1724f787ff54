"""Weights and accuracy targets over HTTP: the check shows what they cost, the query spends exactly that,
the audit record keeps them, and the same query at other weights is another release."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import Service, assert_envelope

SQL = "SELECT school, COUNT(*) AS n, SUM(days_absent) AS days FROM enrollments GROUP BY school ORDER BY school"


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def check(client: httpx.Client, **body: Any) -> dict[str, Any]:
    return ok(client.post("/v1/queries/check", json={"dataset": "demo", "sql": SQL, **body}))


def test_check_splits_epsilon_by_the_weights(service: Service):
    alice = service.client("alice")
    even, weighted = (
        {q["column"]: q for q in check(alice, epsilon=1.0, **body)["plan"]["quantities"]}
        for body in ({}, {"weights": {"n": 3}}))
    assert weighted["n"]["weight"] == 3.0
    assert weighted["n"]["accuracy"] < even["n"]["accuracy"]
    assert weighted["days"]["accuracy"] > even["days"]["accuracy"]
    assert sum(q["epsilon"] for q in weighted.values()) == pytest.approx(1.0)


def test_check_shows_the_epsilon_accuracy_targets_cost(service: Service):
    checked = check(service.client("alice"), accuracy={"n": 100.0})
    plan = checked["plan"]
    [met] = plan["accuracy_targets"]
    assert met["column"] == "n"
    assert met["target"] == 100.0
    assert met["accuracy"] == pytest.approx(100.0, rel=1e-6)
    assert met["accuracy"] <= 100.0
    assert 0 < plan["epsilon"] < service.enclave.rules.privacy.max_epsilon


@pytest.mark.parametrize(("body", "status", "code", "named"), [
    ({"weights": {"school": 2.0}}, 422, "unknown_output_column", "school"),
    ({"weights": {"nope": 2.0}}, 422, "unknown_output_column", "nope"),
    ({"weights": {"n": 0}}, 422, "invalid_weight", "n"),
    ({"accuracy": {"nope": 5.0}}, 422, "unknown_output_column", "nope"),
    ({"accuracy": {"n": 5.0}, "epsilon": 1.0}, 422, "epsilon_and_accuracy", None),
    ({"accuracy": {"n": 0.01}}, 400, "accuracy_unreachable", "ε ="),
])
def test_check_and_query_refuse_bad_weights_and_targets(service: Service, body, status, code, named):
    alice = service.client("alice")
    for path in ("/v1/queries/check", "/v1/queries"):
        error = assert_envelope(alice.post(path, json={"dataset": "demo", "sql": SQL, **body}), status, code)
        if named is not None:
            assert named in error["message"]


def test_a_query_with_targets_spends_what_its_check_showed_and_records_it(service: Service):
    alice, auditor = service.client("alice"), service.client("auditor")
    targets = {"days": 15_000.0}
    cost = check(alice, accuracy=targets, weights={"days": 2})["plan"]["epsilon"]
    before = ok(alice.get("/v1/budget"))[0]["epsilon_remaining"]
    release = ok(alice.post("/v1/queries", json={"dataset": "demo", "sql": SQL, "accuracy": targets,
                                                 "weights": {"days": 2}, "mode": "sync"}))
    assert release["epsilon"] == cost
    assert release["epsilon_remaining"] == pytest.approx(before - cost)
    [charged] = [e for e in ok(auditor.get("/v1/audit/events", params={"event": "query.charged", "limit": 1000}))[
        "events"] if e["query_id"] == release["query_id"]]
    assert charged["weights"] == {"days": 2.0}
    assert charged["accuracy"] == targets
    assert charged["plan"]["accuracy_targets"][0]["accuracy"] <= 15_000.0
    assert {q["column"]: q["weight"] for q in charged["plan"]["quantities"]}["days"] == 2.0


def test_the_same_query_at_other_weights_is_another_release(service: Service):
    alice = service.client("alice")
    sql = "SELECT gender, COUNT(*) AS n, SUM(birth_year) AS s FROM children GROUP BY gender ORDER BY gender"

    def run(**body: Any) -> dict[str, Any]:
        return ok(alice.post("/v1/queries", json={"dataset": "demo", "sql": sql, "epsilon": 0.2, **body}))

    first, weighted = run(), run(weights={"n": 2.0})
    assert not weighted["replayed"]
    assert weighted["query_id"] != first["query_id"]
    again = run(weights={"n": 2})  # the same weights, written otherwise: the same release
    assert again["replayed"]
    assert again["query_id"] == weighted["query_id"]
    assert run()["query_id"] == first["query_id"]

