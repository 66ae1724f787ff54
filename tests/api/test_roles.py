"""Every route, by every kind of caller, over real HTTP, with the exact status each must get.

The expected roles come from each route's OpenAPI tag (health: public; researcher, steward, auditor:
that role), except for the `templates` tag, whose routes differ by design and are listed one by one.
A route the service gains without being classified here fails `test_every_route_is_classified`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from enclave.access.keys import ROLES
from enclave.budget.ledger import grant
from enclave.catalog.demo import ensure_demo
from enclave.templates import workflow
from enclave.templates.model import TemplateSpec
from tests.api.conftest import PRINCIPALS, SQL, Service, assert_envelope

PUBLIC = frozenset({"*"})
ROLES_OF_TAG: dict[str, frozenset[str]] = {
    "health": PUBLIC,
    "researcher": frozenset({"researcher"}),
    "steward": frozenset({"steward"}),
    "auditor": frozenset({"auditor"}),
}
# The templates tag mixes roles by route: proposing takes a researcher or a steward, reading any role
# (researchers see approved templates and their own), reviewing a reviewer, running a researcher.
TEMPLATE_ROLES: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/templates"): frozenset({"researcher", "steward"}),
    ("GET", "/v1/templates"): frozenset(ROLES),
    ("GET", "/v1/templates/{template_id}"): frozenset(ROLES),
    ("GET", "/v1/templates/reviews"): frozenset({"reviewer"}),
    ("GET", "/v1/templates/{template_id}/review"): frozenset({"reviewer"}),
    ("POST", "/v1/templates/{template_id}/approve"): frozenset({"reviewer"}),
    ("POST", "/v1/templates/{template_id}/reject"): frozenset({"reviewer"}),
    ("POST", "/v1/templates/{template_id}/revoke"): frozenset({"reviewer"}),
    ("POST", "/v1/templates/{template_id}/runs"): frozenset({"researcher"}),
}
TEMPLATE_SQL = "SELECT school, COUNT(*) AS n FROM enrollments WHERE school_year = $year GROUP BY school"
TEMPLATE = {"title": "Enrolment by school", "purpose": "role matrix", "dataset": "demo", "sql": TEMPLATE_SQL,
            "parameters": [{"name": "year", "type": "integer", "min": 2019, "max": 2024}], "epsilon": 0.25,
            "run_limit": 5}
UNKNOWN_KEY = "enc_0123456789abcdef_" + "A" * 43


@dataclass
class World:
    """The service and the objects the routes act on, created as their owners would."""

    service: Service
    query_ids: dict[str, str] = field(default_factory=dict)
    approved_template: int = 0
    alices_proposal: int = 0

    def propose(self) -> int:
        return workflow.propose(self.service.enclave, "alice", TemplateSpec(**TEMPLATE)).id

    def approved(self) -> int:
        template_id = self.propose()
        workflow.review(self.service.enclave, "reviewer", template_id, "approve", "fine for the matrix")
        return template_id

    def fresh_key_id(self) -> str:
        return self.service.issue("sacrificial", {"researcher"}).split("_")[1]


@dataclass(frozen=True)
class Multipart:
    """A form body with files (deliveries and consent imports), sent as multipart/form-data."""

    data: dict[str, Any]
    files: list[tuple[str, tuple[str, bytes]]]


Prepared = tuple[dict[str, str], Any]  # path values, JSON body (None: no body) or a Multipart


def _demo_file(world: World, name: str) -> bytes:
    demo = ensure_demo(world.service.enclave.manifest("demo"), world.service.settings.data_dir,
                       children=world.service.settings.demo_children)
    return (demo.directory / "deliveries" / "clinic" / name).read_bytes()


def _delivery(world: World, caller: str) -> Prepared:
    return {"dataset": "demo"}, Multipart({"contributor": "clinic", "kinds": ["roster", "clinic_visits"]}, [
        ("files", ("roster.csv", _demo_file(world, "clinic-roster.csv"))),
        ("files", ("visits.parquet", _demo_file(world, "clinic-clinic_visits.parquet")))])


def _a_clinic_child(world: World) -> str:
    return _demo_file(world, "clinic-roster.csv").decode().splitlines()[1].split(",")[0]


def _consent(world: World, caller: str) -> Prepared:
    return {"dataset": "demo"}, {"statements": [{"contributor": "clinic", "local_id": _a_clinic_child(world),
                                                 "purpose": "role matrix", "given": "2024-01-01"}]}


def _revocation(world: World, caller: str) -> Prepared:
    return {"dataset": "demo"}, {"contributor": "clinic", "local_id": _a_clinic_child(world), "purpose": "role matrix"}


def _consent_file(world: World, caller: str) -> Prepared:
    content = f"local_id,purpose,given\n{_a_clinic_child(world)},role matrix,2024-01-01\n".encode()
    return {"dataset": "demo"}, Multipart({"contributor": "clinic"}, [("file", ("consent.csv", content))])


@dataclass(frozen=True)
class Call:
    status: int  # the status of a success
    prepare: Callable[[World, str], Prepared]
    documented: tuple[int, ...] = ()  # the success statuses the OpenAPI document gives, when not just `status`


def _none(world: World, caller: str) -> Prepared:
    return {}, None


def _own_query(world: World, caller: str) -> Prepared:
    return {"query_id": world.query_ids.get(caller, world.query_ids["alice"])}, None


# (method, path) -> the success status and how to fill the path and body for a caller.
CALLS: dict[tuple[str, str], Call] = {
    ("GET", "/healthz"): Call(200, _none),
    ("GET", "/readyz"): Call(200, _none),
    ("GET", "/metrics"): Call(200, _none),
    ("GET", "/v1/datasets"): Call(200, _none),
    ("GET", "/v1/datasets/{name}"): Call(200, lambda w, c: ({"name": "demo"}, None)),
    ("GET", "/v1/rules"): Call(200, _none),
    ("POST", "/v1/queries/check"): Call(200, lambda w, c: ({}, {"dataset": "demo", "sql": SQL})),
    ("GET", "/v1/queries"): Call(200, _none),
    ("POST", "/v1/queries"): Call(200, lambda w, c: ({}, {"dataset": "demo", "sql": SQL, "epsilon": 0.5}),
                                  documented=(200, 202)),  # 202: queued, an asynchronous query
    ("GET", "/v1/queries/{query_id}"): Call(200, _own_query),
    # this service has no query queue, so a researcher's own (synchronous) query is no job to cancel: 404
    ("DELETE", "/v1/queries/{query_id}"): Call(404, _own_query, documented=(200,)),
    ("GET", "/v1/budget"): Call(200, _none),
    ("POST", "/v1/principals"): Call(200, lambda w, c: ({}, {"name": f"made-by-{c}", "roles": ["researcher"]})),
    ("POST", "/v1/keys"): Call(201, lambda w, c: ({}, {"principal": "bob"})),
    ("POST", "/v1/keys/{key_id}/revoke"): Call(200, lambda w, c: ({"key_id": w.fresh_key_id()}, None)),
    ("POST", "/v1/grants"): Call(201, lambda w, c: ({}, {"researcher": "dave", "dataset": "demo",
                                                         "purpose": "role matrix", "epsilon_cap": 1.0,
                                                         "delta_cap": 0.0})),
    ("POST", "/v1/grants/{researcher}/{dataset}/revoke"): Call(200, lambda w, c: (
        {"researcher": "dave", "dataset": "demo"}, {"reason": "role matrix"})),
    ("POST", "/v1/datasets/{dataset}/deliveries"): Call(201, _delivery),
    ("POST", "/v1/datasets/{dataset}/linkage"): Call(200, lambda w, c: ({"dataset": "demo"}, {"threshold": 0.5})),
    ("POST", "/v1/datasets/{dataset}/rekey"): Call(200, lambda w, c: ({"dataset": "demo"}, None)),
    ("GET", "/v1/datasets/{dataset}/quality"): Call(200, lambda w, c: ({"dataset": "demo"}, None)),
    ("GET", "/v1/datasets/{dataset}/quality.html"): Call(200, lambda w, c: ({"dataset": "demo"}, None)),
    ("POST", "/v1/datasets/{dataset}/consents"): Call(201, _consent),
    ("POST", "/v1/datasets/{dataset}/consents/revoke"): Call(200, _revocation),
    ("POST", "/v1/datasets/{dataset}/consents/import"): Call(201, _consent_file),
    ("GET", "/v1/principals"): Call(200, _none),
    ("GET", "/v1/grants"): Call(200, _none),
    ("GET", "/v1/datasets/{dataset}/deliveries"): Call(200, lambda w, c: ({"dataset": "demo"}, None)),
    ("GET", "/v1/datasets/{dataset}/consents/history"): Call(200, lambda w, c: ({"dataset": "demo"}, None)),
    ("GET", "/v1/audit/budget-history"): Call(200, _none),
    ("GET", "/v1/audit/events"): Call(200, _none),
    ("GET", "/v1/audit/export"): Call(200, _none),
    ("GET", "/v1/audit/verify"): Call(200, _none),
    ("GET", "/v1/audit/checkpoints"): Call(200, _none),
    ("GET", "/v1/audit/proof/{seq}"): Call(200, lambda w, c: ({"seq": "1"}, None)),
    ("GET", "/v1/audit/public-key"): Call(200, _none),
    ("POST", "/v1/templates"): Call(201, lambda w, c: ({}, TEMPLATE)),
    ("GET", "/v1/templates"): Call(200, _none),
    ("GET", "/v1/templates/{template_id}"): Call(200, lambda w, c: ({"template_id": str(w.approved_template)},
                                                                    None)),
    ("GET", "/v1/templates/reviews"): Call(200, _none),
    ("GET", "/v1/templates/{template_id}/review"): Call(200, lambda w, c: (
        {"template_id": str(w.approved_template)}, None)),
    ("POST", "/v1/templates/{template_id}/approve"): Call(200, lambda w, c: (
        {"template_id": str(w.propose())}, {"reason": "looks right"})),
    ("POST", "/v1/templates/{template_id}/reject"): Call(200, lambda w, c: (
        {"template_id": str(w.propose())}, {"reason": "not needed"})),
    ("POST", "/v1/templates/{template_id}/revoke"): Call(200, lambda w, c: (
        {"template_id": str(w.approved())}, {"reason": "withdrawn"})),
    ("POST", "/v1/templates/{template_id}/runs"): Call(200, lambda w, c: (
        {"template_id": str(w.approved_template)}, {"parameters": {"year": 2023}})),
}

# caller -> how it authenticates: a principal's key, or a header that must not authenticate anyone.
UNAUTHENTICATED: dict[str, Callable[[Service], dict[str, str]]] = {
    "no-key": lambda s: {},
    "basic-scheme": lambda s: {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()},
    "bearer-without-key": lambda s: {"Authorization": "Bearer"},
    "bearer-garbage": lambda s: {"Authorization": "Bearer not-a-key"},
    "token-scheme-valid-key": lambda s: {"Authorization": f"Token {s.keys['alice']}"},
    "unknown-key": lambda s: {"Authorization": f"Bearer {UNKNOWN_KEY}"},
    "wrong-secret": lambda s: {"Authorization": f"Bearer enc_{s.keys['alice'].split('_')[1]}_{'B' * 43}"},
    "revoked-key": lambda s: {"Authorization": f"Bearer {s.revoked_key}"},
}
CALLERS = [*UNAUTHENTICATED, *PRINCIPALS]


def allowed_roles(method: str, path: str, tag: str) -> frozenset[str]:
    if tag == "templates":
        return TEMPLATE_ROLES[(method, path)]
    return ROLES_OF_TAG[tag]


def expected_status(method: str, path: str, tag: str, caller: str) -> int:
    roles = allowed_roles(method, path, tag)
    if roles is PUBLIC:
        return CALLS[(method, path)].status
    if caller in UNAUTHENTICATED:
        return 401
    return CALLS[(method, path)].status if PRINCIPALS[caller] & roles else 403


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, path
    return path


@pytest.fixture(scope="module")
def world(service: Service) -> World:
    made = World(service)
    for researcher in ("alice", "bob", "multi"):
        response = service.client(researcher).post("/v1/queries", json={
            "dataset": "demo", "sql": SQL, "epsilon": 0.5})
        assert response.status_code == 200, response.text
        made.query_ids[researcher] = response.json()["query_id"]
    made.approved_template = made.approved()
    made.alices_proposal = made.propose()
    with service.enclave.audit.transaction() as tx:
        grant(tx, "steward", "dave", "demo", 1.0, 0.0, purpose="role matrix")
    return made


@pytest.fixture(scope="module")
def routes(service: Service) -> dict[tuple[str, str], str]:
    """(method, path) -> tag, for every route the service documents."""
    found = {}
    for path, operations in service.app.openapi()["paths"].items():
        for method, operation in operations.items():
            [tag] = operation["tags"]
            found[(method.upper(), path)] = tag
    return found


def test_every_route_is_classified(routes):
    assert set(routes) == set(CALLS), "classify every route in CALLS (and TEMPLATE_ROLES for the templates tag)"
    for (method, path), tag in routes.items():
        assert tag in ROLES_OF_TAG or tag == "templates", f"{method} {path}: unknown tag {tag!r}"
        if tag == "templates":
            assert (method, path) in TEMPLATE_ROLES
    assert set(TEMPLATE_ROLES) == {route for route, tag in routes.items() if tag == "templates"}


def test_every_documented_success_status_is_the_one_expected(service: Service):
    for path, operations in service.app.openapi()["paths"].items():
        for method, operation in operations.items():
            documented = [int(code) for code in operation["responses"] if code.startswith("2")]
            call = CALLS[(method.upper(), path)]
            assert documented == list(call.documented or (call.status,)), (method, path)


def _matrix() -> list:
    params = []
    for method, path in CALLS:
        for caller in CALLERS:
            params.append(pytest.param(method, path, caller, id=f"{method} {path} as {caller}"))
    return params


@pytest.mark.parametrize(("method", "path", "caller"), _matrix())
def test_route_as_caller(service: Service, world: World, routes, method: str, path: str, caller: str):
    tag = routes[(method, path)]
    expected = expected_status(method, path, tag, caller)
    values, body = CALLS[(method, path)].prepare(world, caller)
    headers = UNAUTHENTICATED[caller](service) if caller in UNAUTHENTICATED else {
        "Authorization": f"Bearer {service.keys[caller]}"}
    url = service.base_url + fill(path, values)
    if isinstance(body, Multipart):
        response = httpx.request(method, url, headers=headers, data=body.data, files=body.files, timeout=120)
    else:
        response = httpx.request(method, url, headers=headers, json=body, timeout=120)
    assert response.status_code == expected, (caller, response.text)
    if expected == 401:
        assert_envelope(response, 401, "unauthenticated")
    elif expected == 403:
        error = assert_envelope(response, 403, "forbidden")
        assert error["violations"] == []
    elif path == "/v1/audit/public-key":
        assert response.text.startswith("-----BEGIN PUBLIC KEY-----")
    elif path == "/metrics":
        assert "enclave_http_requests_total" in response.text
    elif path.endswith("/quality.html"):
        assert response.headers["content-type"].startswith("text/html")
        assert "clerical review" in response.text
    elif path == "/v1/audit/export":
        assert all(json.loads(line)["kind"] in {"event", "checkpoint"} for line in response.text.splitlines())
    else:
        assert response.headers["content-type"].startswith("application/json")
        response.json()


def test_a_researcher_cannot_see_another_researchers_query(service: Service, world: World):
    alice, bob, multi = service.client("alice"), service.client("bob"), service.client("multi")
    alices = world.query_ids["alice"]
    assert alice.get(f"/v1/queries/{alices}").status_code == 200
    assert alices in {q["query_id"] for q in alice.get("/v1/queries").json()}
    error = assert_envelope(bob.get(f"/v1/queries/{alices}"), 404, "not_found")
    assert alices not in error["message"]
    assert alices not in {q["query_id"] for q in bob.get("/v1/queries").json()}
    assert world.query_ids["bob"] in {q["query_id"] for q in bob.get("/v1/queries").json()}
    # Another role held alongside researcher (here auditor) gives no access to someone else's answers.
    assert_envelope(multi.get(f"/v1/queries/{alices}"), 404, "not_found")
    assert alices not in {q["query_id"] for q in multi.get("/v1/queries").json()}
    # An unknown id is answered exactly like someone else's.
    unknown = bob.get("/v1/queries/" + "0" * 32)
    assert_envelope(unknown, 404, "not_found")
    assert unknown.json() == bob.get(f"/v1/queries/{alices}").json()


def test_a_researcher_sees_only_approved_templates_and_their_own_proposals(service: Service, world: World):
    proposal = world.alices_proposal
    assert service.client("alice").get(f"/v1/templates/{proposal}").status_code == 200
    assert_envelope(service.client("bob").get(f"/v1/templates/{proposal}"), 404, "not_found")
    bobs_list = {t["id"] for t in service.client("bob").get("/v1/templates").json()}
    assert world.approved_template in bobs_list
    assert proposal not in bobs_list
    assert proposal in {t["id"] for t in service.client("reviewer").get("/v1/templates").json()}
