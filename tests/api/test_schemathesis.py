"""Schemathesis against the live service's own OpenAPI document, as a researcher, for every operation.

Each operation gets Hypothesis-generated requests, valid ones and then invalid ones, sent with a
researcher's key, and every response must pass schemathesis' checks: no 5xx, a status the document
declares, a declared content type, a body matching the declared schema, and invalid input rejected.

schemathesis' own pytest integration (`schemathesis.pytest.from_fixture`) relies on pytest internals
that pytest 9 removed, so the operations are driven here directly: one Hypothesis test per operation,
every operation run, all failures reported together.

No operation is excluded, no input is steered, and every check is schemathesis' own.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode

from tests.api.conftest import Service

# Invalid input may also be refused as too large (413): the service declares a body limit.
CONFIG = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {
    "expected-statuses": [400, 401, 403, 404, 405, 409, 413, 422, 429]}}})
MAX_EXAMPLES = 25


CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.negative_data_rejection]


@pytest.fixture(scope="module")
def service_overrides() -> dict[str, Any]:
    return {"rate_limit": "100000/minute"}  # hundreds of requests per key: the rate limit is not under test here


@pytest.fixture(scope="module")
def api_schema(service: Service) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{service.base_url}/openapi.json", config=CONFIG)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_as_a_researcher(api_schema: schemathesis.BaseSchema, service: Service,
                                         mode: GenerationMode) -> None:
    headers = {"Authorization": f"Bearer {service.keys['alice']}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    routes = {(method.upper(), path) for path, ops in service.app.openapi()["paths"].items() for method in ops}
    assert {(operation.method.upper(), operation.path) for operation in operations} == routes

    failures: dict[str, str] = {}
    sent: dict[str, int] = {}
    nothing_invalid: list[str] = []
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=mode)

        @given(case=strategy)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case, label: str) -> None:
            sent[label] = sent.get(label, 0) + 1
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)

        try:
            run(label=operation.label)
        except Unsatisfiable:
            # Nothing about this operation can be made invalid (no body, no constrained parameter).
            assert mode is GenerationMode.NEGATIVE, operation.label
            nothing_invalid.append(operation.label)
        except (Exception, FailureGroup) as error:  # every operation runs; all failures are reported together
            lines = str(error).splitlines()[:40]
            failures[operation.label] = type(error).__name__ + ": " + "\n".join(line[:300] for line in lines)
    assert not failures, "\n\n".join(f"== {label} ==\n{text}" for label, text in failures.items())
    with_body = {operation.label for operation in operations if "requestBody" in operation.definition.raw}
    assert with_body
    assert not with_body & set(nothing_invalid), "every request body can be made invalid"
    exercised = {label for label, count in sent.items() if count}
    assert exercised | set(nothing_invalid) == {operation.label for operation in operations}
