"""The embedded backend: one SQLite file, for the enclave in one process (or several on one host).

A transaction takes an idle connection of this process (or opens one): opening a connection costs more
than a read, and a connection is used by one thread at a time. A write begins with `BEGIN IMMEDIATE`
(one writer at a time, across threads and processes); WAL journaling lets readers go on meanwhile, and
`synchronous=FULL` makes committed mean on disk. A read is a deferred transaction: one snapshot.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from enclave.audit.migrations import SCHEMA_VERSION, SQLITE
from enclave.audit.store import StoreError


def statements(script: str) -> Iterator[str]:
    """The statements of a script, split where SQLite says a statement is complete (a trigger's body
    holds semicolons of its own)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending.strip()
            pending = ""


class SqliteBackend:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        self._pid = os.getpid()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA busy_timeout = 60000")
        return connection

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, one migration per transaction (re-read under the write lock,
        so processes starting together apply each migration once)."""
        connection = self._connect()
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            while True:
                connection.execute("BEGIN IMMEDIATE")
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if version == SCHEMA_VERSION or (tables and (version > SCHEMA_VERSION or version < min(SQLITE))):
                    connection.execute("ROLLBACK")
                    break
                step = min(v for v in SQLITE if v > version)
                try:
                    for statement in statements(SQLITE[step]):
                        connection.execute(statement)
                    connection.execute(f"PRAGMA user_version = {step}")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
        finally:
            connection.close()
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}; this enclave needs {SCHEMA_VERSION}. "
                             "Export and verify the old log, then start a new store.")

    def _take(self) -> sqlite3.Connection:
        """An idle connection of this process, or a new one (a forked child never uses its parent's)."""
        with self._idle_lock:
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, connection: sqlite3.Connection) -> None:
        with self._idle_lock:
            if self._pid == os.getpid() and len(self._idle) < 64:
                self._idle.append(connection)
                return
        connection.close()

    @contextmanager
    def _transaction(self, begin: str, end: str) -> Iterator[sqlite3.Connection]:
        """A connection inside one transaction, ended with `end` (or ROLLBACK if the block raises). A
        connection whose transaction could not end cleanly is closed, never reused."""
        connection = self._take()
        ended = False  # ended cleanly (committed or rolled back): the connection can be used again
        try:
            connection.execute(begin)
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                ended = True
                raise
            connection.execute(end)
            ended = True
        finally:
            if ended:
                self._give_back(connection)
            else:
                connection.close()

    def write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction("BEGIN IMMEDIATE", "COMMIT")

    def read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction("BEGIN", "ROLLBACK")

    @contextmanager
    def glance(self) -> Iterator[sqlite3.Connection]:
        """Statements in autocommit: each one its own read of what is committed."""
        connection = self._take()
        try:
            yield connection
        except BaseException:
            connection.close()
            raise
        self._give_back(connection)

    def close(self) -> None:
        """Close the idle connections (a transaction after this opens a new one)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __str__(self) -> str:
        return str(self.path)
