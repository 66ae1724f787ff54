"""Property tests of `enclave.check.check`: it never raises, and what it accepts is safe and runs.

1. Any text (random strings, soups of SQL tokens): a CheckResult with documented codes and positions
   inside the text.
2. Mutations of valid demo queries (and of generated valid ones): for everything accepted, the re-check
   is clean, the rewrite renders one SELECT, and the canonical tree reads only manifest tables, uses the
   privacy unit only in COUNT(DISTINCT) and join conditions, and has no subquery, window or CTE.
3. Everything accepted is either refused by `Enclave.prepare` as type_mismatch (the engine binds the
   rewritten SQL without reading data; check does not type-check) or executes in the real sandbox
   (too_many_groups aside).
Plus hostile nesting and size: refused with a size code, quickly, never a RecursionError; and positions
that count lines as str.splitlines() does, with a render that never raises.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import sqlglot
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from sqlglot import exp

from enclave.catalog import bounding
from enclave.catalog.manifest import Manifest, load_manifest
from enclave.check import CODES, CheckResult, check, recheck
from enclave.execute.sandbox import ExecutionError
from enclave.pipeline import Enclave
from enclave.policy import Rules
from enclave.rewrite import rewrite
from enclave.settings import PROJECT_ROOT

# Strategies are built at import, so they read the manifest directly (the same file as the fixture).
MANIFEST = load_manifest(PROJECT_ROOT / "datasets" / "demo" / "manifest.yaml")
UNIT = MANIFEST.privacy_unit
TABLES = sorted(MANIFEST.tables)
COLUMNS = sorted({name for table in MANIFEST.tables.values() for name in table.columns})

FUZZ = settings(deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

CORPUS = (
    "SELECT count(*) FROM children",
    "SELECT gender, count(*) FROM children GROUP BY gender",
    "SELECT school_year, COUNT(DISTINCT person_id) AS children, "
    "AVG(CASE WHEN days_absent >= 18 THEN 1 ELSE 0 END) AS chronic_rate "
    "FROM enrollments GROUP BY school_year ORDER BY school_year",
    "SELECT c.gender, AVG(a.scale_score) AS mean_score, COUNT(*) AS tests FROM assessments a "
    "JOIN children c ON a.person_id = c.person_id WHERE a.subject = 'math' GROUP BY c.gender",
    "SELECT school, sum(days_absent) AS absent FROM enrollments WHERE grade BETWEEN 3 AND 5 "
    "GROUP BY school ORDER BY absent DESC",
    "SELECT grade, avg(suspensions), count(*) FROM enrollments WHERE frl_eligible AND NOT iep "
    "GROUP BY 1 ORDER BY 1",
    "SELECT program, school_year, sum(sessions_attended) FROM program_sessions GROUP BY ALL",
    "SELECT visit_type, count(DISTINCT person_id) FROM clinic_visits WHERE visit_year >= 2021 "
    "GROUP BY visit_type",
    "SELECT e.school, count(*) FROM enrollments e JOIN program_sessions p USING (person_id) "
    "WHERE p.program IN ('STEM Lab', 'Arts Studio') GROUP BY e.school",
    "SELECT c.race_ethnicity, avg(e.days_absent) FROM children c LEFT JOIN enrollments e "
    "ON c.person_id = e.person_id GROUP BY c.race_ethnicity",
    "SELECT subject, proficient, count(*) FROM assessments WHERE school_year = 2024 "
    "GROUP BY subject, proficient",
    "SELECT home_zip, count(*) AS n FROM children WHERE birth_year > 2010 AND gender <> 'X' "
    "GROUP BY home_zip ORDER BY n DESC",
    "SELECT CASE WHEN birth_year < 2012 THEN 'older' ELSE 'younger' END AS cohort, count(*) "
    "FROM children GROUP BY cohort",
    "SELECT sum(CASE WHEN days_absent > 10 THEN 1 ELSE 0 END), avg(days_enrolled) FROM enrollments "
    "WHERE school LIKE '%Elementary'",
    "SELECT a.subject, avg(a.scale_score), count(DISTINCT a.person_id) FROM assessments a "
    "JOIN enrollments e ON a.person_id = e.person_id JOIN children c ON c.person_id = a.person_id "
    "WHERE e.grade = 4 AND c.gender = 'F' GROUP BY a.subject",
    "SELECT coalesce(gender, 'unknown') AS g, count(*) FROM children GROUP BY 1",
    "SELECT round(days_absent / 10) AS bucket, count(*) FROM enrollments GROUP BY bucket",
)

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|\w+|::|<>|>=|<=|!=|\|\||//|\S")


def tokens_of(sql: str) -> list[str]:
    return _TOKEN.findall(sql)


VOCABULARY = (
    "SELECT", "FROM", "WHERE", "GROUP BY", "GROUP BY ALL", "ORDER BY", "JOIN", "LEFT JOIN", "RIGHT JOIN",
    "CROSS JOIN", "NATURAL JOIN", "ASOF JOIN", "ON", "USING", "AS", "AND", "OR", "NOT", "IN", "IS", "NULL",
    "BETWEEN", "LIKE", "ILIKE", "DISTINCT", "ALL", "ANY", "EXISTS", "(", ")", ";", ",", "*", ".", "COUNT",
    "SUM", "AVG", "MIN", "MAX", "count(*)", "CASE", "WHEN", "THEN", "ELSE", "END", "WITH", "RECURSIVE",
    "UNION", "UNION ALL", "INTERSECT", "EXCEPT", "OVER", "PARTITION BY", "WINDOW", "QUALIFY", "HAVING",
    "LIMIT", "OFFSET", "FETCH", "LATERAL", "VALUES", "UNNEST", "PIVOT", "UNPIVOT", "USING SAMPLE",
    "TABLESAMPLE", "COLUMNS", "EXCLUDE", "REPLACE", "read_csv", "read_parquet", "query", "query_table",
    "getvariable", "current_setting", "glob", "CAST", "TRY_CAST", "::", "INTEGER", "VARCHAR", "DATE", "BLOB",
    "DESC", "ASC", "NULLS FIRST", "ATTACH", "COPY", "PRAGMA", "SET", "CREATE", "TABLE", "DROP", "INSERT",
    "INTO", "$1", "?", ":name", "[", "]", "{", "}", "->", "=", "==", "<>", "!=", "<", ">", "<=", ">=", "+",
    "-", "/", "//", "%", "||", "^", "~", "&", "--", "/*", "*/", "'", '"', "`", "0", "1", "-1", "2147483647",
    "1e308", "1.5", "'math'", "'F'", "'Oak Elementary'", "''", "TRUE", "FALSE", "DATE '2020-01-01'",
    "INTERVAL 1 DAY", "x -> x", "lambda x: x", "main", "demo", "a", "b", "c", "e", "\n",
    *TABLES, *COLUMNS, *(f"{alias}.{column}" for alias in ("a", "c", "e") for column in COLUMNS[:6]),
)

HOSTILE = (
    "; DROP TABLE children", "; SELECT 1", "UNION SELECT count(*) FROM children",
    f"UNION ALL SELECT {UNIT}, count(*) FROM children GROUP BY 1", "(SELECT 1)",
    f"IN (SELECT {UNIT} FROM children)", "EXISTS (SELECT 1)", "read_csv('x')", "query('SELECT 1')",
    "getvariable('x')", "current_setting('threads')", "OVER ()", "OVER (PARTITION BY grade)",
    "QUALIFY row_number() OVER () = 1", f", {UNIT}", UNIT, f"{UNIT} = 'x'", f"WHERE {UNIT} LIKE 'a%'",
    "LIMIT 1", "OFFSET 1", "HAVING count(*) > 1", "-- ", "/*", "*/", "JOIN children x ON TRUE",
    "CROSS JOIN children", ", children", "USING SAMPLE 10", "TABLESAMPLE 10%", "LATERAL (SELECT 1)",
    f"count(DISTINCT {UNIT})", f"count({UNIT})", f"sum({UNIT})", f"min({UNIT})", f"list({UNIT})",
    f"string_agg({UNIT}, ',')", f"any_value({UNIT})", f"hash({UNIT})", "count(DISTINCT gender)",
    "* 2147483647 * 2147483647", "// 0", "COLUMNS(*)", "c.*", "children.*", "main.children",
    "demo.main.children", "?", "$1", f"ORDER BY {UNIT}", f"GROUP BY {UNIT}", "GROUP BY ALL",
    "GROUP BY ROLLUP (gender)", "::BLOB", "::VARCHAR[]", "[1, 2]", "{'a': 1}", "DISTINCT",
    "WITH t AS (SELECT 1)", "VALUES (1)", "FROM (SELECT 1)", "PIVOT children ON gender USING count(*)",
    "CAST(school AS INTEGER)", "TRY_CAST(gender AS DATE)", "rowid", "children.rowid",
)

GUARDED_DIVISION = "SELECT count(*) FROM enrollments WHERE grade // 0 = 1"

MUTATIONS = ("delete", "duplicate", "swap", "insert", "hostile", "replace")


@st.composite
def mutations_of(draw: st.DrawFn, base: st.SearchStrategy[str], most: int = 3) -> str:
    """A query with up to `most` token-level edits: delete, duplicate, swap, insert, hostile, replace."""
    tokens = tokens_of(draw(base))
    for _ in range(draw(st.integers(0, most))):
        kind = draw(st.sampled_from(MUTATIONS))
        if not tokens:
            kind = "insert"
        at = draw(st.integers(0, max(0, len(tokens) - 1)))
        if kind == "delete":
            del tokens[at]
        elif kind == "duplicate":
            tokens.insert(at, tokens[at])
        elif kind == "swap":
            other = draw(st.integers(0, len(tokens) - 1))
            tokens[at], tokens[other] = tokens[other], tokens[at]
        elif kind == "replace":
            tokens[at] = draw(st.sampled_from(VOCABULARY))
        else:
            fragment = draw(st.sampled_from(VOCABULARY if kind == "insert" else HOSTILE))
            tokens.insert(draw(st.integers(0, len(tokens))), fragment)
    return " ".join(tokens)


# --- valid queries, generated from the manifest --------------------------------------------------------


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _columns(table: str, role: str) -> list[str]:
    return sorted(name for name, column in MANIFEST.tables[table].columns.items() if column.role == role)


@st.composite
def predicates(draw: st.DrawFn, alias: str, table: str) -> str:
    column = draw(st.sampled_from(_columns(table, "dimension") + _columns(table, "measure")))
    spec = MANIFEST.tables[table].columns[column]
    ref = f"{alias}.{column}"
    keys = list(spec.public_keys or ())
    low, high = spec.value_bounds or (0, 1)
    value = _literal(draw(st.sampled_from(keys))) if keys else str(draw(st.integers(int(low), int(high))))
    shape = draw(st.sampled_from(("eq", "neq", "lt", "in", "between", "isnull", "not", "arith", "cast",
                                  "divzero", "case")))
    numeric = spec.type in ("INTEGER", "BIGINT", "DOUBLE")
    if shape == "lt" or (shape in ("between", "arith", "divzero") and not numeric):
        return f"{ref} < {value}"
    if shape == "in":
        values = keys[:3] if keys else [int(low), int(high)]
        return f"{ref} IN ({', '.join(_literal(v) for v in values)})"
    if shape == "between":
        return f"{ref} BETWEEN {int(low)} AND {value}"
    if shape == "isnull":
        return f"{ref} IS {draw(st.sampled_from(('', 'NOT ')))}NULL"
    if shape == "not":
        return f"NOT ({ref} = {value})"
    if shape == "arith":
        return f"{ref} * {draw(st.integers(-3, 1000))} + {draw(st.integers(-1000, 1000))} > {value}"
    if shape == "cast":
        return f"CAST({ref} AS {draw(st.sampled_from(('VARCHAR', 'INTEGER', 'DATE', 'DOUBLE')))}) IS NOT NULL"
    if shape == "divzero":
        return f"{ref} {draw(st.sampled_from(('/', '//', '%')))} {draw(st.integers(0, 3))} = 1"
    if shape == "case":
        return f"CASE WHEN {ref} = {value} THEN 1 ELSE 0 END = 1"
    return f"{ref} {'=' if shape == 'eq' else '<>'} {value}"


@st.composite
def aggregates(draw: st.DrawFn, sources: list[tuple[str, str]]) -> str:
    alias, table = draw(st.sampled_from(sources))
    measures = _columns(table, "measure")
    shape = draw(st.sampled_from(("count_star", "count_units", "count_column", "sum", "avg", "indicator",
                                  "scaled", "least")))
    if shape == "count_star" or (not measures and shape in ("sum", "avg", "scaled", "least")):
        return "count(*)"
    if shape == "count_units":
        return f"count(DISTINCT {alias}.{UNIT})"
    if shape == "count_column":
        return f"count({alias}.{draw(st.sampled_from(_columns(table, 'dimension')))})"
    if shape == "indicator":
        return f"sum(CASE WHEN {draw(predicates(alias, table))} THEN 1 ELSE 0 END)"
    measure = f"{alias}.{draw(st.sampled_from(measures))}"
    if shape == "scaled":
        return f"sum({measure} * {draw(st.integers(-5, 5))} + {draw(st.integers(-100, 100))})"
    if shape == "least":
        return f"avg(least({measure}, {draw(st.integers(0, 200))}))"
    return f"{shape}({measure})"


@st.composite
def mistyped_predicates(draw: st.DrawFn, alias: str, table: str) -> str:
    """A filter the rules accept but DuckDB cannot type: text compared or computed with a number, and so on."""
    column = draw(st.sampled_from(_columns(table, "dimension") + _columns(table, "measure")))
    ref = f"{alias}.{column}"
    if MANIFEST.tables[table].columns[column].type == "VARCHAR":
        return draw(st.sampled_from((f"{ref} < 1", f"{ref} + 1 > 0", f"year({ref}) = 2020",
                                     f"{ref} BETWEEN 1 AND 2")))
    return draw(st.sampled_from((f"lower({ref}) = 'x'", f"year({ref}) = 2020", f"upper({ref}) < 'x'")))


@st.composite
def valid_queries(draw: st.DrawFn, mistyped: bool = False) -> str:
    """A query the rules should accept: manifest tables joined on the unit, keys, aggregates, filters.

    With `mistyped`, one filter is one DuckDB cannot type (check does not type-check: it still accepts it).
    """
    names = draw(st.lists(st.sampled_from(TABLES), min_size=1, max_size=3, unique=True))
    sources = [(f"t{i}", table) for i, table in enumerate(names)]
    joins = "".join(
        f" {draw(st.sampled_from(('JOIN', 'LEFT JOIN', 'INNER JOIN')))} {table} {alias} "
        + (f"USING ({UNIT})" if draw(st.booleans()) else f"ON {sources[0][0]}.{UNIT} = {alias}.{UNIT}")
        for alias, table in sources[1:]
    )
    keys: dict[str, str] = {}  # key expression -> its output item (aliased when its name is taken)
    for alias, table in draw(st.lists(st.sampled_from(sources), max_size=2)):
        key = f"{alias}.{draw(st.sampled_from(_columns(table, 'dimension')))}"
        taken = any(item.endswith(key.split(".")[1]) for item in keys.values())
        keys.setdefault(key, f'{key} AS "k{len(keys)}"' if taken else key)
    measures = draw(st.lists(aggregates(sources), min_size=1, max_size=3))
    items = [*keys.values(), *(f'{measure} AS "m{i}"' for i, measure in enumerate(measures))]
    sql = f"SELECT {', '.join(items)} FROM {sources[0][1]} {sources[0][0]}{joins}"
    filters = [draw(predicates(*draw(st.sampled_from(sources)))) for _ in range(draw(st.integers(0, 2)))]
    if mistyped:
        filters.insert(draw(st.integers(0, len(filters))), draw(mistyped_predicates(*draw(st.sampled_from(sources)))))
    if filters:
        sql += " WHERE " + f" {draw(st.sampled_from(('AND', 'OR')))} ".join(filters)
    if keys:
        sql += " GROUP BY " + ", ".join(keys)
    if draw(st.booleans()):
        sql += f" ORDER BY {draw(st.integers(1, len(items)))}{draw(st.sampled_from(('', ' DESC')))}"
    return sql


TOKEN_SOUP = st.builds(
    lambda words, sep: sep.join(words),
    st.lists(st.sampled_from(VOCABULARY), max_size=40),
    st.sampled_from((" ", "", "\n", "  ")),
)
MUTANTS = st.one_of(mutations_of(st.sampled_from(CORPUS)), mutations_of(valid_queries(), most=2))


# --- helpers ----------------------------------------------------------------------------------------


def _within(lines: list[str], line: int, col: int) -> bool:
    return 1 <= line <= len(lines) and 1 <= col <= len(lines[line - 1]) + 1


def assert_well_formed(result: CheckResult, sql: str) -> None:
    assert isinstance(result, CheckResult)
    assert isinstance(result.accepted, bool)
    assert result.accepted == (not result.violations)
    for violation in result.violations:
        assert violation.code in CODES
        # Neither an exception the check did not foresee (its fail-closed catch-all) nor the engine's code.
        assert violation.code not in ("internal_check_failed", "type_mismatch"), (violation, sql)
        assert isinstance(violation.message, str)
        assert violation.message
        if violation.line is None and violation.col is None:
            continue
        assert violation.line is not None
        assert violation.col is not None
        # Every position (syntax errors too: they are placed by their token's offsets) counts lines as
        # str.splitlines() does, as Violation.render does: it is inside the text, and the render quotes
        # the line it names with the highlight starting at the column.
        lines = sql.splitlines()
        assert _within(lines, violation.line, violation.col), (violation, sql)
        line = lines[violation.line - 1]
        highlight = violation.highlight[:77] if len(violation.highlight) == 80 else violation.highlight  # "..."
        assert line[violation.col - 1:].startswith((highlight.splitlines() or [""])[0]), (violation, sql)
        rendered = violation.render(sql).split("\n")
        assert rendered[0].startswith(f"{violation.code}: line {violation.line}, col {violation.col}: ")
        assert rendered[1] == f"    {line}", (violation, sql)


def _inside_count_distinct(column: exp.Column) -> bool:
    parent = column.parent
    return isinstance(parent, exp.Distinct) and isinstance(parent.parent, exp.Count)


def _inside_join_condition(column: exp.Column) -> bool:
    node: exp.Expr = column
    while node.parent is not None:
        if isinstance(node.parent, exp.Join) and node.arg_key in ("on", "using"):
            return True
        node = node.parent
    return False


def assert_safe_canonical_tree(tree: exp.Select, manifest: Manifest) -> None:
    """What an accepted query may contain, read off its canonical tree independently of the checks."""
    forbidden = (exp.Subquery, exp.Window, exp.WindowSpec, exp.With, exp.CTE, exp.SetOperation, exp.Lateral,
                 exp.Exists, exp.Unnest, exp.Values, exp.Qualify, exp.Fetch, exp.TableSample, exp.Pivot,
                 exp.Placeholder, exp.Parameter, exp.Star)
    for node in tree.walk():
        if isinstance(node, exp.Star):
            assert isinstance(node.parent, exp.Count), tree.sql("duckdb")
            continue
        if isinstance(node, exp.Limit | exp.Offset):  # a whole number of rows, trimmed from the noisy table
            assert node.parent is tree, tree.sql("duckdb")
            assert node.arg_key in ("limit", "offset"), tree.sql("duckdb")
            value = node.expression
            assert isinstance(value, exp.Literal), tree.sql("duckdb")
            assert not value.is_string, tree.sql("duckdb")
            assert value.this.isdigit(), tree.sql("duckdb")
        if isinstance(node, exp.Having):  # post-processing of the released table: the top SELECT's only
            assert node.parent is tree, tree.sql("duckdb")
        assert not isinstance(node, forbidden), (type(node).__name__, tree.sql("duckdb"))
        if isinstance(node, exp.Select):
            assert node is tree, tree.sql("duckdb")
    aliases = {}
    for table in tree.find_all(exp.Table):
        assert isinstance(table.this, exp.Identifier)
        assert not table.args.get("db")
        assert not table.args.get("catalog")
        assert table.name in manifest.tables, table.sql("duckdb")
        aliases[table.alias_or_name] = table.name
    outputs = {item.alias.lower() for item in tree.expressions}  # names are case-insensitive, as in DuckDB
    for column in tree.find_all(exp.Column):
        if not column.table:  # ORDER BY naming an output column
            assert column.find_ancestor(exp.Order) is not None, column.sql("duckdb")
            assert column.name.lower() in outputs
            continue
        assert column.table in aliases, column.sql("duckdb")
        spec = manifest.column(aliases[column.table], column.name)
        assert spec is not None, column.sql("duckdb")
        if spec.role in ("privacy_unit", "restricted"):
            assert spec.role == "privacy_unit"
            assert _inside_count_distinct(column) or _inside_join_condition(column), tree.sql("duckdb")


def assert_accepted_is_safe(result: CheckResult, rules: Rules, manifest: Manifest) -> None:
    assert result.query is not None
    assert recheck(result.query, rules, manifest) == []
    rewritten = rewrite(result.query, manifest, salt=1)
    statements = sqlglot.parse(rewritten.sql, read="duckdb")
    assert len(statements) == 1
    assert isinstance(statements[0], exp.Select)
    # LIMIT and OFFSET trim the released table after noise: the executed SQL never trims true values.
    assert not list(statements[0].find_all(exp.Limit, exp.Offset, exp.Fetch)), rewritten.sql
    assert_safe_canonical_tree(result.query.tree, manifest)


# --- 1. anything in, a well-formed result out ----------------------------------------------------------


@settings(FUZZ, max_examples=1500)
@given(sql=st.text(max_size=300))
def test_random_text_never_raises(rules: Rules, manifest: Manifest, sql: str) -> None:
    result = check(sql, rules, manifest)
    assert_well_formed(result, sql)
    if result.accepted:
        assert_accepted_is_safe(result, rules, manifest)


@settings(FUZZ, max_examples=2500)
@given(sql=TOKEN_SOUP)
def test_token_soup_never_raises(rules: Rules, manifest: Manifest, sql: str) -> None:
    result = check(sql, rules, manifest)
    assert_well_formed(result, sql)
    if result.accepted:
        assert_accepted_is_safe(result, rules, manifest)


# --- 2. mutations: refused cleanly, or accepted and safe ----------------------------------------------


def test_corpus_is_accepted(rules: Rules, manifest: Manifest) -> None:
    for sql in CORPUS:
        result = check(sql, rules, manifest)
        assert result.accepted, (sql, result.violations)
        assert_accepted_is_safe(result, rules, manifest)


@settings(FUZZ, max_examples=150)
@given(sql=valid_queries())
def test_generated_valid_queries_are_accepted(rules: Rules, manifest: Manifest, sql: str) -> None:
    result = check(sql, rules, manifest)
    assert result.accepted, (sql, [(v.code, v.message) for v in result.violations])
    assert_accepted_is_safe(result, rules, manifest)


@settings(FUZZ, max_examples=1500)
@given(sql=MUTANTS)
def test_mutations_are_refused_or_safe(rules: Rules, manifest: Manifest, sql: str) -> None:
    result = check(sql, rules, manifest)
    assert_well_formed(result, sql)
    if result.accepted:
        assert_accepted_is_safe(result, rules, manifest)


# --- 3. accepted queries are refused as ill-typed, or execute ----------------------------------------


@pytest.fixture(scope="module")
def unbound() -> Iterator[duckdb.DuckDBPyConnection]:
    """The manifest's tables with no rows, configured as the sandbox: whatever binds here binds without data."""
    connection = duckdb.connect()
    try:
        for name, table in MANIFEST.tables.items():
            columns = ", ".join(f'"{column}" {spec.type}' for column, spec in table.columns.items())
            connection.execute(f'CREATE TABLE "{name}" ({columns})')
        bounding.prepare(connection, MANIFEST, 0)  # the build's bounding columns, which rewritten queries read
        connection.execute("SET error_on_division_by_zero = false")
        connection.execute("SET disabled_optimizers = 'common_subexpressions'")
        yield connection
    finally:
        connection.close()


def _one_select(connection: duckdb.DuckDBPyConnection, sql: str) -> bool:
    statements = connection.extract_statements(sql)
    return len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT


def _binds(connection: duckdb.DuckDBPyConnection, sql: str) -> bool:
    try:
        connection.execute(f"EXPLAIN {sql}").fetchall()
    except duckdb.Error:
        return False
    return True


@settings(FUZZ, max_examples=200)
@given(sql=st.one_of(valid_queries(), valid_queries(mistyped=True), MUTANTS))
def test_accepted_queries_execute(enclave: Enclave, rules: Rules, manifest: Manifest,
                                  unbound: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Accepted by check: refused by prepare as type_mismatch, decided with no data, or it executes."""
    prepared = enclave.prepare("demo", sql)
    codes = [v.code for v in prepared.result.violations]
    if "type_mismatch" in codes:  # check accepted it (check never says type_mismatch); the engine's bind did not
        assert codes == ["type_mismatch"]
        assert prepared.rewritten is None
        assert prepared.data_version is None
        checked = check(sql, rules, manifest)
        assert checked.accepted
        assert checked.query is not None
        candidate = rewrite(checked.query, manifest, salt=1).sql
        note(candidate)
        assert _one_select(unbound, candidate)  # DuckDB parses it (no chained comparison left): it is ill-typed
        assert not _binds(unbound, candidate)  # on empty tables too: the refusal reads no data
        event("refused by prepare: type_mismatch")
        return
    if not prepared.result.accepted:
        assert prepared.rewritten is None
        event("refused by check")
        return
    assert prepared.rewritten is not None
    note(prepared.rewritten.sql)
    assert _binds(unbound, prepared.rewritten.sql)
    try:
        result = enclave.execute_unprotected("demo", prepared.rewritten)
    except ExecutionError as error:
        failed = error.code
    else:
        assert result.columns[-1] == "__units"
        event("executed")
        return
    assert failed == "too_many_groups", (failed, sql, prepared.rewritten.sql)  # the only failure allowed
    event("too_many_groups")


# check does not type-check; the engine's bind of the rewritten SQL refuses these in prepare, before any data.
ILL_TYPED = {
    "varchar_lt_integer": "SELECT count(*) FROM children WHERE gender < 1",
    "varchar_plus_integer": "SELECT count(*) FROM children WHERE gender + 1 > 0",
    "lower_of_integer": "SELECT count(*) FROM enrollments WHERE lower(grade) = 'x'",
    "year_of_varchar": "SELECT count(*) FROM enrollments WHERE year(school) = 2020",
    "mixed_between": "SELECT count(*) FROM children WHERE gender BETWEEN 1 AND 2",
    "ill_typed_key": "SELECT CASE WHEN home_zip < 2012 THEN 'older' ELSE 'younger' END AS cohort, count(*) "
                     "FROM children GROUP BY cohort",
    "chained_ill_typed": "SELECT home_zip, count(*) FROM children WHERE birth_year > gender <> 'X' "
                         "GROUP BY home_zip",
}


@pytest.mark.parametrize("sql", ILL_TYPED.values(), ids=ILL_TYPED.keys())
def test_ill_typed_queries_are_refused_by_prepare(enclave: Enclave, rules: Rules, manifest: Manifest,
                                                  sql: str) -> None:
    assert check(sql, rules, manifest).accepted
    prepared = enclave.prepare("demo", sql)
    assert [v.code for v in prepared.result.violations] == ["type_mismatch"]
    assert prepared.rewritten is None
    assert prepared.data_version is None


# sqlglot (so check) reads a chained comparison as (a > b) = c; DuckDB refuses one unparenthesized. The
# parenthesize rule makes every operator's precedence explicit, so each runs as the query with the
# parentheses written out.
CHAINED = {
    "chained_comparison": ("SELECT count(*) FROM children WHERE birth_year > 2010 = TRUE",
                           "SELECT count(*) FROM children WHERE (birth_year > 2010) = TRUE"),
    "chained_equality": ("SELECT home_zip, count(*) FROM children WHERE gender = 'F' = TRUE GROUP BY home_zip",
                         "SELECT home_zip, count(*) FROM children WHERE (gender = 'F') = TRUE GROUP BY home_zip"),
    "chained_mixed": ("SELECT gender, count(*) FROM children WHERE gender <> 'X' = birth_year > 2010 "
                      "GROUP BY gender",
                      "SELECT gender, count(*) FROM children WHERE (gender <> 'X') = (birth_year > 2010) "
                      "GROUP BY gender"),
    "chained_in_measure": ("SELECT sum(CASE WHEN birth_year > 2010 = TRUE THEN 1 ELSE 0 END) FROM children",
                           "SELECT sum(CASE WHEN (birth_year > 2010) = TRUE THEN 1 ELSE 0 END) FROM children"),
}


@pytest.mark.parametrize(("chained", "explicit"), CHAINED.values(), ids=CHAINED.keys())
def test_chained_comparisons_execute(enclave: Enclave, chained: str, explicit: str) -> None:
    results = []
    for sql in (chained, explicit):
        prepared = enclave.prepare("demo", sql)
        assert prepared.result.accepted, [v.code for v in prepared.result.violations]
        assert prepared.rewritten is not None
        results.append(sorted(enclave.execute_unprotected("demo", prepared.rewritten).rows, key=repr))
    assert results[0] == results[1]
    assert results[0]


# --- hostile nesting and size -------------------------------------------------------------------------


def _nested_parens(depth: int) -> str:
    return "SELECT count(*) FROM children WHERE " + "(" * depth + "1" + ")" * depth + " = 1"


NESTING = {
    "parens_50": _nested_parens(50),
    "parens_500": _nested_parens(500),
    "parens_5000": _nested_parens(5000),
    "parens_5000_unclosed": "SELECT " + "(" * 5000,
    "brackets_2000": "SELECT " + "[" * 2000 + "]" * 2000,
    "not_2000": "SELECT count(*) FROM children WHERE " + "NOT " * 2000 + "TRUE",
    "not_paren_2000": "SELECT count(*) FROM children WHERE " + "NOT (" * 2000 + "TRUE" + ")" * 2000,
    "minus_2000": "SELECT sum(" + "- " * 2000 + "days_absent) FROM enrollments",
    "minus_paren_2000": "SELECT sum(" + "-(" * 2000 + "days_absent" + ")" * 2000 + ") FROM enrollments",
    "plus_2000": "SELECT count(*) FROM children WHERE birth_year = " + "+ " * 2000 + "1",
    "case_200": "SELECT count(*) FROM children WHERE " + "CASE WHEN TRUE THEN " * 200 + "1" + " END" * 200
                + " = 1",
}


def roomy_rules(rules: Rules) -> Rules:
    """The rules with the text-length and token limits raised, so the depth and node limits act alone."""
    limits = rules.limits.model_copy(update={"max_sql_chars": 1_000_000, "max_tokens": 1_000_000})
    return rules.model_copy(update={"limits": limits})


@pytest.mark.parametrize("sql", NESTING.values(), ids=NESTING.keys())
def test_deep_nesting_is_refused_as_too_deep(rules: Rules, manifest: Manifest, sql: str) -> None:
    """With the length limits out of the way, the depth guard itself must catch each of these."""
    started = time.perf_counter()
    result = check(sql, roomy_rules(rules), manifest)
    assert time.perf_counter() - started < 2
    assert not result.accepted
    assert [v.code for v in result.violations] == ["sql_too_deep"]
    # Under the real rules the same text is refused too, by whichever limit comes first.
    result = check(sql, rules, manifest)
    assert not result.accepted
    assert {v.code for v in result.violations} <= {"sql_too_deep", "sql_too_long"}


def _in_list(count: int) -> str:
    return "SELECT count(*) FROM children WHERE birth_year IN (" + ", ".join(["2010"] * count) + ")"


SIZE = {
    "or_chain_300kb": "SELECT count(*) FROM children WHERE " + " OR ".join(["gender = 'F'"] * 20_000),
    "and_chain_1000": "SELECT count(*) FROM children WHERE " + " AND ".join(["TRUE"] * 1000),
    "concat_5000": "SELECT count(*) FROM children WHERE gender = " + " || ".join(["'a'"] * 5000),
    "in_list_20000": _in_list(20_000),
}


@pytest.mark.parametrize("sql", SIZE.values(), ids=SIZE.keys())
def test_huge_queries_are_refused_as_too_long(rules: Rules, manifest: Manifest, sql: str) -> None:
    started = time.perf_counter()
    result = check(sql, rules, manifest)
    assert time.perf_counter() - started < 2
    assert [v.code for v in result.violations] == ["sql_too_long"]


@pytest.mark.parametrize("sql", [SIZE["or_chain_300kb"], SIZE["and_chain_1000"], SIZE["concat_5000"],
                                 _in_list(2000)],
                         ids=["or_chain_300kb", "and_chain_1000", "concat_5000", "in_list_2000"])
def test_huge_queries_are_refused_as_too_complex(rules: Rules, manifest: Manifest, sql: str) -> None:
    """With the length limits out of the way, the node limit (which counts every node of the parsed tree,
    literals too) stops huge trees, quickly."""
    started = time.perf_counter()
    result = check(sql, roomy_rules(rules), manifest)
    assert time.perf_counter() - started < 5
    assert [v.code for v in result.violations] == ["sql_too_complex"]


@pytest.mark.parametrize("sql", ["SELECT count(*)", "SELECT sum(1) AS s", "SELECT count(*) children"],
                         ids=["count", "sum_literal", "alias_not_table"])
def test_select_without_from_gets_its_own_violation(rules: Rules, manifest: Manifest, sql: str) -> None:
    result = check(sql, rules, manifest)
    assert [(v.code, v.line, v.col) for v in result.violations] == [("missing_table", 1, 8)]


# --- positions ----------------------------------------------------------------------------------------

# Line breaks as str.splitlines() counts them, as Violation.render splits the text.
LINE_BREAKS = {"lf": "\n", "cr": "\r", "crlf": "\r\n", "ff": "\f", "vt": "\v", "nel": "\x85", "ls": "\u2028",
               "ps": "\u2029"}
POSITIONED = {
    # sqlglot's tokenizer counts a line too many after a parameter; the token's offsets place it right.
    "syntax_error_after_parameter": ("$1{br} SELECT", "syntax_error", 2, 2, "SELECT", "     SELECT",
                                     "     ^^^^^^"),
    "restricted_column": ("SELECT count(*) FROM children{br}WHERE person_id = 'x'", "restricted_column", 2, 7,
                          "person_id", "    WHERE person_id = 'x'", "          ^^^^^^^^^"),
}


@pytest.mark.parametrize("br", LINE_BREAKS.values(), ids=LINE_BREAKS.keys())
@pytest.mark.parametrize(("template", "code", "line", "col", "highlight", "quoted", "caret"),
                         POSITIONED.values(), ids=POSITIONED.keys())
def test_positions_count_lines_as_render_does(rules: Rules, manifest: Manifest, br: str, template: str,
                                              code: str, line: int, col: int, highlight: str, quoted: str,
                                              caret: str) -> None:
    sql = template.format(br=br)
    (violation,) = check(sql, rules, manifest).violations
    assert (violation.code, violation.line, violation.col, violation.highlight) == (code, line, col, highlight)
    rendered = violation.render(sql).split("\n")
    assert rendered[0].startswith(f"{code}: line {line}, col {col}: ")
    assert rendered[1:3] == [quoted, caret]


ENCLAVE_CLI = Path(sys.executable).with_name("enclave")


@pytest.mark.parametrize("sql", ["$1 \n SELECT", "SELECT count(*) FROM children\rWHERE person_id = 'x'"],
                         ids=["syntax_error_after_parameter", "restricted_column_after_cr"])
def test_cli_check_renders_the_position(rules: Rules, manifest: Manifest, tmp_path: Path, sql: str) -> None:
    """`enclave check` prints the refusal with the caret under the offending token and exits 1, no traceback."""
    (violation,) = check(sql, rules, manifest).violations
    done = subprocess.run([str(ENCLAVE_CLI), "check", sql], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "ENCLAVE_HOME": str(tmp_path)})
    assert done.returncode == 1, done.stderr
    assert done.stdout == f"refused: 1 violation(s)\n{violation.render(sql)}\n"
    assert done.stderr == ""
