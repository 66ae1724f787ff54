"""The real service over real HTTP: uvicorn on a free loopback port, in a background thread, per test module.

Each module gets its own enclave home (its own audit log, budget and secrets); the generated demo
database is shared read-only through symlinks, as tests/test_pipeline.py's `fresh` fixture does.
Keys are issued the way `enclave keys` and the demo do: straight through the audit store, recorded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from enclave.access.keys import ensure_principal, issue_key, revoke_key
from enclave.api import create_app
from enclave.budget.ledger import grant
from enclave.catalog.demo import DemoData
from enclave.pipeline import Enclave
from enclave.settings import Settings
from tests import stores

TEST_CHILDREN = 20_000
# principal -> roles; `multi` holds two roles at once.
PRINCIPALS: dict[str, set[str]] = {
    "alice": {"researcher"},
    "bob": {"researcher"},
    "reviewer": {"reviewer"},
    "steward": {"steward"},
    "auditor": {"auditor"},
    "multi": {"researcher", "auditor"},
}
# Researchers granted the demo dataset (multi too, so its researcher role can be exercised end to end).
GRANTED = ("alice", "bob", "multi")
SQL = "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent FROM enrollments GROUP BY school ORDER BY school"
FORBIDDEN_IN_ERRORS = ("Traceback", "/work/", "/tmp/", "duckdb", "DuckDB")


@dataclass
class Service:
    """A running service: its base URL, the app and enclave behind it, and one key per principal."""

    base_url: str
    app: FastAPI
    settings: Settings
    keys: dict[str, str] = field(default_factory=dict)
    revoked_key: str = ""
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def enclave(self) -> Enclave:
        return self.app.state.enclave

    def client(self, who: str | None = None, *, authorization: str | None = None) -> httpx.Client:
        """An HTTP client as `who` (a principal name), with a raw Authorization header, or anonymous."""
        headers = {}
        if who is not None:
            headers["Authorization"] = f"Bearer {self.keys[who]}"
        if authorization is not None:
            headers["Authorization"] = authorization
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=60.0)
        self._clients.append(client)
        return client

    def issue(self, principal: str, roles: set[str] | None = None) -> str:
        """A new key for `principal` (created with `roles` if given), issued by the steward, recorded."""
        with self.enclave.audit.transaction() as tx:
            if roles:
                ensure_principal(tx, "steward", principal, roles)
            return issue_key(tx, self.settings.pepper, "steward", principal)

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


def fresh_home(root: Path, demo_data: DemoData) -> Path:
    """A new enclave home whose data/ links to the shared demo database (read-only)."""
    (root / "data").mkdir(parents=True)
    (root / "data" / demo_data.directory.name).symlink_to(demo_data.directory)
    return root


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port in a background thread; yields the base URL."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if not thread.is_alive():
                raise RuntimeError("the service stopped while starting")
            try:
                if server.started and httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not answer /healthz within 30 s")
            time.sleep(0.05)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the service did not stop"


@contextmanager
def running_service(home: Path, **overrides: Any) -> Iterator[Service]:
    """A real service on `home` with the test principals, keys and grants."""
    settings = stores.settings(home, demo_children=TEST_CHILDREN, **overrides)
    app = create_app(settings)
    enclave: Enclave = app.state.enclave
    keys: dict[str, str] = {}
    with enclave.audit.transaction() as tx:
        for name, roles in PRINCIPALS.items():
            ensure_principal(tx, "steward", name, roles)
            keys[name] = issue_key(tx, settings.pepper, "steward", name)
        revoked = issue_key(tx, settings.pepper, "steward", "alice")
        revoke_key(tx, "steward", revoked.split("_")[1])
        for name in GRANTED:
            grant(tx, "steward", name, "demo", 5.0, 1e-5, purpose="study")
    with serve(app) as base_url:
        service = Service(base_url, app, settings, keys, revoked)
        try:
            yield service
        finally:
            service.close_clients()


@pytest.fixture(scope="module")
def service_overrides() -> dict[str, Any]:
    """Settings for this module's service beyond home and size; a module may override this fixture."""
    return {}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, demo_data: DemoData,
            service_overrides: dict[str, Any]) -> Iterator[Service]:
    home = fresh_home(tmp_path_factory.mktemp("api-home"), demo_data)
    with running_service(home, **service_overrides) as running:
        yield running


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the error envelope, with this status (and code), and leaks nothing internal."""
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"ok", "error"}, body
    assert body["ok"] is False
    assert set(body["error"]) - {"problems"} == {"code", "message", "violations"}, body
    assert isinstance(body["error"]["code"], str)
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["violations"], list)
    if code is not None:
        assert body["error"]["code"] == code, body
    for marker in FORBIDDEN_IN_ERRORS:
        assert marker not in response.text, (marker, response.text)
    return body["error"]
