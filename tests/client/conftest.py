"""The client against the real service over real HTTP: tests/api's uvicorn fixture, one service per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from enclave.client import Enclave
from tests.api.conftest import Service, service  # noqa: F401 - the module-scoped service fixture, reused


@pytest.fixture(scope="module")
def service_overrides() -> dict[str, Any]:
    return {"rate_limit": "100000/minute"}  # the tests poll and ask often with one key


@pytest.fixture
def alice(service: Service) -> Iterator[Enclave]:  # noqa: F811 - the fixture imported above
    """The client as alice, a researcher granted the demo dataset (ε 5)."""
    with Enclave(service.base_url, service.keys["alice"]) as client:
        yield client
