"""One refusal code per cause on every route: checking, submitting and proposing a template answer the same
(status, code) for the same cause, over real HTTP. And ε that is not a finite number is named as such."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from enclave.api.errors import QUERY_STATUS, refused
from enclave.pipeline import QUERY_CODES, QueryError
from tests.api.conftest import Service, assert_envelope

ACCEPTED = "SELECT school, COUNT(*) AS n FROM enrollments GROUP BY school"
UNBOUNDED = "SELECT days_enrolled * 1000 + days_absent AS k, COUNT(*) AS n FROM enrollments GROUP BY 1"
EDGE_MESSAGE = "Invalid request: body.epsilon: epsilon must be a finite number above 0 and at most 100"


def _query_body(dataset: str, sql: str, epsilon: str) -> str:
    return f'{{"dataset": "{dataset}", "sql": "{sql}", "epsilon": {epsilon}}}'


def _template_body(dataset: str, sql: str, epsilon: str) -> str:
    return (f'{{"title": "same cause", "purpose": "one code per cause", "dataset": "{dataset}", "sql": "{sql}", '
            f'"epsilon": {epsilon}, "run_limit": 3}}')


# route -> how to send (dataset, sql, ε as raw JSON text, so that NaN and Infinity can be sent as Python's
# json module and so Starlette's request parser read them)
ROUTES: dict[str, tuple[str, Callable[[str, str, str], str]]] = {
    "check": ("/v1/queries/check", _query_body),
    "query": ("/v1/queries", _query_body),
    "template-propose": ("/v1/templates", _template_body),
}
# cause -> (dataset, sql, ε, status, code)
CAUSES: dict[str, tuple[str, str, str, int, str]] = {
    "epsilon_above_the_rules": ("demo", ACCEPTED, "50", 400, "epsilon_out_of_range"),
    "unbounded_group_keys": ("demo", UNBOUNDED, "0.5", 400, "unbounded_group_keys"),
    "unknown_dataset": ("nope", ACCEPTED, "0.5", 404, "not_found"),
    "epsilon_nan": ("demo", ACCEPTED, "NaN", 422, "invalid_request"),
    "epsilon_infinity": ("demo", ACCEPTED, "Infinity", 422, "invalid_request"),
    "epsilon_minus_infinity": ("demo", ACCEPTED, "-Infinity", 422, "invalid_request"),
    "epsilon_zero": ("demo", ACCEPTED, "0", 422, "invalid_request"),
    "epsilon_above_the_schema": ("demo", ACCEPTED, "1000", 422, "invalid_request"),
}


def _send(service: Service, route: str, dataset: str, sql: str, epsilon: str) -> httpx.Response:
    path, body = ROUTES[route]
    return service.client("alice").post(path, content=body(dataset, sql, epsilon),
                                        headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("cause", CAUSES)
def test_every_route_answers_a_cause_with_one_status_and_code(service: Service, cause: str) -> None:
    dataset, sql, epsilon, status, code = CAUSES[cause]
    answers = {route: _send(service, route, dataset, sql, epsilon) for route in ROUTES}
    seen = {route: (r.status_code, r.json()["error"]["code"]) for route, r in answers.items()}
    assert seen == dict.fromkeys(ROUTES, (status, code))
    messages = {assert_envelope(r, status, code)["message"] for r in answers.values()}
    assert len(messages) == 1, messages  # the same words too


@pytest.mark.parametrize("epsilon", ["NaN", "Infinity", "-Infinity", "0", "-1", "100.5"])
def test_an_epsilon_outside_the_schema_is_named_clearly(service: Service, epsilon: str) -> None:
    for route in ROUTES:
        error = assert_envelope(_send(service, route, "demo", ACCEPTED, epsilon), 422, "invalid_request")
        assert error["message"] == EDGE_MESSAGE


def test_the_rules_maximum_is_named_by_the_plan(service: Service) -> None:
    error = assert_envelope(_send(service, "check", "demo", ACCEPTED, "2.5"), 400, "epsilon_out_of_range")
    assert error["message"] == "ε must be a finite number above 0 and at most 2 per query."


def test_an_accepted_check_still_answers_200(service: Service) -> None:
    response = _send(service, "check", "demo", ACCEPTED, "0.5")
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] is True


@pytest.mark.parametrize("code", sorted(QUERY_CODES))
def test_every_query_code_has_one_status(code: str) -> None:
    """The mapping every route uses: 403 for the grant's refusals, the template states their own, else 400."""
    error: Any = refused(QueryError(code, QUERY_CODES[code]))
    assert (error.status, error.code) == (QUERY_STATUS.get(code, 400), code)
    if code.startswith("grant_") or code in {"no_grant", "templates_only"}:
        assert error.status == 403
