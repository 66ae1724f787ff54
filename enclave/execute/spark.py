"""The Spark engine: the rewritten tree rendered for Spark SQL, run on one SparkSession per process.

Data: each table of a data version's DuckDB file is exported once, as Parquet, into `<database>.parquet/
<table>/` beside it (written to a scratch directory and renamed into place, so a half-written export is
never read). DuckDB's default row groups (122,880 rows) in files of at most 128 MB: Spark splits a scan
at row-group boundaries, so both cores read at once without a partitioning column that would show up as
a column of the table. Hash-bucketing by the person key would save no shuffle, since Spark does not
know DuckDB's hash.

Lock-down (the engine never sees researcher text, only SQL rendered here from the checked tree):
- one SELECT, checked again by parsing the rendering (sqlglot, Spark dialect);
- an allow-list of node types (`ALLOWED`): a construct whose Spark meaning differs from DuckDB's, or was
  not probed on both engines (tests/execute/test_spark.py), is refused before anything is spent;
- `spark.sql.runSQLOnFiles=false` (no ``parquet.`/path` `` in SQL), in-memory catalog (no Hive), no UI;
- `spark.sql.ansi.enabled=false`: a failed cast is NULL, as DuckDB's TRY_CAST; DuckDB's TRY(x) is
  rendered as x with +, -, *, / as Spark's try_add / try_subtract / try_multiply (NULL on
  overflow, where non-ANSI Spark would wrap an integer round);
- Parquet filter pushdown off: statistics pruning makes run time depend on data values;
- every query runs in its own child session (temp views and the consent snapshot are its own) under a
  tag that is interrupted at the deadline;
- engine errors never pass on: each becomes one of the sandbox's `ExecutionError` codes.
"""

from __future__ import annotations

import decimal
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import duckdb
import sqlglot
from sqlglot import exp

from enclave.catalog.bounding import Layout, read_layout
from enclave.execute.sandbox import ExecutionError, RawResult, _round_up
from enclave.policy.rules import Execution
from enclave.rewrite.rules import CONSENTED

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from enclave.rewrite import RewrittenQuery

# The node types the Spark rendering may contain: each probed on both engines (tests/execute/test_spark.py).
ALLOWED: frozenset[type[exp.Expr]] = frozenset({
    exp.Select, exp.With, exp.CTE, exp.From, exp.Join, exp.Where, exp.Group, exp.Subquery, exp.Union,
    exp.Table, exp.TableAlias, exp.Column, exp.Identifier, exp.Alias, exp.Star, exp.Literal, exp.Null,
    exp.Boolean, exp.Paren, exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.NullSafeEQ, exp.NullSafeNEQ, exp.Between, exp.In, exp.Is, exp.Like, exp.Add, exp.Sub, exp.Mul,
    exp.Neg, exp.Case, exp.If, exp.Cast, exp.TryCast, exp.Try, exp.DataType, exp.DataTypeParam,
    exp.Count, exp.Sum, exp.Distinct, exp.Coalesce, exp.Nullif, exp.Floor, exp.Ceil, exp.Lower,
    exp.Upper, exp.Window, exp.RowNumber, exp.Order, exp.Ordered, exp.Qualify,
})
# Not identical on Spark, so refused: DuckDB's hash() and rowid (the bounded shape's row order; Spark's
# hash is another function, Spark has no rowid), list/flatten/list_aggregate (a quantile's histogram),
# ABS (of the least integer: DuckDB raises, Spark wraps), division (DuckDB's x / 0 on integers is
# infinite, not NULL: the probe suite found it),
# date_diff (DuckDB counts boundaries crossed, Spark whole units), and anything not probed.
_TRIES = {exp.Add: "try_add", exp.Sub: "try_subtract", exp.Mul: "try_multiply"}

_SESSION: SparkSession | None = None
_SESSION_LOCK = threading.Lock()


def session(master: str) -> SparkSession:
    """The process's one SparkSession (starting one takes seconds): local, standalone or Spark Connect."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            from pyspark.sql import SparkSession

            builder = SparkSession.builder.appName("enclave")
            builder = builder.remote(master) if master.startswith("sc://") else builder.master(master)
            for key, value in {
                "spark.sql.ansi.enabled": "false",
                "spark.sql.runSQLOnFiles": "false",
                "spark.sql.catalogImplementation": "in-memory",
                "spark.ui.enabled": "false",
                "spark.sql.parquet.filterPushdown": "false",
                "spark.sql.shuffle.partitions": "4",
                "spark.sql.session.timeZone": "UTC",
                "spark.log.level": "ERROR",
            }.items():
                builder = builder.config(key, value)
            _SESSION = builder.getOrCreate()
        return _SESSION


def export_parquet(database: Path) -> Path:
    """The version's tables as Parquet beside its DuckDB file, exported once (atomically) per build."""
    target = database.with_name(database.name + ".parquet")
    if target.exists():
        return target
    scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    scratch.mkdir(parents=True)
    try:
        # a connection of its own, in memory, with the file attached read-only: the sandbox's
        # shared connection to the file is locked and may not write files
        with duckdb.connect(":memory:") as connection:
            connection.execute("ATTACH ? AS build (READ_ONLY)", [str(database)])
            names = [n for (n,) in connection.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'build' AND schema_name = 'main'"
            ).fetchall()]
            for name in names:
                out = scratch / name
                out.mkdir()
                connection.execute(f"COPY build.main.\"{name}\" TO '{out}' "
                                   "(FORMAT parquet, FILE_SIZE_BYTES '128MB', FILENAME_PATTERN 'part_{i}')")
        os.rename(scratch, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def unsupported(tree: exp.Expr) -> exp.Expr | None:
    """The first node of a tree the Spark engine does not accept, or None."""
    for node in tree.walk():
        if type(node) not in ALLOWED:
            return node
        if isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier) and not node.this.quoted and (
                node.name.lower() == "rowid"):
            return node
    return None


_LAZY = (exp.Case, exp.If, exp.Coalesce, exp.Nullif, exp.And, exp.Or)


def _untried(node: exp.Expr) -> exp.Expr:
    """DuckDB's TRY(x) as Spark. In DuckDB an error anywhere in x makes the whole of x NULL (not just the
    failing operator: `TRY(a * b IS NULL)` is NULL on overflow, not true). Spark has no TRY, so each +, -,
    * becomes try_add / try_subtract / try_multiply (NULL on overflow, where non-ANSI Spark would wrap)
    and x is NULL where any of them overflowed: `CASE WHEN <some try_* is NULL on non-NULL operands>
    THEN NULL ELSE x END`. Arithmetic under a branch DuckDB evaluates lazily (CASE, COALESCE, NULLIF,
    AND, OR) is refused: an untaken branch's overflow would make the whole NULL on Spark only."""
    ops = [n for n in node.walk() if type(n) in _TRIES or type(n) is exp.Neg]
    if not ops:
        return node
    for op in ops:
        parent = op.parent
        while parent is not None and op is not node and parent is not node.parent:
            if isinstance(parent, _LAZY):
                raise ExecutionError("engine_unsupported")
            parent = parent.parent
    flags: list[exp.Expr] = []
    for op in reversed(ops):  # children before their parents: operands are already rendered
        left, right = (exp.Literal.number(0), op.this) if type(op) is exp.Neg else (op.this, op.expression)
        name = "try_subtract" if type(op) is exp.Neg else _TRIES[type(op)]
        replacement = exp.Anonymous(this=name, expressions=[left, right])
        flags.append(exp.and_(exp.Is(this=replacement.copy(), expression=exp.Null()),
                              exp.Not(this=exp.Is(this=left.copy(), expression=exp.Null())),
                              exp.Not(this=exp.Is(this=right.copy(), expression=exp.Null()))))
        if op is node:
            node = replacement
        else:
            op.replace(replacement)
    return exp.Case(ifs=[exp.If(this=exp.or_(*flags), true=exp.Null())], default=node)


def render(tree: exp.Select) -> str:
    """The Spark SQL of a rewritten tree (changed in place), or ExecutionError("engine_unsupported")."""
    if unsupported(tree) is not None:
        raise ExecutionError("engine_unsupported")
    for node in [n for n in tree.walk() if isinstance(n, exp.Try)]:
        inner = _untried(node.this)
        if node is tree:
            raise ExecutionError("engine_unsupported")
        node.replace(inner)
    return tree.sql("spark", comments=False)


def _normalised(value: Any) -> Any:
    """A Spark cell as DuckDB's Python client returns it: MAP -> dict, ARRAY -> list, Row -> tuple."""
    from pyspark.sql import Row

    if isinstance(value, dict):
        return {_normalised(k): _normalised(v) for k, v in value.items()}
    if isinstance(value, Row):
        return tuple(_normalised(v) for v in value)
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return value
    return value


class SparkEngine:
    """One data version on Spark: its tables as temp views, in a child session of each query."""

    name = "spark"
    _exported: ClassVar[dict[str, Path]] = {}

    def __init__(self, database: Path, execution: Execution, max_groups: int, master: str = "local[2]") -> None:
        self.database = database
        self.execution = execution
        self.max_groups = max_groups
        self._spark = session(master)
        self._connect = master.startswith("sc://")
        self._parquet = export_parquet(database)
        self._tables = sorted(p.name for p in self._parquet.iterdir() if p.is_dir())
        self._table_rows: dict[str, int] | None = None
        self._layout: Layout | bool | None = False  # False: not read yet

    def sql_of(self, rewritten: RewrittenQuery) -> str:
        return render(rewritten.tree())

    def layout(self) -> Layout | None:
        """The bounding the build prepared, read once from the version's DuckDB file (attached read-only)."""
        if self._layout is False:
            with duckdb.connect(":memory:") as connection:
                connection.execute("ATTACH ? AS build (READ_ONLY)", [str(self.database)])
                connection.execute("USE build")
                self._layout = read_layout(connection)
        return self._layout

    def _query_session(self, consented: Sequence[str] | None) -> SparkSession:
        """A child session (shares the SparkContext, not temp views or SQL settings) with the tables."""
        child = self._spark.newSession()
        for name in self._tables:
            child.read.parquet(str(self._parquet / name)).createOrReplaceTempView(name)
        if consented is not None:
            child.createDataFrame([(k,) for k in consented], "person_id string").createOrReplaceTempView(CONSENTED)
        return child

    def table_rows(self) -> dict[str, int]:
        """As the sandbox's: rounded row counts, read from the Parquet footers' metadata once."""
        if self._table_rows is None:
            child = self._query_session(None)
            self._table_rows = {n: _round_up(child.table(n).count()) for n in self._tables}
        return self._table_rows

    @staticmethod
    def _statement_check(sql: str) -> None:
        try:
            statements = sqlglot.parse(sql, read="spark")
            one_select = len(statements) == 1 and isinstance(statements[0], exp.Select)
        except sqlglot.errors.SqlglotError:
            one_select = False
        if not one_select:
            raise ExecutionError("not_one_select")

    def bind(self, sql: str, consented: Sequence[str] | None = None) -> None:
        """Analyse the query (Spark resolves names and types without running a job)."""
        self._statement_check(sql)
        try:
            self._query_session(consented).sql(sql).schema  # noqa: B018 (analysis happens here)
            binds = True
        except Exception:
            binds = False
        if not binds:
            raise ExecutionError("type_mismatch")

    def execute(self, sql: str, consented: Sequence[str] | None = None,
                deadline_seconds: float | None = None) -> RawResult:
        """Run one SELECT under a tag interrupted at the deadline; at most `max_groups` + 1 rows fetched."""
        self._statement_check(sql)
        limit = self.execution.timeout_seconds + 1.0 if deadline_seconds is None else deadline_seconds
        tag = f"enclave-{uuid.uuid4().hex}"
        child = self._query_session(consented)
        child.addTag(tag)
        context = getattr(child, "sparkContext", None) if not self._connect else None
        done, late = threading.Event(), threading.Event()

        def watch() -> None:
            if not done.wait(limit):
                late.set()
                while not done.wait(0.05):
                    child.interruptTag(tag)  # Spark Connect's (and classic's) cancel by tag
                    if context is not None:
                        context.cancelJobGroup(tag)

        watchdog = threading.Thread(target=watch, daemon=True)
        watchdog.start()
        failure = None
        try:
            if context is not None:  # classic: jobs of this thread are in a group the watchdog cancels
                context.setJobGroup(tag, "enclave query", interruptOnCancel=True)
            frame = child.sql(sql)
            columns = tuple(frame.columns)
            rows = frame.limit(self.max_groups + 1).collect()
        except Exception:
            failure = "execution_timeout" if late.is_set() else "execution_failed"
        finally:
            done.set()
            watchdog.join()
            child.removeTag(tag)
        if late.is_set():  # past the deadline is a timeout, whether or not the interrupt came in time
            failure = "execution_timeout"
        if failure is not None:
            raise ExecutionError(failure)
        if len(rows) > self.max_groups:
            raise ExecutionError("too_many_groups")
        return RawResult(columns, tuple(tuple(_normalised(v) for v in row) for row in rows))

    def close(self) -> None:
        """Nothing to release: the session is the process's, the views die with each child session."""
