"""No column of the identity store is reachable from any query: not through the check, not in what the
rewrite produces, and not from inside the sandbox itself, probed directly."""

from __future__ import annotations

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from enclave.catalog import bounding
from enclave.execute.sandbox import ExecutionError, Sandbox
from tests.intake.conftest import DATASET


@pytest.fixture(scope="module")
def identity(onboarded):
    """The identity store's tables and columns, and some of its values."""
    store = onboarded.identity(DATASET)
    columns = store.con.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = "
                                "current_database()").fetchall()
    values = {v for (v,) in store.con.execute(
        "SELECT unnest([local_id, first_name, last_name, birth_date::VARCHAR, subject]) FROM roster "
        "UNION SELECT surrogate FROM persons").fetchall()}
    return store, columns, values


def test_the_check_refuses_every_identity_table_and_column(onboarded, identity):
    _, columns, _ = identity
    tables = {t for t, _ in columns}
    assert {"roster", "links", "persons", "linkage_pairs", "state"} <= tables
    for table in tables:
        result = onboarded.check(DATASET, f"SELECT COUNT(*) AS n FROM {table}")
        assert not result.accepted, table
        assert result.violations[0].code == "unknown_table", table
    analysis = {c for t in onboarded.manifest(DATASET).tables.values() for c in t.columns}
    for column in {c for _, c in columns} - analysis - {"contributor"}:
        for sql in (f"SELECT COUNT(*) AS n FROM children WHERE {column} IS NULL",
                    f"SELECT {column}, COUNT(*) AS n FROM enrollments GROUP BY {column}"):
            result = onboarded.check(DATASET, sql)
            assert not result.accepted, sql
            assert result.violations[0].code == "unknown_column", sql


def test_what_the_rewrite_runs_names_only_analysis_tables(onboarded, identity):
    _, columns, _ = identity
    prepared = onboarded.prepare(DATASET, "SELECT c.gender, COUNT(*) AS n, AVG(e.days_absent) AS a FROM children c "
                                          "JOIN enrollments e ON c.person_id = e.person_id GROUP BY c.gender")
    assert prepared.rewritten is not None
    tables = {t.name for t in sqlglot.parse_one(prepared.rewritten.sql, read="duckdb").find_all(exp.Table)}
    assert {t for t in tables if not t.startswith("__")} == {"children", "enrollments"}  # the rest: its own CTEs
    assert "__consented" in tables
    assert not tables & {t for t, _ in columns}


def test_the_sandbox_cannot_reach_the_identity_store(onboarded, identity):
    store, _, values = identity
    version = onboarded.version(DATASET)
    sandbox = Sandbox(version.database, onboarded.rules.execution, 1000)
    try:
        for sql in ("SELECT count(*) FROM roster", "SELECT count(*) FROM links",
                    f"SELECT count(*) FROM '{store.path}'", f"SELECT * FROM read_csv('{store.path}')"):
            with pytest.raises(ExecutionError):
                sandbox.execute(sql)
        engine = sandbox._connection.cursor()  # the engine itself, under the sandbox's locked settings
        for sql in (f"ATTACH '{store.path}' AS identity (READ_ONLY)", f"SELECT * FROM read_parquet('{store.path}')",
                    "SET enable_external_access = true"):
            with pytest.raises(duckdb.Error):
                engine.execute(sql)
        assert [d for (d,) in engine.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal")
                .fetchall()] == [version.database.stem]
        analysis = [(t, c) for t, c in engine.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal").fetchall()
            if not bounding.is_bounding(t) and not bounding.is_bounding(c)]  # integers and ranks of the bound
        manifest = onboarded.manifest(DATASET)
        assert set(analysis) == {(t, c) for t, table in manifest.tables.items() for c in table.columns}
        for table, column in analysis:  # and no identity value was copied into any text column
            spec = manifest.tables[table].columns[column]
            if spec.type == "VARCHAR":  # (a public key like "White" may also be someone's surname)
                found = {v for (v,) in engine.execute(f'SELECT DISTINCT "{column}" FROM "{table}"').fetchall()}
                assert not (found - set(spec.public_keys or ())) & values, (table, column)
        engine.close()
    finally:
        sandbox.close()
