"""The checked query: the qualified tree plus what each output column is, handed to the rewrite stage.

Normalisation happens before the semantic checks (GROUP BY ALL, positions and aliases become the
expressions they stand for; every output column gets its name as an alias), qualification after them
(sqlglot's `qualify` against the manifest's schema, so every column names its table). The result is a
canonical tree: two queries that mean the same thing render the same SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlglot import exp
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from enclave.catalog.manifest import Column, Manifest
from enclave.check.bounds import Interval, bounds, never_null
from enclave.check.scope import Source, sources, using_columns
from enclave.check.semantics import (
    BOUNDED_AGGREGATES,
    Context,
    aggregate_function,
    derived,
    group_keys,
    order_position,
    output_items,
    output_name,
    quantile_of,
    rounded,
)


@dataclass(frozen=True)
class KeyColumn:
    """An output column that is a grouping key."""

    name: str
    expr: exp.Expr


@dataclass(frozen=True)
class AggregateColumn:
    """An output column that is an aggregate of `arg`: count, count_distinct_unit, sum, avg, quantile (MEDIAN
    and QUANTILE_CONT), var_pop, var_samp, stddev_pop or stddev_samp."""

    name: str
    function: str
    arg: exp.Expr | None
    bounds: Interval | None
    digits: int | None = None  # ROUND(aggregate, digits): applied to the released value
    never_null: bool = False  # `arg` has a value on every row (check.bounds.never_null)
    quantile: float | None = None  # the fraction p of a quantile (MEDIAN is the quantile 0.5)
    hidden: bool = False  # computed and noised only for a derived column or HAVING; never released itself


@dataclass(frozen=True)
class DerivedColumn:
    """An output column computed after protection from released (noisy) aggregates: `expr` is arithmetic
    (+ - * /, unary minus, ROUND, NULLIF, numeric literals) over columns that each name an aggregate
    column of the query, released or hidden. It never sees a true value (disclosure/derived.py)."""

    name: str
    expr: exp.Expr
    digits: int | None = None  # ROUND(expression, digits) around it: applied to the released value


OutputColumn = KeyColumn | AggregateColumn | DerivedColumn


def column_kind(column: OutputColumn) -> str:
    """What an output column is, as a release and a check report name it: key, its aggregate's function
    (count, sum, avg, quantile, ...) or derived."""
    if isinstance(column, KeyColumn):
        return "key"
    return column.function if isinstance(column, AggregateColumn) else "derived"


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed every check, in canonical (qualified) form, with its output described."""

    dataset: str
    tree: exp.Select
    columns: tuple[OutputColumn, ...]
    order: tuple[tuple[int, bool], ...]
    unit: exp.Column
    rules_sha256: str
    limit: int | None = None
    offset: int = 0
    # aggregates that only derived columns or HAVING use: noised (and paid for) like the others, not released
    hidden: tuple[AggregateColumn, ...] = ()
    # HAVING in the form of derived columns (aggregates and keys by their column names), applied to the
    # released values; it never reaches the engine
    having: exp.Expr | None = None

    @property
    def keys(self) -> tuple[KeyColumn, ...]:
        return tuple(c for c in self.columns if isinstance(c, KeyColumn))

    @property
    def aggregates(self) -> tuple[AggregateColumn, ...]:
        """Every aggregate the query computes and noises: the released ones, then the hidden ones."""
        return (*(c for c in self.columns if isinstance(c, AggregateColumn)), *self.hidden)

    @property
    def derived(self) -> tuple[DerivedColumn, ...]:
        return tuple(c for c in self.columns if isinstance(c, DerivedColumn))

    @property
    def canonical_sql(self) -> str:
        return self.tree.sql("duckdb", comments=False)


def desugar(tree: exp.Expr, copy: bool = True) -> exp.Expr:
    """Rewrite sugar into the grammar before it is checked: `AGG(x) FILTER (WHERE c)` is `AGG(CASE WHEN c
    THEN x END)` (COUNT(*) counts `THEN 1`), for COUNT, SUM and AVG; anything else is left to be refused.
    With `copy=False` the tree is changed in place (for a caller that owns it, as check does its parse)."""
    tree = tree.copy() if copy else tree
    for distinct in list(tree.find_all(exp.Distinct)):  # COUNT(DISTINCT(x)) is COUNT(DISTINCT x)
        distinct.set("expressions", [e.this if isinstance(e, exp.Paren) else e for e in distinct.expressions])
    for node in list(tree.find_all(exp.Filter)):
        aggregate, where = node.this, node.expression
        if (isinstance(aggregate, exp.Count | exp.Sum | exp.Avg) and isinstance(where, exp.Where)
                and not isinstance(aggregate.this, exp.Distinct) and not aggregate.expressions):
            value = exp.Literal.number(1) if isinstance(aggregate.this, exp.Star) else aggregate.this
            node.replace(type(aggregate)(this=exp.Case(ifs=[exp.If(this=where.this, true=value)])))
    return tree


def normalize(tree: exp.Select, manifest: Manifest, copy: bool = True) -> exp.Select:
    """GROUP BY ALL, positions and output aliases replaced by their expressions; every output named.
    With `copy=False` the tree is changed in place."""
    tree = tree.copy() if copy else tree
    # An unqualified USING column is the left table's (as in DuckDB); qualify would make it a COALESCE.
    using = using_columns(tree)
    left = sources(tree)[0].alias if sources(tree) else ""
    for column in list(tree.find_all(exp.Column)):
        if not column.table and column.name.lower() in using:
            column.set("table", exp.to_identifier(left))
    items = output_items(tree)
    aliases = {item.alias.lower(): item.this for item in tree.expressions if isinstance(item, exp.Alias)}
    columns = {name for s in sources(tree) if s.table in manifest.tables
               for name in manifest.tables[s.table].columns}
    group = tree.args.get("group")
    if group is not None:
        if group.args.get("all"):
            keys = [item.copy() for item in items if not item.find(exp.AggFunc)]
        else:
            keys = [_expand_group_key(key, items, aliases, columns) for key in group.expressions]
        tree.set("group", exp.Group(expressions=keys))
    having = tree.args.get("having")
    if having is not None:  # an output alias in HAVING stands for its expression, as in GROUP BY
        for column in list(having.find_all(exp.Column)):
            target = aliases.get(column.name.lower())
            if not column.table and column.name.lower() not in columns and target is not None:
                column.replace(_positioned(target.copy(), column))
    for index, item in enumerate(tree.expressions):
        if not isinstance(item, exp.Alias):
            item.replace(exp.alias_(item.copy(), output_name(item), quoted=True))
        tree.expressions[index].meta.update(item.meta)
    return tree


_POSITIONS = ("line", "col", "start", "end")


def _positioned(node: exp.Expr, place: exp.Expr) -> exp.Expr:
    """`node` as if written at `place`: a violation inside an output alias's expression in HAVING points
    at the alias there (the expression itself is judged, and pointed at, in the SELECT list)."""
    for part in node.walk():
        for key in _POSITIONS:
            if part._meta is not None:
                part._meta.pop(key, None)
    node.meta.update({key: place.meta[key] for key in _POSITIONS if key in place.meta})
    return node


def _expand_group_key(key: exp.Expr, items: list[exp.Expr], aliases: dict[str, exp.Expr],
                      columns: set[str]) -> exp.Expr:
    if isinstance(key, exp.Literal) and not key.is_string and key.this.isdigit():
        position = int(key.this) - 1
        return items[position].copy() if 0 <= position < len(items) else key
    # As in DuckDB, a table column wins over an output alias of the same name.
    if isinstance(key, exp.Column) and not key.table and key.name.lower() not in columns:
        target = aliases.get(key.name.lower())
        if target is not None:
            return target.copy()
    return key


def qualified(tree: exp.Select, manifest: Manifest, copy: bool = True) -> exp.Select:
    """sqlglot's qualify against the manifest's schema: every column named by its table, quoted.
    With `copy=False` the tree is qualified in place."""
    # qualify normalises identifier case; output names come back as the researcher wrote them
    names = [output_name(item) for item in tree.expressions]
    result = qualify(tree.copy() if copy else tree, schema=_schema(manifest), dialect="duckdb",
                     validate_qualify_columns=True, quote_identifiers=True)
    for item, name in zip(result.expressions, names, strict=True):
        item.set("alias", exp.to_identifier(name, quoted=True))
    return result


def _schema(manifest: Manifest) -> MappingSchema:
    """The manifest's tables as sqlglot's schema. Its names are normalised once per set of tables
    (`_normalized`); each qualify gets a schema object of its own, as sqlglot's lookup caches keep the
    researcher's table nodes, which a schema shared by every query would pile up."""
    tables = tuple((name, tuple((c, spec.type) for c, spec in table.columns.items()))
                   for name, table in manifest.tables.items())
    return MappingSchema(_normalized(tables), dialect="duckdb", normalize=False)


@lru_cache(maxsize=64)
def _normalized(tables: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]) -> dict:
    return MappingSchema({name: dict(columns) for name, columns in tables}, dialect="duckdb").mapping


def describe(tree: exp.Select, ctx: Context) -> CheckedQuery:
    """The checked query's output columns and order, read off its qualified tree.

    An aggregate inside a derived column or HAVING is referred to by the name of the released aggregate
    column that computes the same thing (unrounded), else by a hidden one of its own (`__h0`, ...)."""
    scope = sources(tree)
    keys = group_keys(tree)
    left = frozenset(join.this.alias_or_name.lower() for join in tree.args.get("joins") or []
                     if (join.side or "").lower() == "left")
    columns: list[OutputColumn | None] = []
    pending: list[tuple[int, str, exp.Expr, int | None]] = []
    named: dict[str, str] = {}  # canonical form of an unrounded released aggregate -> its column
    for item, written in zip(tree.expressions, output_items(tree), strict=True):
        name = output_name(item)
        inner, digits = rounded(written)
        if isinstance(inner, exp.AggFunc):
            columns.append(_aggregate_column(inner, name, digits, ctx, scope, left))
            if digits is None:
                named.setdefault(ctx.canonical(inner, scope), name)
        elif written.find(exp.AggFunc):
            pending.append((len(columns), name, *derived(written)))
            columns.append(None)  # filled in once every released aggregate is known
        else:
            form = ctx.canonical(inner, scope)
            columns.append(KeyColumn(name, next(key for key in keys if ctx.canonical(key, scope) == form)))
    key_names = {ctx.canonical(c.expr, scope): c.name for c in columns if isinstance(c, KeyColumn)}
    hidden: list[AggregateColumn] = []

    def referenced(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.AggFunc):
            form = ctx.canonical(node, scope)
            if form not in named:
                named[form] = f"__h{len(hidden)}"
                hidden.append(_aggregate_column(node, named[form], None, ctx, scope, left, hidden=True))
            return exp.column(named[form], quoted=True)
        if not node.find(exp.AggFunc) and (key := key_names.get(ctx.canonical(node, scope))) is not None:
            return exp.column(key, quoted=True)
        return node

    for index, name, expression, digits in pending:
        columns[index] = DerivedColumn(name, expression.transform(referenced), digits)
    having = tree.args.get("having")
    condition = having.this.transform(referenced) if having is not None else None
    order = tree.args.get("order")
    ordering = tuple(
        (position, bool(ordered.args.get("desc")))
        for ordered in (order.expressions if order is not None else [])
        if (position := order_position(ordered, tree, ctx)) is not None
    )
    unit = exp.column(ctx.manifest.privacy_unit, table=scope[0].alias, quoted=True)
    limit, offset = tree.args.get("limit"), tree.args.get("offset")
    rows = limit.expression if limit is not None else None
    return CheckedQuery(ctx.manifest.name, tree, tuple(c for c in columns if c is not None), ordering, unit,
                        ctx.rules.sha256, int(rows.this) if isinstance(rows, exp.Literal) else None,
                        int(offset.expression.this) if offset is not None else 0, tuple(hidden), condition)


def _aggregate_column(node: exp.AggFunc, name: str, digits: int | None, ctx: Context, scope: list[Source],
                      left: frozenset[str], hidden: bool = False) -> AggregateColumn:
    """One aggregate as the rewrite and plan stages compute it. `left` are the LEFT-joined tables, whose
    columns may be NULL on any row."""
    function = aggregate_function(node)
    arg = None if isinstance(node.this, exp.Star) else node.this
    if isinstance(arg, exp.Distinct):  # COUNT(DISTINCT t.person_id): which table's persons it counts
        arg = arg.expressions[0]
    interval = None
    if function in BOUNDED_AGGREGATES and arg is not None:
        interval = bounds(arg, lambda c: (r.column if (r := ctx.resolve(c, scope)) else None))

    def column_of(column: exp.Column) -> Column | None:
        resolved = ctx.resolve(column, scope)
        return resolved.column if resolved is not None and resolved.source.alias not in left else None

    present = arg is not None and function in BOUNDED_AGGREGATES and never_null(arg, column_of)
    quantile = quantile_of(node) if function in ("median", "quantile_cont") else None
    return AggregateColumn(name, "quantile" if quantile is not None else function, arg, interval, digits, present,
                           quantile, hidden)
