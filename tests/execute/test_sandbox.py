"""The DuckDB sandbox holds even for SQL that never went through check.

Every test here hands `Sandbox.execute` raw, hostile SQL (file and network reads, writes, ATTACH,
extensions, settings, state that could outlive a query, runaway queries) and asserts the exact
`ExecutionError` code and that the side effect did not happen. Only the last tests go through the
enclave's own pipeline (check, then rewrite) to show what reaches the sandbox in normal operation.

Sandboxes here run on private copies of the demo database. Sandboxes on one file (with the same limits)
share one locked connection in a process (see `test_second_sandbox_on_one_file`), and some tests here make
state on a sandbox's own connection on purpose: on the session's database it would reach the `enclave`
fixture. A copy also lets a plain connection read reference facts before any sandbox locks the file.
"""

from __future__ import annotations

import select
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from enclave.catalog.demo import DemoData
from enclave.execute.sandbox import ExecutionError, RawResult, Sandbox
from enclave.pipeline import Enclave
from enclave.policy import Rules
from enclave.policy.rules import Execution

SECRET = "TOPSECRET-canary-5d1e9b"

# Settings the sandbox sets at open and locks; none of them may move, whatever a query does.
GUARDED_SETTINGS = (
    "access_mode",
    "enable_external_access",
    "lock_configuration",
    "memory_limit",
    "threads",
    "max_execution_time",
    "max_temp_directory_size",
    "autoinstall_known_extensions",
    "autoload_known_extensions",
    "allow_community_extensions",
    "allow_unsigned_extensions",
    "error_on_division_by_zero",
    "enable_logging",
    "enable_profiling",
    "python_scan_all_frames",
    "temp_directory",
    "disabled_optimizers",
)


@dataclass(frozen=True)
class Reference:
    """The sandbox's database (a private copy) and facts read from it with a plain connection."""

    database: Path
    person_ids: frozenset[str]
    children: int


@pytest.fixture(scope="module")
def reference(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    target = tmp_path_factory.mktemp("sandbox-db") / demo_data.database.name
    shutil.copy(demo_data.database, target)
    plain = duckdb.connect(str(target), read_only=True)
    try:
        ids = frozenset(row[0] for row in plain.execute("SELECT person_id FROM children").fetchall())
        (children,) = plain.execute("SELECT count(*) FROM children").fetchone()
    finally:
        plain.close()  # before any sandbox opens the file with its own configuration
    return Reference(target, ids, children)


@pytest.fixture
def sandbox(reference: Reference, rules: Rules) -> Iterator[Sandbox]:
    instance = Sandbox(reference.database, rules.execution, rules.limits.max_output_groups)
    yield instance
    instance.close()


@pytest.fixture
def make_sandbox(reference: Reference, rules: Rules,
                 tmp_path: Path) -> Iterator[Callable[[Execution], Sandbox]]:
    """A sandbox with its own execution limits, each on its own copy of the database."""
    opened: list[Sandbox] = []

    def make(execution: Execution) -> Sandbox:
        copy = tmp_path / f"sandbox-{len(opened)}.duckdb"
        shutil.copy(reference.database, copy)
        opened.append(Sandbox(copy, execution, rules.limits.max_output_groups))
        return opened[-1]

    yield make
    for instance in opened:
        instance.close()


@pytest.fixture
def secret_files(tmp_path: Path) -> Path:
    """A directory of real files a query might try to read, each holding SECRET."""
    directory = tmp_path / "secret"
    directory.mkdir()
    (directory / "secret.csv").write_text(f"name,value\n{SECRET},1\n")
    (directory / "secret.json").write_text(f'{{"name": "{SECRET}"}}\n')
    (directory / "secret.txt").write_text(f"{SECRET}\n")
    plain = duckdb.connect()
    try:
        target = directory / "secret.parquet"
        plain.execute(f"COPY (SELECT '{SECRET}' AS name) TO '{target}' (FORMAT parquet)")
    finally:
        plain.close()
    other = duckdb.connect(str(directory / "secret.duckdb"))
    try:
        other.execute(f"CREATE TABLE s AS SELECT '{SECRET}' AS name")
    finally:
        other.close()
    return directory


def failure(sandbox: Sandbox, sql: str) -> ExecutionError:
    with pytest.raises(ExecutionError) as caught:
        sandbox.execute(sql)
    return caught.value


def guarded_settings(sandbox: Sandbox) -> dict[str, object]:
    names = ", ".join(f"'{name}'" for name in GUARDED_SETTINGS)
    rows = sandbox._connection.execute(
        f"SELECT name, value FROM duckdb_settings() WHERE name IN ({names})").fetchall()
    return dict(rows)


def assert_locked(sandbox: Sandbox, before: dict[str, object]) -> None:
    """The configuration is exactly as the sandbox left it, on its connection and on a fresh query."""
    row = sandbox._connection.execute(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')").fetchone()
    assert row == (False, True)
    assert guarded_settings(sandbox) == before
    seen = sandbox.execute("SELECT current_setting('enable_external_access'), "
                           "current_setting('lock_configuration'), current_setting('threads'), "
                           "current_setting('max_execution_time')")
    limits = sandbox.execution
    assert seen.rows == ((False, True, limits.threads, int(limits.timeout_seconds * 1000)),)


def assert_data_intact(sandbox: Sandbox, reference: Reference) -> None:
    assert sandbox.execute("SELECT count(*) FROM children").rows == ((reference.children,),)


# --- file reads -------------------------------------------------------------------------------------

FILE_READS = {
    "read_csv": "SELECT * FROM read_csv('{dir}/secret.csv')",
    "read_csv_auto": "SELECT * FROM read_csv_auto('{dir}/secret.csv')",
    "read_csv_list": "SELECT * FROM read_csv(['{dir}/secret.csv', '{dir}/secret.csv'])",
    "read_text": "SELECT content FROM read_text('{dir}/secret.txt')",
    "read_blob": "SELECT content FROM read_blob('{dir}/secret.txt')",
    "read_parquet": "SELECT * FROM read_parquet('{dir}/secret.parquet')",
    "parquet_metadata": "SELECT * FROM parquet_metadata('{dir}/secret.parquet')",
    "read_json": "SELECT * FROM read_json('{dir}/secret.json')",
    "read_json_auto": "SELECT * FROM read_json_auto('{dir}/secret.json')",
    "read_ndjson": "SELECT * FROM read_ndjson('{dir}/secret.json')",
    "read_duckdb": "SELECT * FROM read_duckdb('{dir}/secret.duckdb', table_name = 's')",
    "glob": "SELECT * FROM glob('{dir}/*')",
    "replacement_scan_csv": "SELECT * FROM '{dir}/secret.csv'",
    "replacement_scan_parquet": "SELECT * FROM '{dir}/secret.parquet'",
    "sniff_csv": "SELECT * FROM sniff_csv('{dir}/secret.csv')",
    "read_in_scalar_subquery": "SELECT (SELECT max(name) FROM read_csv('{dir}/secret.csv'))",
    "read_via_query": "SELECT * FROM query('SELECT * FROM read_csv(''{dir}/secret.csv'')')",
}


@pytest.mark.parametrize("template", FILE_READS.values(), ids=FILE_READS.keys())
def test_file_reads_are_refused_without_echoing_path_or_content(sandbox: Sandbox, secret_files: Path,
                                                                 template: str) -> None:
    sql = template.format(dir=secret_files)
    error = failure(sandbox, sql)
    assert error.code == "execution_failed"
    for text in (str(error), error.message):
        assert SECRET not in text
        assert str(secret_files) not in text
    # The file was never read: its content is nowhere, not even in the engine error kept as the cause.
    assert SECRET not in "".join(traceback.format_exception(error))


def test_serialized_sql_cannot_read_files(sandbox: Sandbox, secret_files: Path) -> None:
    """json_execute_serialized_sql runs a SELECT given as a plan; it is held by the same settings."""
    plain = duckdb.connect()
    try:
        inner = f"SELECT * FROM read_csv('{secret_files}/secret.csv')"
        (serialized,) = plain.execute("SELECT json_serialize_sql(?)", [inner]).fetchone()
    finally:
        plain.close()
    quoted = serialized.replace("'", "''")
    error = failure(sandbox, f"SELECT * FROM json_execute_serialized_sql('{quoted}')")
    assert error.code == "execution_failed"
    assert SECRET not in "".join(traceback.format_exception(error))


def test_database_temp_directory_is_not_readable(reference: Reference, rules: Rules, tmp_path: Path) -> None:
    """DuckDB keeps its temp_directory readable with external access off; the sandbox sets it to ''.

    The default would be `<database>.tmp/`, next to the data: a file planted there is neither read nor listed.
    """
    copy = tmp_path / "own.duckdb"
    shutil.copy(reference.database, copy)
    temp = Path(f"{copy}.tmp")
    temp.mkdir()
    (temp / "planted.csv").write_text(f"name\n{SECRET}\n")
    sandbox = Sandbox(copy, rules.execution, rules.limits.max_output_groups)
    try:
        assert guarded_settings(sandbox)["temp_directory"] == ""
        for sql in (f"SELECT * FROM read_csv('{temp}/planted.csv')", f"SELECT * FROM read_text('{temp}/planted.csv')",
                    f"SELECT * FROM glob('{temp}/*')", f"SELECT * FROM glob('{temp}/planted.csv')"):
            error = failure(sandbox, sql)
            assert error.code == "execution_failed"
            assert SECRET not in "".join(traceback.format_exception(error))
            assert str(temp) not in str(error)
    finally:
        sandbox.close()
    assert sorted(path.name for path in temp.iterdir()) == ["planted.csv"]  # nothing spilled or left there


# --- file writes, ATTACH, extensions, settings ------------------------------------------------------

FILE_WRITES = {
    "copy_query_to_csv": ("COPY (SELECT 1 AS x) TO '{out}'", "out.csv"),
    "copy_table_to_parquet": ("COPY children TO '{out}' (FORMAT parquet)", "children.parquet"),
    "copy_to_json": ("COPY (SELECT person_id FROM children) TO '{out}' (FORMAT json)", "ids.json"),
    "export_database": ("EXPORT DATABASE '{out}'", "export"),
    "export_database_parquet": ("EXPORT DATABASE '{out}' (FORMAT parquet)", "export-parquet"),
    "attach_new_file": ("ATTACH '{out}' AS fresh", "fresh.duckdb"),
    "attach_sqlite": ("ATTACH '{out}' AS lite (TYPE sqlite)", "lite.sqlite"),
}


@pytest.mark.parametrize(("template", "name"), FILE_WRITES.values(), ids=FILE_WRITES.keys())
def test_file_writes_are_refused_and_nothing_is_written(sandbox: Sandbox, reference: Reference,
                                                        tmp_path: Path, template: str, name: str) -> None:
    target = tmp_path / "writes" / name
    target.parent.mkdir()
    error = failure(sandbox, template.format(out=target))
    assert error.code == "not_one_select"
    assert str(target) not in str(error)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    assert_data_intact(sandbox, reference)


def test_attaching_an_existing_database_is_refused(sandbox: Sandbox, secret_files: Path) -> None:
    before = guarded_settings(sandbox)
    attach = f"ATTACH '{secret_files}/secret.duckdb' AS other (READ_ONLY)"
    assert failure(sandbox, attach).code == "not_one_select"
    assert failure(sandbox, "SELECT * FROM other.s").code == "execution_failed"
    assert sandbox.execute("SELECT count(*) FROM duckdb_databases() WHERE NOT internal").rows == ((1,),)
    assert_locked(sandbox, before)


CATALOG_AND_EXTENSION_STATEMENTS = {
    "detach_data": "DETACH {database}",
    "detach_memory": "DETACH DATABASE IF EXISTS memory",
    "use_memory": "USE memory",
    "use_system": "USE system.main",
    "install_httpfs": "INSTALL httpfs",
    "force_install_httpfs": "FORCE INSTALL httpfs FROM core",
    "install_community": "INSTALL shellfs FROM community",
    "load_httpfs": "LOAD httpfs",
    "load_json": "LOAD json",
    "load_file": "LOAD '/tmp/evil.duckdb_extension'",
    "create_secret": "CREATE SECRET leak (TYPE s3, KEY_ID 'k', SECRET 's')",
}


@pytest.mark.parametrize("template", CATALOG_AND_EXTENSION_STATEMENTS.values(),
                         ids=CATALOG_AND_EXTENSION_STATEMENTS.keys())
def test_catalog_and_extension_statements_are_refused(sandbox: Sandbox, reference: Reference,
                                                      template: str) -> None:
    before = guarded_settings(sandbox)
    error = failure(sandbox, template.format(database=f'"{reference.database.stem}"'))
    assert error.code == "not_one_select"
    assert_locked(sandbox, before)
    assert_data_intact(sandbox, reference)  # still attached, still the default database


def test_functions_of_unloaded_extensions_do_not_autoload(sandbox: Sandbox) -> None:
    before = guarded_settings(sandbox)
    for sql in ("SELECT st_point(1, 2)", "SELECT * FROM sqlite_scan('x.db', 't')",
                "SELECT * FROM postgres_scan('host=127.0.0.1', 'public', 't')"):
        assert failure(sandbox, sql).code == "execution_failed"
    assert_locked(sandbox, before)


SETTING_STATEMENTS = {
    "set_memory_limit": "SET memory_limit = '64GB'",
    "set_global_memory_limit": "SET GLOBAL memory_limit = '64GB'",
    "set_external_access": "SET enable_external_access = true",
    "set_lock_configuration": "SET lock_configuration = false",
    "reset_lock_configuration": "RESET lock_configuration",
    "reset_external_access": "RESET enable_external_access",
    "set_threads": "SET threads = 64",
    "set_session_threads": "SET SESSION threads = 64",
    "set_execution_time": "SET max_execution_time = 0",
    "set_temp_directory": "SET temp_directory = '/tmp'",
    "reset_temp_directory": "RESET temp_directory",
    "set_disabled_optimizers": "SET disabled_optimizers = ''",
    "reset_disabled_optimizers": "RESET disabled_optimizers",
    "set_autoload": "SET autoload_known_extensions = true",
    "set_unsigned": "SET allow_unsigned_extensions = true",
    "set_scan_all_frames": "SET python_scan_all_frames = true",
    "pragma_threads": "PRAGMA threads = 64",
    "pragma_memory_limit": "PRAGMA memory_limit = '64GB'",
    "pragma_enable_profiling": "PRAGMA enable_profiling",
    "pragma_database_list": "PRAGMA database_list",
    "pragma_version": "PRAGMA version",
    "set_then_select": "SET enable_external_access = true; SELECT 1",
}


@pytest.mark.parametrize("sql", SETTING_STATEMENTS.values(), ids=SETTING_STATEMENTS.keys())
def test_setting_statements_are_refused_and_settings_hold(sandbox: Sandbox, sql: str) -> None:
    before = guarded_settings(sandbox)
    assert failure(sandbox, sql).code == "not_one_select"
    assert_locked(sandbox, before)


CONFIGURING_SELECTS = {
    "enable_logging": "SELECT * FROM enable_logging()",
    "disable_logging": "SELECT * FROM disable_logging()",
    "enable_profiling": "SELECT * FROM enable_profiling()",
    "force_checkpoint": "SELECT * FROM force_checkpoint()",
}


@pytest.mark.parametrize("sql", CONFIGURING_SELECTS.values(), ids=CONFIGURING_SELECTS.keys())
def test_selects_that_would_configure_or_touch_disk_fail(sandbox: Sandbox, sql: str) -> None:
    before = guarded_settings(sandbox)
    assert failure(sandbox, sql).code == "execution_failed"
    assert_locked(sandbox, before)


def test_the_locked_configuration_is_what_the_rules_say(sandbox: Sandbox, rules: Rules) -> None:
    settings = guarded_settings(sandbox)
    assert settings["access_mode"] == "read_only"
    assert settings["enable_external_access"] == "false"
    assert settings["lock_configuration"] == "true"
    assert settings["max_temp_directory_size"] == "0 bytes"
    assert settings["temp_directory"] == ""
    assert settings["disabled_optimizers"] == "common_subexpressions"
    assert settings["autoinstall_known_extensions"] == "false"
    assert settings["autoload_known_extensions"] == "false"
    assert settings["allow_community_extensions"] == "false"
    assert settings["allow_unsigned_extensions"] == "false"
    assert settings["threads"] == str(rules.execution.threads)
    assert settings["max_execution_time"] == str(int(rules.execution.timeout_seconds * 1000))


# --- network ------------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local TCP port that records whether anything tried to connect to it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server
    finally:
        server.close()


NETWORK_READS = {
    "read_csv_http": "SELECT * FROM read_csv('http://127.0.0.1:{port}/x.csv')",
    "read_csv_https": "SELECT * FROM read_csv('https://127.0.0.1:{port}/x.csv')",
    "read_parquet_http": "SELECT * FROM read_parquet('http://127.0.0.1:{port}/x.parquet')",
    "read_json_http": "SELECT * FROM read_json('http://127.0.0.1:{port}/x.json')",
    "read_text_http": "SELECT * FROM read_text('http://127.0.0.1:{port}/x.txt')",
    "replacement_scan_http": "SELECT * FROM 'http://127.0.0.1:{port}/x.csv'",
    "attach_http": "ATTACH 'http://127.0.0.1:{port}/x.duckdb' AS remote",
    "discard_port": "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
}


@pytest.mark.parametrize("template", NETWORK_READS.values(), ids=NETWORK_READS.keys())
def test_network_reads_never_connect(sandbox: Sandbox, listener: socket.socket, template: str) -> None:
    port = listener.getsockname()[1]
    sql = template.format(port=port)
    error = failure(sandbox, sql)
    assert error.code == ("not_one_select" if sql.startswith("ATTACH") else "execution_failed")
    assert "127.0.0.1" not in str(error)
    pending, _, _ = select.select([listener], [], [], 0.2)
    assert pending == [], "the sandbox opened a network connection"


# --- one statement, and only a SELECT ----------------------------------------------------------------

NOT_ONE_SELECT = {
    "two_selects": "SELECT 1; SELECT 2",
    "select_then_drop": "SELECT count(*) FROM children; DROP TABLE children",
    "comment_hides_semicolon": "SELECT 1 -- harmless\n; DROP TABLE children",
    "empty": "",
    "only_comment": "/* nothing */",
    "unparseable": "SELEC 1",
    "create_table": "CREATE TABLE t AS SELECT 1 AS x",
    "create_temp_table": "CREATE TEMP TABLE t AS SELECT 1",
    "create_view": "CREATE VIEW v AS SELECT * FROM children",
    "create_macro": "CREATE MACRO m() AS 1",
    "create_sequence": "CREATE SEQUENCE s",
    "insert": "INSERT INTO children (person_id) VALUES ('x')",
    "update": "UPDATE children SET gender = 'F'",
    "delete": "DELETE FROM children",
    "drop_table": "DROP TABLE children",
    "alter_table": "ALTER TABLE children ADD COLUMN leak VARCHAR",
    "truncate": "TRUNCATE children",
    "call_pragma": "CALL pragma_version()",
    "call_checkpoint": "CALL checkpoint()",
    "checkpoint": "CHECKPOINT",
    "force_checkpoint": "FORCE CHECKPOINT",
    "vacuum": "VACUUM",
    "analyze": "ANALYZE",
    "begin": "BEGIN TRANSACTION",
    "prepare": "PREPARE p AS SELECT 1",
    "execute": "EXECUTE p",
    "set_variable": "SET VARIABLE x = 1",
    "explain": "EXPLAIN SELECT 1",
    "explain_analyze": "EXPLAIN ANALYZE SELECT count(*) FROM children",
    "pivot": "PIVOT enrollments ON grade USING count(*)",
    "import_database": "IMPORT DATABASE '/tmp/nowhere'",
    "copy_from": "COPY children FROM '/tmp/nowhere.csv'",
}


@pytest.mark.parametrize("sql", NOT_ONE_SELECT.values(), ids=NOT_ONE_SELECT.keys())
def test_anything_but_one_select_is_refused(sandbox: Sandbox, reference: Reference, sql: str) -> None:
    before = guarded_settings(sandbox)
    assert failure(sandbox, sql).code == "not_one_select"
    assert_locked(sandbox, before)
    assert_data_intact(sandbox, reference)
    # the five tables and what the build prepared for bounding (enclave.catalog.bounding)
    assert sandbox.execute("SELECT count(*) FROM duckdb_tables() WHERE NOT internal").rows == ((6,),)


# --- nothing survives a query ----------------------------------------------------------------------


def test_refused_state_statements_leave_nothing(sandbox: Sandbox) -> None:
    assert failure(sandbox, "CREATE TEMP TABLE t AS SELECT 1").code == "not_one_select"
    assert failure(sandbox, "SELECT * FROM t").code == "execution_failed"
    assert failure(sandbox, "SET VARIABLE x = 1").code == "not_one_select"
    assert sandbox.execute("SELECT getvariable('x')").rows == ((None,),)


def test_each_query_runs_on_a_fresh_connection(sandbox: Sandbox) -> None:
    """State made on the sandbox's own connection (which no query runs on) is invisible to queries."""
    connection = sandbox._connection
    connection.execute("SET VARIABLE leak = 42")
    connection.execute("CREATE TEMP TABLE leak_table AS SELECT 42 AS v")
    connection.execute("CREATE TEMP MACRO leak_macro() AS 42")
    assert connection.execute("SELECT getvariable('leak'), leak_macro(), (SELECT v FROM leak_table)"
                              ).fetchone() == (42, 42, 42)
    assert sandbox.execute("SELECT getvariable('leak')").rows == ((None,),)
    assert failure(sandbox, "SELECT * FROM leak_table").code == "execution_failed"
    assert failure(sandbox, "SELECT leak_macro()").code == "execution_failed"


def test_a_select_that_seeds_the_random_generator_does_not_carry_over(sandbox: Sandbox) -> None:
    """setseed() is a SELECT that changes connection state; the next query must not inherit it."""
    plain = duckdb.connect()
    try:
        plain.execute("SELECT setseed(0.25)")
        seeded = plain.execute("SELECT random(), random()").fetchone()
    finally:
        plain.close()
    assert sandbox.execute("SELECT setseed(0.25)").rows == ((None,),)
    assert sandbox.execute("SELECT random(), random()").rows != (seeded,)


def test_a_select_that_writes_a_log_leaves_nothing_for_the_next(sandbox: Sandbox) -> None:
    sandbox.execute(f"SELECT write_log('{SECRET}', level := 'error')")
    logged = sandbox.execute(f"SELECT count(*) FROM duckdb_logs WHERE message LIKE '%{SECRET}%'")
    assert logged.rows == ((0,),)


@pytest.mark.parametrize("inner", [
    "SET VARIABLE x = 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE TEMP MACRO m() AS 1",
    "SET enable_external_access = true",
    "SELECT 1; SELECT 2",
], ids=["set_variable", "temp_table", "temp_macro", "setting", "two_statements"])
def test_query_function_runs_only_one_select(sandbox: Sandbox, inner: str) -> None:
    before = guarded_settings(sandbox)
    quoted = inner.replace("'", "''")
    assert failure(sandbox, f"SELECT * FROM query('{quoted}')").code == "execution_failed"
    assert sandbox.execute("SELECT getvariable('x')").rows == ((None,),)
    assert failure(sandbox, "SELECT * FROM t").code == "execution_failed"
    assert_locked(sandbox, before)


# --- probing settings and the catalog: executes here, refused by check -------------------------------


def test_settings_probes_execute_in_the_sandbox(sandbox: Sandbox) -> None:
    """Expected: the sandbox runs any SELECT. Only check keeps these from researchers (next test)."""
    assert sandbox.execute("SELECT current_setting('memory_limit')").rows[0][0]
    assert sandbox.execute("SELECT count(*) FROM duckdb_settings()").rows[0][0] > 0
    assert sandbox.execute("SELECT count(*) FROM duckdb_databases()").rows[0][0] > 0


CHECK_REFUSES = {
    "current_setting": ("SELECT current_setting('memory_limit')", "function_not_allowed"),
    "current_setting_in_where": ("SELECT count(*) FROM children WHERE current_setting('threads') = 2",
                                 "function_not_allowed"),
    "duckdb_settings": ("SELECT count(*) FROM duckdb_settings()", "table_function_not_allowed"),
    "duckdb_databases": ("SELECT count(*) FROM duckdb_databases()", "table_function_not_allowed"),
    "query": ("SELECT count(*) FROM query('SELECT 1')", "table_function_not_allowed"),
    "query_table": ("SELECT count(*) FROM query_table('children')", "table_function_not_allowed"),
    "getvariable": ("SELECT getvariable('x'), count(*) FROM children", "function_not_allowed"),
    "read_csv": ("SELECT count(*) FROM read_csv('/etc/passwd')", "table_function_not_allowed"),
    "setseed": ("SELECT setseed(0.5), count(*) FROM children", "function_not_allowed"),
}


@pytest.mark.parametrize(("sql", "code"), CHECK_REFUSES.values(), ids=CHECK_REFUSES.keys())
def test_check_refuses_settings_and_catalog_probes(enclave: Enclave, sql: str, code: str) -> None:
    result = enclave.check("demo", sql)
    assert not result.accepted
    assert code in {violation.code for violation in result.violations}


# --- time, memory, errors, groups ----------------------------------------------------------------------

RUNAWAY = {
    "triple_cross_join_count": "SELECT count(*) FROM enrollments a, enrollments b, enrollments c",
    "triple_cross_join_sum": "SELECT sum(a.days_absent * b.days_absent * c.days_absent) "
                             "FROM enrollments a, enrollments b, enrollments c",
}


@pytest.mark.parametrize("sql", RUNAWAY.values(), ids=RUNAWAY.keys())
def test_runaway_query_is_interrupted(make_sandbox: Callable[[Execution], Sandbox], reference: Reference,
                                      sql: str) -> None:
    sandbox = make_sandbox(Execution(timeout_seconds=0.5, memory_limit_mb=512, threads=2))
    started = time.monotonic()
    assert failure(sandbox, sql).code == "execution_timeout"
    assert time.monotonic() - started < 10  # a safety bound, not a performance assertion
    assert_data_intact(sandbox, reference)  # an interrupted query does not poison the sandbox


MEMORY_HOGS = {
    "string_agg_cross": "SELECT length(string_agg(a.person_id, ',')) FROM enrollments a, range(100)",
    "ordered_string_agg": "SELECT length(string_agg(a.person_id || b.range::VARCHAR, ',' ORDER BY random())) "
                          "FROM enrollments a, range(50) b",
}


@pytest.mark.parametrize("sql", MEMORY_HOGS.values(), ids=MEMORY_HOGS.keys())
def test_memory_hog_is_refused_not_a_crash(make_sandbox: Callable[[Execution], Sandbox], reference: Reference,
                                           sql: str) -> None:
    sandbox = make_sandbox(Execution(timeout_seconds=30, memory_limit_mb=64, threads=2))
    error = failure(sandbox, sql)
    # DuckDB raises OutOfMemoryException (-> execution_resources) when an allocation exceeds the limit, but
    # with spilling disabled (max_temp_directory_size = 0) some operators report the failure to spill as
    # another engine error (-> execution_failed). Either is a clean refusal; a crash or a result is not.
    assert error.code in {"execution_resources", "execution_failed"}
    assert_data_intact(sandbox, reference)


def test_data_dependent_engine_error_hides_the_value(sandbox: Sandbox, reference: Reference) -> None:
    error = failure(sandbox, "SELECT CAST(person_id AS INTEGER) FROM children")
    assert error.code == "execution_failed"
    for text in (str(error), error.message, repr(error)):
        assert not any(person_id in text for person_id in reference.person_ids)


def test_data_dependent_engine_error_is_not_chained(sandbox: Sandbox, reference: Reference) -> None:
    """ExecutionError is raised `from None`: the engine error (which prints the value) is neither its cause nor
    shown as its context, so no traceback or logger.exception prints the value."""
    error = failure(sandbox, "SELECT CAST(person_id AS INTEGER) FROM children")
    assert error.code == "execution_failed"
    assert error.__cause__ is None
    assert error.__context__ is None  # raised outside the handler: the engine error is not attached at all
    printed = "".join(traceback.format_exception(error))
    assert not any(person_id in printed for person_id in reference.person_ids)
    assert "Conversion Error" not in printed


def test_too_many_groups(sandbox: Sandbox, rules: Rules) -> None:
    per_person = "SELECT person_id, count(*) FROM enrollments GROUP BY 1"
    assert failure(sandbox, per_person).code == "too_many_groups"
    limit = rules.limits.max_output_groups
    assert failure(sandbox, f"SELECT * FROM range({limit + 1})").code == "too_many_groups"
    assert len(sandbox.execute(f"SELECT * FROM range({limit})").rows) == limit


def test_second_sandbox_on_one_file(reference: Reference, rules: Rules, tmp_path: Path) -> None:
    """Sandboxes on one file share its locked connection; closing one leaves the other working."""
    copy = tmp_path / "shared.duckdb"
    shutil.copy(reference.database, copy)
    count = "SELECT count(*) FROM children"
    expected = ((reference.children,),)
    first = Sandbox(copy, rules.execution, rules.limits.max_output_groups)
    opened = [first]
    try:
        second = Sandbox(copy, rules.execution, rules.limits.max_output_groups)
        opened.append(second)
        assert second._connection is first._connection
        before = guarded_settings(second)
        assert first.execute(count).rows == expected
        assert second.execute(count).rows == expected
        opened.remove(first)
        first.close()
        assert second.execute(count).rows == expected
        assert_locked(second, before)
    finally:
        for instance in opened:
            instance.close()
    # The last close released the file: a plain connection, with another configuration, opens it again.
    duckdb.connect(str(copy), read_only=True).close()


def test_closing_a_sandbox_twice_leaves_the_other_working(reference: Reference, rules: Rules,
                                                          tmp_path: Path) -> None:
    """close() releases a sandbox's share once: a second close() does not take the other sandbox's share."""
    copy = tmp_path / "shared.duckdb"
    shutil.copy(reference.database, copy)
    first = Sandbox(copy, rules.execution, rules.limits.max_output_groups)
    second = Sandbox(copy, rules.execution, rules.limits.max_output_groups)
    try:
        first.close()
        first.close()
        assert second.execute("SELECT count(*) FROM children").rows == ((reference.children,),)
    finally:
        second.close()
    second.close()
    duckdb.connect(str(copy), read_only=True).close()  # released: the file opens with another configuration


def test_two_enclaves_on_one_home_both_execute(enclave: Enclave) -> None:
    """A second Enclave on the session's home shares its sandbox; closing it leaves the first working."""
    sql = "SELECT gender, count(*) FROM children GROUP BY gender"
    prepared = enclave.prepare("demo", sql)
    assert prepared.rewritten is not None
    expected = sorted(enclave.execute_unprotected("demo", prepared.rewritten).rows, key=repr)
    other = Enclave(enclave.settings)
    try:
        again = other.prepare("demo", sql)
        assert again.rewritten is not None
        assert again.rewritten.sql == prepared.rewritten.sql  # same data version, so the same sampling salt
        assert sorted(other.execute_unprotected("demo", again.rewritten).rows, key=repr) == expected
    finally:
        other.close()
    assert sorted(enclave.execute_unprotected("demo", prepared.rewritten).rows, key=repr) == expected


# --- the enclave's own path: checked, rewritten, guarded ---------------------------------------------

GUARDED = {
    "overflow_in_case": "SELECT count(*) FROM enrollments "
                        "WHERE CASE WHEN grade = 3 THEN 2147483647 + days_absent ELSE 0 END > 0",
    "integer_division_by_zero": "SELECT count(*) FROM enrollments WHERE grade // 0 = 1",
    "division_by_zero": "SELECT count(*) FROM enrollments WHERE grade / 0 = 1",
    "modulo_zero": "SELECT count(*) FROM enrollments WHERE days_absent % 0 = 1",
    "bad_cast_in_where": "SELECT count(*) FROM enrollments WHERE CAST(school AS INTEGER) = 1",
    "conditional_bad_cast": "SELECT grade, count(*) FROM enrollments WHERE CAST(CASE WHEN grade = 3 "
                            "THEN school ELSE '1' END AS INTEGER) = 1 GROUP BY grade",
    "bad_cast_in_key": "SELECT CAST(CASE WHEN grade = 3 THEN school ELSE '1' END AS INTEGER) AS k, count(*) "
                       "FROM enrollments GROUP BY k",
    "bad_date_cast": "SELECT count(*) FROM children WHERE CAST(gender AS DATE) IS NULL",
    "narrowing_cast": "SELECT count(*) FROM enrollments WHERE CAST(days_absent AS TINYINT) * 100 > 1",
    "overflow_in_count": "SELECT count(CASE WHEN grade = 3 THEN 2147483647 * 2147483647 * days_absent END) "
                         "FROM enrollments",
}

# Paired queries: a condition no row meets (grade 99) and one many rows meet (grade 3), with an error that
# fires only on the rows that reach it. Were whether the query fails to depend on the data, it would be an
# oracle. Two engine behaviours once made it so, and the sandbox and the rewrite now rule both out:
# - DuckDB's common-subexpression optimizer hoists a repeated subexpression into a projection below the
#   TRY() that guard_errors wraps around it. clamp_measures repeats every SUM/AVG argument three times
#   (CASE WHEN a < lo THEN lo WHEN a > hi THEN hi ELSE a END), and a researcher can repeat one in a grouping
#   key. The sandbox runs with disabled_optimizers = 'common_subexpressions', and guard_errors runs before
#   clamp_measures, so the clamp repeats an argument already inside its TRY().
# - A non-boolean WHERE was wrapped as TRY(where) and DuckDB cast the TRY's result to BOOLEAN outside it;
#   guard_errors now wraps TRY(CAST(where AS BOOLEAN)).
ORACLES = {
    "sum_overflow_in_condition": "SELECT sum(CASE WHEN 2147483647 * 2147483647 * days_absent > 0 THEN 1 ELSE 0 END) "
                                 "FROM enrollments WHERE grade = {grade}",
    "avg_overflow_in_case": "SELECT avg(CASE WHEN grade = {grade} AND 2147483647 * 2147483647 * days_absent > 0 "
                            "THEN 1 ELSE 0 END) FROM enrollments",
    "sum_bad_cast": "SELECT sum(CASE WHEN CAST(school AS INTEGER) > 0 THEN 1 ELSE 0 END) FROM enrollments "
                    "WHERE grade = {grade}",
    "repeated_key_overflow": "SELECT (2147483647 * 2147483647 * days_absent) + (2147483647 * 2147483647 * "
                             "days_absent) AS k, count(*) FROM enrollments WHERE grade = {grade} GROUP BY 1",
    "where_not_boolean": "SELECT count(*) FROM enrollments WHERE CASE WHEN grade = {grade} THEN 'x' "
                         "ELSE 'true' END",
    "where_overflow": "SELECT count(*) FROM enrollments WHERE grade = {grade} AND 2147483647 * 2147483647 "
                      "* days_absent > 1 AND 2147483647 * 2147483647 * days_absent < 9",
}


def run_prepared(enclave: Enclave, sql: str) -> RawResult:
    prepared = enclave.prepare("demo", sql)
    assert prepared.result.accepted, [v.code for v in prepared.result.violations]
    assert prepared.rewritten is not None
    result = enclave.execute_unprotected("demo", prepared.rewritten)
    assert result.columns[-1] == "__units"
    return result


@pytest.mark.parametrize("sql", GUARDED.values(), ids=GUARDED.keys())
def test_accepted_query_with_row_errors_executes(enclave: Enclave, sql: str) -> None:
    run_prepared(enclave, sql)


@pytest.mark.parametrize("template", ORACLES.values(), ids=ORACLES.keys())
def test_accepted_query_is_no_error_oracle(enclave: Enclave, template: str) -> None:
    """The same query with a condition no row meets (grade 99) and one many rows meet (grade 3) both run."""
    none_reach = run_prepared(enclave, template.format(grade=99))
    many_reach = run_prepared(enclave, template.format(grade=3))
    assert len(none_reach.columns) == len(many_reach.columns)


@pytest.mark.parametrize("sql", [
    "SELECT sum(2147483647 * 2147483647 * days_absent) FROM enrollments WHERE grade = 3",
    "SELECT avg(CASE WHEN grade = 3 THEN 2147483647 * 2147483647 * days_absent ELSE 0 END) FROM enrollments",
], ids=["sum", "avg"])
def test_overflowing_measure_arithmetic_is_refused_by_check(enclave: Enclave, sql: str) -> None:
    """An argument whose bounds pass 1e9 has no usable bounds: its overflow never reaches the engine."""
    result = enclave.check("demo", sql)
    assert [v.code for v in result.violations] == ["unbounded_aggregate"]
