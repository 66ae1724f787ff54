"""Shared fixtures: the real rules, the real demo manifest, and a real generated demo database."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from enclave.catalog.demo import DemoData, ensure_demo
from enclave.catalog.manifest import Manifest, load_manifest
from enclave.pipeline import Enclave
from enclave.policy import Rules, load_rules
from enclave.settings import PROJECT_ROOT
from tests import stores

TEST_CHILDREN = 20_000


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store", choices=stores.BACKENDS, default="sqlite",
                     help="the state store every enclave in the suite runs on (tests/stores.py)")


def pytest_configure(config: pytest.Config) -> None:
    stores.selected = config.getoption("--store")


def pytest_sessionfinish(session: pytest.Session) -> None:
    stores.drop_schemas()


@pytest.fixture(params=stores.BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Both stores, whichever the suite runs on: for the tests of the store's own guarantees."""
    return request.param


@pytest.fixture(scope="session")
def rules() -> Rules:
    return load_rules(PROJECT_ROOT / "query_rules" / "default.yaml")


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    return load_manifest(PROJECT_ROOT / "datasets" / "demo" / "manifest.yaml")


@pytest.fixture(scope="session")
def enclave_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enclave-home")


@pytest.fixture(scope="session")
def demo_data(manifest: Manifest, enclave_home: Path) -> DemoData:
    return ensure_demo(manifest, enclave_home / "data", children=TEST_CHILDREN)


@pytest.fixture
def fresh_enclave(tmp_path: Path, demo_data: DemoData) -> Enclave:
    """An enclave with its own log, budget and secrets; the demo database is shared, read-only."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / demo_data.directory.name).symlink_to(demo_data.directory)
    instance = Enclave(stores.settings(tmp_path, demo_children=TEST_CHILDREN))
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def enclave(enclave_home: Path, demo_data: DemoData) -> Enclave:
    instance = Enclave(stores.settings(enclave_home, demo_children=TEST_CHILDREN))
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def plain(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    """Plain DuckDB on a copy of the demo database: the unprotected engine that exact-value tests compare
    with. A copy, because DuckDB shares one instance per file and the sandbox's configuration is locked."""
    copy = tmp_path_factory.mktemp("plain-demo") / demo_data.database.name
    shutil.copyfile(demo_data.database, copy)
    with duckdb.connect(str(copy), read_only=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of this test module's own, on a free loopback port, started and stopped here."""
    server = stores.RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.kill()
