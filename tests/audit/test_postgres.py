"""The PostgreSQL store's own guarantees, on a real server: roles, triggers, migrations, serialised writers.

The enclave's role can read the log and append to it, nothing else: no UPDATE, DELETE or TRUNCATE, and
no way to drop or disable the triggers (it owns nothing). The owning role is refused by the triggers;
a superuser who goes behind them is caught by `verify` and by the start-up state check. Writers in
several processes are serialised: concurrent reservations never overspend a grant.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from enclave.audit.migrations import POSTGRES, SCHEMA_VERSION
from enclave.audit.postgres import PostgresBackend, migrate
from enclave.audit.signing import Signer
from enclave.audit.state import StateMismatch, ensure_consistent
from enclave.audit.store import AuditStore, StoreError
from enclave.audit.verify import verify_lines
from enclave.budget.ledger import BudgetError, grant, live_totals, rebuild_from_log, reserve
from tests import stores

EDITS = [
    "UPDATE events SET record = '{}' WHERE seq = 2",
    "DELETE FROM events WHERE seq = 3",
    "TRUNCATE events",
    "UPDATE consents SET action = 'give'",
    "DELETE FROM charges",
    "UPDATE data_versions SET reason = 'x'",
    "DELETE FROM checkpoints",
]
ESCAPES = [
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "DROP TRIGGER events_append_only ON events",
    "DROP TABLE events",
    "CREATE OR REPLACE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
]


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    """A migrated schema with 10 grants and 5 charges, used through the enclave's own role."""
    instance = AuditStore(stores.backend("postgresql", tmp_path), Signer.load_or_create(tmp_path / "key.pem"),
                          checkpoint_every=4)
    with instance.transaction() as tx:
        for n in range(10):
            grant(tx, "steward", f"r{n}", "demo", 1.0, 1e-6)
    for n in range(5):
        with instance.transaction() as tx:
            reserve(tx, f"r{n}", "demo", 0.5, 0.0, {"sql_submitted": "SELECT 1"})
    yield instance
    instance.close()


def owner_url(store: AuditStore) -> str:
    url = store.backend.url  # type: ignore[attr-defined]
    return url.replace(f"{stores.APP_ROLE}@", "postgres@")


@pytest.mark.parametrize("statement", EDITS + ESCAPES)
def test_the_enclave_role_can_neither_change_the_log_nor_its_guards(store, statement):
    before = store.records()
    with pytest.raises(psycopg.errors.InsufficientPrivilege), store.transaction() as tx:
        tx.connection.execute(statement)
    assert store.records() == before
    assert verify_lines(_export(store), store.signer.public).ok


def test_the_enclave_role_cannot_grant_itself_more(store):
    with store.transaction() as tx:  # PostgreSQL warns and grants nothing: the role holds no grant option
        tx.connection.execute(f"GRANT UPDATE, DELETE ON events TO {stores.APP_ROLE}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), store.transaction() as tx:
        tx.connection.execute("DELETE FROM events")


@pytest.mark.parametrize("statement", EDITS[:3])
def test_the_owning_role_is_refused_by_the_triggers(store, statement):
    with psycopg.connect(owner_url(store)) as connection, pytest.raises(
            psycopg.errors.IntegrityConstraintViolation, match="append-only"):
        connection.execute(statement)
    assert verify_lines(_export(store), store.signer.public).ok


def test_an_edit_behind_the_triggers_is_caught_by_verify_and_the_start_up_check(store):
    with psycopg.connect(owner_url(store)) as connection:
        connection.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        text = connection.execute("SELECT record FROM events WHERE seq = 3").fetchone()[0]
        record = json.loads(text)
        record["epsilon_cap"] = 100.0
        connection.execute("UPDATE events SET record = %s WHERE seq = 3", (json.dumps(record, sort_keys=True),))
        connection.execute("DELETE FROM charges WHERE researcher = 'r4'")
    report = verify_lines(_export(store), store.signer.public)
    assert not report.ok
    assert "record 3 does not match its hash" in report.summary()
    with pytest.raises(StateMismatch, match="charges"):
        ensure_consistent(store)


def test_migrations_are_numbered_applied_once_and_a_newer_store_is_refused(tmp_path):
    url, admin = stores.fresh_postgres()
    assert migrate(admin, url) == SCHEMA_VERSION
    assert migrate(admin, url) == SCHEMA_VERSION  # again: nothing to do
    with psycopg.connect(admin) as connection:
        versions = [v for (v,) in connection.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == sorted(POSTGRES) == [7, 8, 9, 10]
        connection.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        PostgresBackend(url)
    with pytest.raises(StoreError, match="Upgrade the enclave"):
        migrate(admin, url)


def test_an_unmigrated_store_is_refused_to_the_enclave_role(tmp_path):
    url, _ = stores.fresh_postgres()
    with pytest.raises(StoreError, match="run `enclave migrate`"):
        PostgresBackend(url)  # it may not create tables in a schema it was not granted


def test_production_refuses_a_store_whose_log_the_enclave_role_owns(tmp_path):
    _, admin = stores.fresh_postgres()  # the owner connecting as the enclave: it could change its own log
    with pytest.raises(StoreError, match="owns the audit log"):
        PostgresBackend(admin, separate_owner=True)
    PostgresBackend(admin).close()  # a trial may


def _reserve_many(url: str, key: str, attempts: int, results: multiprocessing.Queue) -> None:
    store = AuditStore(PostgresBackend(url, pool_size=1), Signer.load_or_create(Path(key)), checkpoint_every=4)
    won = 0
    for _ in range(attempts):
        try:
            with store.transaction() as tx:
                reserve(tx, "racer", "demo", 0.1, 0.0, {"sql_submitted": "SELECT 1"})
            won += 1
        except BudgetError:
            pass
    store.close()
    results.put(won)


def test_concurrent_reservations_in_several_processes_never_overspend(tmp_path):
    """Four processes race 10 reservations each of ε=0.1 against a cap of 1.0: exactly 10 win."""
    url, admin = stores.fresh_postgres()
    key = tmp_path / "key.pem"
    store = AuditStore(PostgresBackend(url, admin, pool_size=1), Signer.load_or_create(key), checkpoint_every=4)
    with store.transaction() as tx:
        grant(tx, "steward", "racer", "demo", 1.0, 1e-6)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    racers = [context.Process(target=_reserve_many, args=(url, str(key), 10, results)) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=120)
    assert sum(results.get(timeout=5) for _ in racers) == 10
    with store.transaction() as tx:
        assert live_totals(tx) == {("racer", "demo"): (10**9, 0)}
    assert rebuild_from_log(store.records()) == {("racer", "demo"): (10**9, 0)}
    assert verify_lines(_export(store), store.signer.public).ok
    store.close()


def _export(store: AuditStore) -> list[str]:
    buffer = io.StringIO()
    store.export(buffer)
    return buffer.getvalue().splitlines()


def test_migrate_creates_the_enclave_role_with_the_password_its_url_carries(tmp_path):
    """A deployment's first `enclave migrate`: the enclave's role does not exist yet; it is made with the
    password in ENCLAVE_DATABASE_URL (stored as the server's SCRAM hash) and opens the store. The test
    server trusts loopback, so the login itself does not check the password here."""
    role = f"enclave_app_{os.getpid()}"
    url, admin = stores.fresh_postgres()
    password = "s3cret-" + role
    url = url.replace(f"{stores.APP_ROLE}@", f"{role}:{password}@")
    try:
        migrate(admin, url)
        with psycopg.connect(admin) as connection:
            stored = connection.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
            assert stored is not None
            assert stored[0].startswith("SCRAM-SHA-256$")  # the password was set, hashed by the server
        backend = PostgresBackend(url)
        backend.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP OWNED BY {role}")
            connection.execute(f"DROP ROLE IF EXISTS {role}")


def test_an_unreachable_store_is_one_clear_error_without_its_password(tmp_path):
    """`enclave serve` (or any command) on a PostgreSQL that does not answer: exit status 2 and one line
    naming where it looked, never a traceback or the URL's password."""
    with socket.socket() as sock:  # a real port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://enclave_app:hunter2-secret@127.0.0.1:{port}/enclave"
    with pytest.raises(StoreError, match=f"cannot open the state store at postgresql://127.0.0.1:{port}/enclave"):
        PostgresBackend(url)
    env = {**os.environ, "ENCLAVE_HOME": str(tmp_path), "ENCLAVE_DATABASE_URL": url}
    env.pop("ENCLAVE_ADMIN_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "enclave.cli", "grants", "revoke", "--help"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0  # help needs no store
    done = subprocess.run([sys.executable, "-m", "enclave.cli", "audit", "export"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "cannot open the state store" in done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
