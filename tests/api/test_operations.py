"""Operations routes over real HTTP: who may read /metrics, route templates as labels, request ids, and
/readyz with its checks (the database, a real Redis, each dataset's current data version)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from enclave.catalog import versions
from enclave.catalog.demo import DemoData
from enclave.ops.ready import is_ready, readiness
from enclave.pipeline import Enclave
from tests.api.conftest import Service, assert_envelope, fresh_home, running_service

TOKEN = "scrape-token-0123456789abcdef"
MARKER = "ops_marker_91d2"


@pytest.fixture(scope="module")
def service_overrides() -> dict[str, Any]:
    return {"metrics_token": TOKEN}


def test_metrics_need_the_scrape_token_or_an_auditor_key(service: Service) -> None:
    assert_envelope(service.client().get("/metrics"), 401, "unauthenticated")
    assert_envelope(service.client("alice").get("/metrics"), 403, "forbidden")  # stage timings: invariant 10
    assert_envelope(service.client(authorization="Bearer wrong-token").get("/metrics"), 401, "unauthenticated")
    for client in (service.client("auditor"), service.client(authorization=f"Bearer {TOKEN}")):
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "enclave_http_requests_total" in response.text


def test_requests_are_counted_by_route_template_never_by_raw_url(service: Service) -> None:
    alice = service.client("alice")
    assert_envelope(alice.get(f"/v1/queries/{MARKER}", params={"q": MARKER}), 404, "not_found")
    assert_envelope(alice.get(f"/no/such/{MARKER}"), 404, "not_found")
    assert alice.request(f"X{MARKER}".upper(), "/healthz").status_code in (400, 405)
    text = service.client(authorization=f"Bearer {TOKEN}").get("/metrics").text
    assert MARKER not in text
    assert MARKER.upper() not in text
    assert 'enclave_http_requests_total{method="GET",route="/v1/queries/{query_id}",status="404"}' in text
    assert 'route="unmatched",status="404"' in text
    assert 'method="other"' in text


def test_a_safe_request_id_is_echoed_and_anything_else_replaced(service: Service) -> None:
    client = service.client()
    assert client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b_c"}).headers["x-request-id"] == (
        "trace-42.a:b_c")
    for unsafe in (f"{MARKER} with spaces", "x" * 65, "-leading-dash", "quote\"d"):
        echoed = client.get("/healthz", headers={"X-Request-ID": unsafe}).headers["x-request-id"]
        assert echoed != unsafe
        assert len(echoed) == 32
        assert all(c in "0123456789abcdef" for c in echoed)
    first, second = (client.get("/healthz").headers["x-request-id"] for _ in range(2))
    assert first != second


def test_readyz_checks_the_database_and_each_dataset(service: Service) -> None:
    service.enclave.data_version("demo")  # the demo's version exists once a query (here: this) adopts it
    response = service.client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "skipped",
                                                          "dataset:demo": "ok"}}
    assert service.client().get("/healthz").json() == {"status": "ok", "checks": {}}


def test_readyz_pings_redis_and_says_which_check_failed(tmp_path: Path, demo_data: DemoData,
                                                        redis_url: str) -> None:
    with running_service(fresh_home(tmp_path / "up", demo_data), redis_url=redis_url) as up:
        assert up.client().get("/readyz").json()["checks"]["redis"] == "ok"
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{unused.getsockname()[1]}"
    with running_service(fresh_home(tmp_path / "down", demo_data), redis_url=closed) as down:
        response = down.client().get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "ok", "redis": "failed",
                                                                   "dataset:demo": "no_data"}}


def test_a_data_version_that_does_not_open_is_not_ready(fresh_enclave: Enclave) -> None:
    """Readiness never generates the demo (no_data until a query does), and fails a version whose
    database is gone, naming the dataset only."""
    assert readiness(fresh_enclave)["dataset:demo"] == "no_data"
    assert not (fresh_enclave.settings.data_dir / "demo" / "identity.duckdb").exists()
    real = fresh_enclave.version("demo")
    with fresh_enclave.audit.transaction() as tx:
        versions.record(tx, "steward", "demo", "moved away", build="gone",
                        database=real.database.with_name("gone.duckdb"))
    checks = readiness(fresh_enclave)
    assert checks == {"database": "ok", "redis": "skipped", "dataset:demo": "failed"}
    assert not is_ready(checks)
