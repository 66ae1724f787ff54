"""Edges of the HTTP service: size limit, malformed input, unknown things, methods, rate limit, internal
failures, production settings, bounds, time zones, documented responses; and the enclave bugs still open
at the edge, each now tested for its fixed behaviour.

A 500 makes uvicorn close the connection after the response, so requests here go out on a fresh
connection each (`call`), never a pooled client.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from enclave.settings import Settings
from enclave.templates import workflow
from enclave.templates.model import TemplateSpec
from tests.api.conftest import SQL, TEST_CHILDREN, Service, assert_envelope, fresh_home, running_service

PEPPER = "p" * 32
SQLITE_MAX_INTEGER = 2**63 - 1
TEMPLATE = {"title": "Enrolment by school", "purpose": "edges", "dataset": "demo",
            "sql": "SELECT school, COUNT(*) AS n FROM enrollments WHERE school_year = $year GROUP BY school",
            "parameters": [{"name": "year", "type": "integer", "min": 2019, "max": 2024}], "epsilon": 0.25,
            "run_limit": 5}


def call(service: Service, who: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if who is not None:
        headers["Authorization"] = f"Bearer {service.keys[who]}"
    return httpx.request(method, service.base_url + path, headers=headers, timeout=60, **kwargs)


def oversized_body(service: Service) -> bytes:
    body = json.dumps({"dataset": "demo", "sql": "x" * service.settings.max_body_bytes}).encode()
    assert len(body) > service.settings.max_body_bytes
    return body


# --- request size ------------------------------------------------------------------------------------

def test_a_streamed_body_over_the_limit_is_refused_with_the_envelope(service: Service):
    body = oversized_body(service)

    def chunks():
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    response = call(service, "alice", "POST", "/v1/queries", content=chunks(),
                    headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_envelope(response, 413, "request_too_large")


def test_a_body_over_the_limit_is_refused_before_it_reaches_the_route(service: Service):
    before = len(service.enclave.audit.records())
    response = call(service, "alice", "POST", "/v1/queries", content=oversized_body(service),
                    headers={"Content-Type": "application/json"})
    assert response.request.headers["content-length"] == str(len(oversized_body(service)))
    assert response.status_code == 413
    assert len(service.enclave.audit.records()) == before  # nothing ran, nothing was charged


def test_a_body_over_the_limit_is_refused_with_the_envelope(service: Service):
    response = call(service, "alice", "POST", "/v1/queries", content=oversized_body(service),
                    headers={"Content-Type": "application/json"})
    assert response.request.headers["content-length"] == str(len(oversized_body(service)))
    assert_envelope(response, 413, "request_too_large")


def test_a_body_just_under_the_limit_is_read_and_validated(service: Service):
    body = json.dumps({"dataset": "demo", "sql": "x" * (service.settings.max_body_bytes - 100)}).encode()
    assert len(body) <= service.settings.max_body_bytes
    response = call(service, "alice", "POST", "/v1/queries", content=body,
                    headers={"Content-Type": "application/json"})
    error = assert_envelope(response, 422, "invalid_request")  # sql is over its 20,000 characters
    assert "sql" in error["message"]


# --- malformed input, unknown things, methods ------------------------------------------------------------

@pytest.mark.parametrize("content", [b'{"dataset": "demo", "sql": ', b"not json", b"[1, 2]", b'"a string"', b"",
                                     b'{"dataset": "demo", "sql": "SELECT 1", "extra": true}'],
                         ids=["truncated", "not-json", "array", "string", "empty", "unknown-field"])
def test_malformed_json_is_an_invalid_request(service: Service, content: bytes):
    response = call(service, "alice", "POST", "/v1/queries", content=content,
                    headers={"Content-Type": "application/json"})
    assert_envelope(response, 422, "invalid_request")


def test_invalid_query_parameters_are_an_invalid_request(service: Service):
    for params in ({"limit": 0}, {"limit": "many"}, {"after": -1}, {"since": "yesterday"}):
        assert_envelope(call(service, "auditor", "GET", "/v1/audit/events", params=params), 422, "invalid_request")


@pytest.mark.parametrize(("who", "method", "path", "body"), [
    ("alice", "GET", "/v1/datasets/nope", None),
    ("alice", "POST", "/v1/queries/check", {"dataset": "nope", "sql": SQL}),
    ("alice", "POST", "/v1/queries", {"dataset": "nope", "sql": SQL}),
    ("steward", "POST", "/v1/grants", {"researcher": "alice", "dataset": "nope", "purpose": "p",
                                       "epsilon_cap": 1.0, "delta_cap": 0.0}),
    ("steward", "POST", "/v1/grants/alice/nope/revoke", {"reason": "no such grant"}),
    ("steward", "POST", "/v1/keys", {"principal": "nobody"}),
    ("steward", "POST", "/v1/keys/0000000000000000/revoke", None),
    ("alice", "GET", "/v1/no-such-route", None),
], ids=["dataset", "check", "query", "grant", "grant-revoke", "key-for-nobody", "key-revoke", "route"])
def test_unknown_things_are_not_found(service: Service, who: str, method: str, path: str, body: Any):
    response = call(service, who, method, path, json=body)
    error = assert_envelope(response, 404, "not_found")
    assert error["violations"] == []


def test_an_unknown_dataset_spends_nothing_and_records_no_charge(service: Service):
    before = service.enclave.audit.records()
    assert_envelope(call(service, "alice", "POST", "/v1/queries", json={"dataset": "nope", "sql": SQL}), 404,
                    "not_found")
    assert [r["event"] for r in service.enclave.audit.records()[len(before):]] == []


@pytest.mark.parametrize(("method", "path"), [("PUT", "/v1/queries"), ("DELETE", "/v1/datasets/demo"),
                                              ("GET", "/v1/keys"), ("PATCH", "/v1/grants"),
                                              ("POST", "/healthz")])
def test_a_wrong_method_is_refused_with_the_envelope(service: Service, method: str, path: str):
    assert_envelope(call(service, "alice", method, path), 405, "method_not_allowed")


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/v1/datasets/demo", "GET"), ("GET", "/v1/keys", "POST"), ("PATCH", "/v1/grants", "GET, POST"),
    ("POST", "/healthz", "GET"), ("PUT", "/v1/templates/1", "GET"), ("GET", "/v1/templates/1/runs", "POST")])
def test_a_wrong_method_names_the_allowed_one(service: Service, method: str, path: str, allowed: str):
    response = call(service, "alice", method, path)
    assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize("path", ["/v1/queries", "/v1/templates"])
def test_a_wrong_method_names_all_the_allowed_ones(service: Service, path: str):
    response = call(service, "alice", "PUT", path)
    assert_envelope(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


# --- rate limit -------------------------------------------------------------------------------------------

def test_the_rate_limit_is_per_key_and_says_when_to_retry(tmp_path, demo_data):
    with running_service(fresh_home(tmp_path, demo_data), rate_limit="3/minute") as limited:
        for _ in range(3):
            assert call(limited, "alice", "GET", "/v1/budget").status_code == 200
        refused = call(limited, "alice", "GET", "/v1/budget")
        assert_envelope(refused, 429, "rate_limited")
        assert int(refused.headers["retry-after"]) >= 1
        assert_envelope(call(limited, "alice", "GET", "/v1/datasets"), 429, "rate_limited")  # every route
        assert call(limited, "bob", "GET", "/v1/budget").status_code == 200  # another key is not limited
        assert call(limited, None, "GET", "/healthz").status_code == 200  # health needs no key


# --- internal failures --------------------------------------------------------------------------------------

def test_an_internal_failure_is_a_500_envelope_without_detail(service: Service, monkeypatch):
    sentinel = "secret-detail /work/main/enclave/audit/store.py /tmp/x duckdb Traceback"

    def broken(*args: object, **kwargs: object) -> list:
        raise RuntimeError(sentinel)

    monkeypatch.setattr(service.enclave.audit, "records", broken)
    response = call(service, "auditor", "GET", "/v1/audit/events")
    error = assert_envelope(response, 500, "internal_error")
    assert error["violations"] == []
    assert "secret-detail" not in response.text
    assert "RuntimeError" not in response.text
    monkeypatch.undo()
    assert call(service, "auditor", "GET", "/v1/audit/events").status_code == 200  # the service goes on


# --- production settings --------------------------------------------------------------------------------------

def test_production_refuses_to_start_without_a_pepper(tmp_path, monkeypatch):
    monkeypatch.delenv("ENCLAVE_KEY_PEPPER", raising=False)
    with pytest.raises(ValidationError, match="ENCLAVE_KEY_PEPPER"):
        Settings(home=tmp_path, mode="production")
    with pytest.raises(ValidationError, match="ENCLAVE_KEY_PEPPER"):
        Settings(home=tmp_path, mode="production", key_pepper="p" * 31)
    monkeypatch.setenv("ENCLAVE_MODE", "production")
    with pytest.raises(ValidationError, match="ENCLAVE_KEY_PEPPER"):
        Settings(home=tmp_path)
    monkeypatch.setenv("ENCLAVE_KEY_PEPPER", PEPPER)
    assert Settings(home=tmp_path).pepper == PEPPER.encode()


def test_production_with_a_pepper_serves_and_hashes_keys_with_it(tmp_path, demo_data, monkeypatch):
    monkeypatch.delenv("ENCLAVE_KEY_PEPPER", raising=False)
    home = fresh_home(tmp_path, demo_data)
    with running_service(home, mode="production", key_pepper=PEPPER) as production:
        assert production.settings.mode == "production"
        assert production.settings.demo_children == TEST_CHILDREN
        assert production.settings.pepper == PEPPER.encode()
        assert call(production, "alice", "GET", "/v1/budget").status_code == 200
        assert call(production, "steward", "POST", "/v1/keys", json={"principal": "bob"}).status_code == 201
        assert_envelope(call(production, None, "GET", "/v1/budget"), 401, "unauthenticated")
    assert not (home / "secrets" / "key-pepper").exists()


# --- bounds, time zones, template parameters, documented responses ----------------------------------------

TEMPLATE_ID_MAX = 2**62


@pytest.mark.parametrize(("who", "method", "suffix", "body", "code"), [
    ("alice", "GET", "", None, "not_found"),
    ("alice", "POST", "/runs", {"parameters": {}}, "template_not_found"),
    ("reviewer", "POST", "/approve", {"reason": "bounds"}, "template_not_found"),
    ("reviewer", "POST", "/reject", {"reason": "bounds"}, "template_not_found"),
    ("reviewer", "POST", "/revoke", {"reason": "bounds"}, "template_not_found"),
], ids=["get", "run", "approve", "reject", "revoke"])
def test_template_ids_are_bounded(service: Service, who: str, method: str, suffix: str, body: Any, code: str):
    largest = call(service, who, method, f"/v1/templates/{TEMPLATE_ID_MAX}{suffix}", json=body)
    assert_envelope(largest, 404, code)
    for template_id in (TEMPLATE_ID_MAX + 1, SQLITE_MAX_INTEGER, SQLITE_MAX_INTEGER + 1, 0, -1):
        response = call(service, who, method, f"/v1/templates/{template_id}{suffix}", json=body)
        error = assert_envelope(response, 422, "invalid_request")
        assert "path.template_id" in error["message"], error


def test_template_ids_are_documented_as_bounded(service: Service):
    for path, operations in service.app.openapi()["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "template_id":
                    assert parameter["schema"]["minimum"] == 1, path
                    assert parameter["schema"]["maximum"] == TEMPLATE_ID_MAX, path


def test_audit_paging_at_its_bound_is_an_empty_page(service: Service):
    response = call(service, "auditor", "GET", "/v1/audit/events", params={"after": TEMPLATE_ID_MAX})
    assert response.status_code == 200, response.text
    assert response.json() == {"events": [], "next_after": None}
    for params in ({"start": TEMPLATE_ID_MAX}, {"end": TEMPLATE_ID_MAX}):
        exported = call(service, "auditor", "GET", "/v1/audit/export", params=params)
        assert exported.status_code == 200, (params, exported.text)
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        assert all(json.loads(line)["kind"] for line in exported.text.splitlines())


@pytest.mark.parametrize(("path", "name"), [("/v1/audit/events", "after"), ("/v1/audit/export", "start"),
                                            ("/v1/audit/export", "end")])
@pytest.mark.parametrize("value", [TEMPLATE_ID_MAX + 1, SQLITE_MAX_INTEGER, SQLITE_MAX_INTEGER + 1],
                         ids=["bound+1", "sqlite-max", "sqlite-max+1"])
def test_audit_paging_beyond_its_bound_is_an_invalid_request(service: Service, path: str, name: str, value: int):
    response = call(service, "auditor", "GET", path, params={name: value})
    error = assert_envelope(response, 422, "invalid_request")
    assert f"query.{name}" in error["message"], error


def test_audit_filters_by_time_with_an_explicit_zone(service: Service):
    events = call(service, "auditor", "GET", "/v1/audit/events", params={"since": "2000-01-01T00:00:00Z"})
    assert events.status_code == 200
    assert events.json()["events"]
    later = call(service, "auditor", "GET", "/v1/audit/events", params={"until": "2000-01-01T00:00:00+00:00"})
    assert later.json()["events"] == []


@pytest.mark.parametrize("name", ["since", "until"])
def test_a_time_filter_without_a_zone_is_read_as_utc(service: Service, name: str):
    everything = call(service, "auditor", "GET", "/v1/audit/events", params={"limit": 1000}).json()["events"]
    assert everything
    moment = everything[0]["time"] if name == "until" else everything[-1]["time"]
    assert moment.endswith("+00:00"), moment
    naive = moment.removesuffix("+00:00")
    for value in ("2000-01-01T00:00:00", naive):
        response = call(service, "auditor", "GET", "/v1/audit/events", params={name: value, "limit": 1000})
        assert response.status_code == 200, response.text
        explicit = call(service, "auditor", "GET", "/v1/audit/events",
                        params={name: value + "+00:00", "limit": 1000})
        assert response.json() == explicit.json()
    matched = response.json()["events"]
    assert matched
    assert (matched[-1] if name == "since" else matched[0])["time"] == moment


def test_a_template_whose_sql_does_not_parse_is_refused_with_where(service: Service):
    response = call(service, "alice", "POST", "/v1/templates", json={**TEMPLATE, "sql": "|", "parameters": []})
    error = assert_envelope(response, 400, "check_failed")
    assert error["violations"]
    assert all(v["line"] == 1 and v["col"] >= 1 for v in error["violations"])


@pytest.mark.parametrize("bound", [{"min": 2030}, {"max": 2000}, {"min": 2030, "max": 2040}],
                         ids=["min-only", "max-only", "both"])
def test_a_choice_outside_the_range_is_an_invalid_request(service: Service, bound: dict[str, int]):
    parameter = {"name": "year", "type": "integer", "choices": [2023], **bound}
    response = call(service, "alice", "POST", "/v1/templates", json={**TEMPLATE, "parameters": [parameter]})
    error = assert_envelope(response, 422, "invalid_request")
    assert "body.parameters.0" in error["message"], error
    assert "year must be at " in error["message"], error  # "at least 2030", "at most 2000", or both
    assert all(str(value) in error["message"] for value in bound.values()), error


def test_a_choice_inside_a_one_sided_range_is_accepted(service: Service):
    parameter = {"name": "year", "type": "integer", "min": 2020, "choices": [2023]}
    response = call(service, "alice", "POST", "/v1/templates", json={**TEMPLATE, "parameters": [parameter]})
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["parameters"][0]["choices"] == [2023]


@pytest.mark.parametrize("bound", [{"min": 2030}, {"max": 2000}], ids=["min-only", "max-only"])
def test_a_choice_outside_a_one_sided_range_is_explained_without_none(service: Service, bound: dict[str, int]):
    parameter = {"name": "year", "type": "integer", "choices": [2023], **bound}
    response = call(service, "alice", "POST", "/v1/templates", json={**TEMPLATE, "parameters": [parameter]})
    error = assert_envelope(response, 422, "invalid_request")
    assert "None" not in error["message"], error


TEXT_ROUTES = ["/v1/audit/export", "/v1/audit/public-key", "/metrics"]
TEXT_ROUTE_ERRORS = ["401", "403", "422", "429", "500"]  # what these routes can answer in the envelope


@pytest.mark.parametrize("path", TEXT_ROUTES)
def test_error_responses_of_text_routes_are_documented_as_json(service: Service, path: str):
    documented = service.app.openapi()["paths"][path]["get"]["responses"]
    for status in TEXT_ROUTE_ERRORS:
        assert "application/json" in documented[status]["content"], (status, documented[status])
    for who, status, code in (("alice", 403, "forbidden"), (None, 401, "unauthenticated")):
        response = call(service, who, "GET", path)
        assert_envelope(response, status, code)
        assert response.headers["content-type"].split(";")[0] in documented[str(status)]["content"]
    if path == "/v1/audit/export":
        response = call(service, "auditor", "GET", path, params={"start": 0})
        assert_envelope(response, 422, "invalid_request")
        assert "application/json" in documented["422"]["content"]


@pytest.mark.parametrize("path", TEXT_ROUTES)
def test_every_error_response_of_text_routes_is_documented_as_the_json_envelope(service: Service, path: str):
    documented = service.app.openapi()["paths"][path]["get"]["responses"]
    errors = {status: response["content"] for status, response in documented.items() if status[0] in "45"}
    assert set(errors) >= set(TEXT_ROUTE_ERRORS)
    expected = {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
    assert {status: content.get("application/json") for status, content in errors.items()} == {
        status: expected for status in errors}


def test_the_public_key_media_type_is_documented(service: Service):
    response = call(service, "auditor", "GET", "/v1/audit/public-key")
    assert response.status_code == 200
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type == "application/x-pem-file"
    documented = service.app.openapi()["paths"]["/v1/audit/public-key"]["get"]["responses"]["200"]["content"]
    assert media_type in documented, (media_type, sorted(documented))


def test_the_export_media_type_is_documented(service: Service):
    response = call(service, "auditor", "GET", "/v1/audit/export")
    assert response.status_code == 200
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type == "application/x-ndjson"
    assert media_type in service.app.openapi()["paths"]["/v1/audit/export"]["get"]["responses"]["200"]["content"]


def test_a_decided_template_cannot_be_approved_again(service: Service):
    template = workflow.propose(service.enclave, "alice", TemplateSpec(**TEMPLATE))
    workflow.review(service.enclave, "reviewer", template.id, "approve", "fine")
    again = call(service, "reviewer", "POST", f"/v1/templates/{template.id}/approve", json={"reason": "twice"})
    assert_envelope(again, 409, "review_not_allowed")


def test_every_route_documents_409_as_the_envelope(service: Service):
    operations = [(path, method, op) for path, ops in service.app.openapi()["paths"].items()
                  for method, op in ops.items()]
    assert len(operations) >= 27
    for path, method, operation in operations:
        conflict = operation["responses"].get("409")
        assert conflict is not None, (method, path)
        schemas = [media.get("schema") for media in conflict["content"].values()]
        assert {"$ref": "#/components/schemas/ErrorOut"} in schemas, (method, path, conflict)
    templates = {op["operationId"]: op["responses"]["409"] for _, _, op in operations
                 if op["operationId"] in {"templates-approve", "templates-reject", "templates-revoke", "templates-run"}}
    assert len(templates) == 4
    for conflict in templates.values():
        assert conflict["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
