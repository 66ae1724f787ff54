"""The deployed backend: PostgreSQL (psycopg 3 with a connection pool), shared by every API and query
worker on every host.

Two roles. The migrating role (`ENCLAVE_ADMIN_DATABASE_URL`, used by `enclave migrate`) owns the
tables; the enclave's own role (`ENCLAVE_DATABASE_URL`) is granted what `migrations.APPEND_ONLY` and
`migrations.MUTABLE` say, so it can neither change the log nor drop or disable the triggers that
refuse changes. Writers are serialised by a transaction-scoped advisory lock taken first (the
equivalent of SQLite's `BEGIN IMMEDIATE`): the cap check, the charge and its record see every earlier
commit, in every process. A read is one REPEATABLE READ, READ ONLY transaction: one snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import psycopg
from psycopg import IsolationLevel, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from enclave.audit.migrations import APPEND_ONLY, MUTABLE, POSTGRES, SCHEMA_VERSION
from enclave.audit.store import StoreError

WRITE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('enclave-write:' || current_schema()))"
MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('enclave-migrate'))"


@lru_cache(maxsize=512)
def placeholders(statement: str) -> str:
    """The store's portable SQL (`?` placeholders) in psycopg's style (`%s`, and `%%` for a percent sign)."""
    return statement.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection that takes the store's portable SQL."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self._connection = connection

    def execute(self, statement: str, parameters: Sequence[object] = (), /) -> psycopg.Cursor:
        return self._connection.execute(placeholders(statement), tuple(parameters))  # type: ignore[arg-type]


def user_of(url: str) -> str:
    return str(conninfo_to_dict(url).get("user") or "")


def where(url: str) -> str:
    """Host, port and database of a URL, never its password (for messages)."""
    info = conninfo_to_dict(url)
    return f"postgresql://{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def schema_version(connection: psycopg.Connection) -> int:
    found = connection.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not found or not found[0]:
        return 0
    row = connection.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(admin_url: str, app_url: str | None = None) -> int:
    """Apply every pending migration as the owning role, and grant the enclave's role (the user of
    `app_url`; created if it does not exist, given the password that URL carries) exactly its privileges.
    Returns the schema version."""
    with psycopg.connect(admin_url) as connection:
        connection.execute(MIGRATE_LOCK)
        connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                           "applied TIMESTAMPTZ NOT NULL DEFAULT now())")
        version = schema_version(connection)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{where(admin_url)} has schema version {version}; this enclave knows up to "
                             f"{SCHEMA_VERSION}. Upgrade the enclave before it uses this store.")
        for step in sorted(v for v in POSTGRES if v > version):
            connection.execute(POSTGRES[step])  # type: ignore[arg-type]
            connection.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (step,))
        app_user = user_of(app_url) if app_url else ""
        if app_user and app_user != user_of(admin_url) and app_user != connection.info.user:
            _grant(connection, app_user, conninfo_to_dict(app_url or "").get("password"))
    return SCHEMA_VERSION


def _grant(connection: psycopg.Connection, user: str, password: object) -> None:
    role = sql.Identifier(user)
    exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
    if not exists:
        connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    if password:
        connection.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(str(password))))
    schema = sql.Identifier(str(connection.execute("SELECT current_schema()").fetchone()[0]))  # type: ignore[index]
    tables = sql.SQL(", ").join
    connection.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
    connection.execute(sql.SQL("GRANT SELECT ON schema_migrations TO {}").format(role))
    connection.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(
        tables(map(sql.Identifier, APPEND_ONLY)), role))
    connection.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
        tables(map(sql.Identifier, MUTABLE)), role))


class PostgresBackend:
    kind = "postgresql"

    def __init__(self, url: str, admin_url: str | None = None, *, pool_size: int = 8,
                 separate_owner: bool = False) -> None:
        """Open the pool. With `admin_url`, migrate first; without, a store with no tables yet is created by
        the enclave's own role (which then owns the log: fine for a trial, refused with `separate_owner`,
        which production mode sets)."""
        self.url = url
        try:
            self._migrated(admin_url)
        except psycopg.OperationalError:  # refused, unknown host or database, bad password
            raise StoreError(f"cannot open the state store at {where(admin_url or url)}: check that PostgreSQL "
                             "runs there and the URL's role and database") from None
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, name="enclave-store",
                                    timeout=60)
        with self.read() as connection:
            version = int(connection.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
                          .fetchone()[0])
            owns = connection.execute("SELECT tableowner = current_user FROM pg_tables "
                                      "WHERE tablename = 'events' AND schemaname = current_schema()").fetchone()
        if version != SCHEMA_VERSION:
            self.close()
            raise StoreError(f"{where(url)} has schema version {version}; this enclave needs {SCHEMA_VERSION}. "
                             "Run `enclave migrate` first.")
        if separate_owner and owns and owns[0]:
            self.close()
            raise StoreError(f"the enclave's role owns the audit log at {where(url)}, so it could change it: run "
                             "`enclave migrate` with ENCLAVE_ADMIN_DATABASE_URL (the owning role) and connect as "
                             "another role")

    def _migrated(self, admin_url: str | None) -> None:
        """Migrate as the owner; without one, let the enclave's role migrate a schema that is behind (it
        can where it created the schema's tables itself, and is told to run `enclave migrate` where not)."""
        url = self.url
        if admin_url:
            migrate(admin_url, url)
        else:
            with psycopg.connect(url) as connection:
                behind = schema_version(connection) < SCHEMA_VERSION
            if behind:
                try:
                    migrate(url)
                except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName):
                    raise StoreError(f"{where(url)} is not at schema version {SCHEMA_VERSION} and the enclave's "
                                     "role may not migrate it: run `enclave migrate` with "
                                     "ENCLAVE_ADMIN_DATABASE_URL set (the owning role)") from None

    @contextmanager
    def write(self) -> Iterator[PgConnection]:
        with self._pool.connection() as connection:  # commits on exit, rolls back on an exception
            connection.autocommit = False
            connection.isolation_level, connection.read_only = None, None  # the server's: READ COMMITTED
            connection.execute(WRITE_LOCK)
            yield PgConnection(connection)

    @contextmanager
    def read(self) -> Iterator[PgConnection]:
        with self._pool.connection() as connection:
            # one snapshot, read-only; psycopg says so in the transaction's BEGIN (no statement of its own)
            connection.autocommit = False
            connection.isolation_level, connection.read_only = IsolationLevel.REPEATABLE_READ, True
            yield PgConnection(connection)

    @contextmanager
    def glance(self) -> Iterator[PgConnection]:
        with self._pool.connection() as connection:
            connection.autocommit = True  # one round trip a statement: no BEGIN, no COMMIT
            yield PgConnection(connection)

    def close(self) -> None:
        self._pool.close()

    def __str__(self) -> str:
        return where(self.url)
