"""The state stores the tests run on: the embedded SQLite file, and a real PostgreSQL server.

The whole suite runs on one of them (`pytest --store sqlite|postgresql`; `.ci/run` runs both), through
`settings()`, which every test that builds Settings for an enclave uses. The store's own tests run on
both in every run (the `backend` fixture in tests/conftest.py).

PostgreSQL: the server on 127.0.0.1:5432 is reused when it answers (the machine starts one); otherwise
one is started from the installed binaries in a scratch directory. Each store gets a schema of its own
in the database `enclave_test`, migrated by the superuser and used by the enclave's own role
`enclave_app`, exactly as `enclave migrate` sets up a deployment; the schemas are dropped at the end.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from enclave.audit.postgres import PostgresBackend
from enclave.audit.sqlite import SqliteBackend
from enclave.audit.store import Backend
from enclave.settings import Settings

BACKENDS = ("sqlite", "postgresql")
DATABASE = "enclave_test"
APP_ROLE = "enclave_app"
selected = "sqlite"  # set from --store by tests/conftest.py
_server: dict[str, str] = {}
_schemas: list[str] = []
_homes: dict[str, tuple[str, str]] = {}


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _start_own_server() -> str:
    """A throwaway cluster from the installed PostgreSQL binaries (initdb refuses root: run as `postgres`)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or ([shutil.which("initdb")] if
                                                                       shutil.which("initdb") else [])
    if not found:
        if os.environ.get("CI"):
            pytest.fail("CI must provide PostgreSQL (.ci/run installs it)")
        pytest.skip("no PostgreSQL server answers and none is installed")
    bin_dir = Path(found[-1]).parent
    scratch = Path(tempfile.mkdtemp(prefix="enclave-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(scratch, "postgres")
    port = "55432"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(scratch / "data"), "-U", "postgres",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(scratch / "data"), "-l", str(scratch / "log"),
                    "-o", f"-p {port} -k {scratch} -c listen_addresses=127.0.0.1 -c fsync=off", "-w", "start"],
                   check=True, capture_output=True)
    _server["stop"] = f"{' '.join(as_user)} {bin_dir / 'pg_ctl'} -D {scratch / 'data'} -m fast stop"
    return f"postgresql://postgres@127.0.0.1:{port}"


def server() -> str:
    """The server's base URL (no database), reused or started once per session."""
    if "base" not in _server:
        base = "postgresql://postgres@127.0.0.1:5432"
        if not _answers(f"{base}/postgres"):
            base = _start_own_server()
            deadline = time.monotonic() + 30
            while not _answers(f"{base}/postgres") and time.monotonic() < deadline:
                time.sleep(0.2)
        with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
            if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                connection.execute(f"CREATE DATABASE {DATABASE}")
        _server["base"] = base
    return _server["base"]


def fresh_postgres() -> tuple[str, str]:
    """(the enclave role's URL, the owner's URL) of a new, empty schema."""
    base = server()
    schema = f"s_{secrets.token_hex(6)}"
    with psycopg.connect(f"{base}/{DATABASE}", autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    _schemas.append(schema)
    options = quote(f"-csearch_path={schema}")
    host = base.split("@", 1)[1]
    return (f"postgresql://{APP_ROLE}@{host}/{DATABASE}?options={options}",
            f"{base}/{DATABASE}?options={options}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide redis-server (.ci/run installs it)")
        pytest.skip("redis-server is not installed on this machine")
    return binary


class RedisServer:
    """A real redis-server of the caller's own on a free loopback port, keeping nothing on disk; it can be
    killed and started again on the same port (a restart, as the fault test does)."""

    def __init__(self, directory: Path) -> None:
        self.binary, self.port, self.directory = redis_binary(), free_port(), directory
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(self.directory)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def backend(kind: str, directory: Path, name: str = "log") -> Backend:
    if kind == "sqlite":
        return SqliteBackend(directory / f"{name}.sqlite3")
    url, admin = fresh_postgres()
    return PostgresBackend(url, admin, pool_size=2)


def environment(home: Path) -> dict[str, str]:
    """The ENCLAVE_* variables that put a process's enclave under `home` on the home's store (for the
    tests' subprocesses): the same PostgreSQL schema for the same home, as a deployment's workers share one."""
    if selected != "postgresql":
        return {}
    key = str(home.resolve())
    if key not in _homes:
        _homes[key] = fresh_postgres()
    url, admin = _homes[key]
    return {"ENCLAVE_DATABASE_URL": url, "ENCLAVE_ADMIN_DATABASE_URL": admin, "ENCLAVE_DATABASE_POOL_SIZE": "4"}


def settings(home: Path, **overrides: object) -> Settings:
    """Settings for an enclave under `home` on the selected store."""
    names = {"ENCLAVE_DATABASE_URL": "database_url", "ENCLAVE_ADMIN_DATABASE_URL": "admin_database_url",
             "ENCLAVE_DATABASE_POOL_SIZE": "database_pool_size"}
    store = {names[name]: value for name, value in environment(home).items()}
    return Settings(home=home, **{**store, **overrides})


def drop_schemas() -> None:
    if "base" in _server and _schemas:
        with psycopg.connect(f"{_server['base']}/{DATABASE}", autocommit=True) as connection:
            for schema in _schemas:
                connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        _schemas.clear()
    if "stop" in _server:
        subprocess.run(_server.pop("stop").split(), check=False, capture_output=True)
