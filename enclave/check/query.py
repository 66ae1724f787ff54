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
from enclave.check.scope import sources, using_columns
from enclave.check.semantics import (
    BOUNDED_AGGREGATES,
    Context,
    aggregate_function,
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


OutputColumn = KeyColumn | AggregateColumn


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

    @property
    def keys(self) -> tuple[KeyColumn, ...]:
        return tuple(c for c in self.columns if isinstance(c, KeyColumn))

    @property
    def aggregates(self) -> tuple[AggregateColumn, ...]:
        return tuple(c for c in self.columns if isinstance(c, AggregateColumn))

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
    for index, item in enumerate(tree.expressions):
        if not isinstance(item, exp.Alias):
            item.replace(exp.alias_(item.copy(), output_name(item), quoted=True))
        tree.expressions[index].meta.update(item.meta)
    return tree


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
    """The checked query's output columns and order, read off its qualified tree."""
    scope = sources(tree)
    keys = group_keys(tree)
    left = {join.this.alias_or_name.lower() for join in tree.args.get("joins") or []
            if (join.side or "").lower() == "left"}

    def column_of(column: exp.Column) -> Column | None:
        resolved = ctx.resolve(column, scope)
        return resolved.column if resolved is not None and resolved.source.alias not in left else None

    columns: list[OutputColumn] = []
    for item, written in zip(tree.expressions, output_items(tree), strict=True):
        name = output_name(item)
        inner, digits = rounded(written)
        if isinstance(inner, exp.AggFunc):
            function = aggregate_function(inner)
            arg = None if isinstance(inner.this, exp.Star) else inner.this
            if isinstance(arg, exp.Distinct):  # COUNT(DISTINCT t.person_id): which table's persons it counts
                arg = arg.expressions[0]
            interval = None
            if function in BOUNDED_AGGREGATES and arg is not None:
                interval = bounds(arg, lambda c: (r.column if (r := ctx.resolve(c, scope)) else None))
            present = arg is not None and function in BOUNDED_AGGREGATES and never_null(arg, column_of)
            quantile = quantile_of(inner) if function in ("median", "quantile_cont") else None
            columns.append(AggregateColumn(name, "quantile" if quantile is not None else function, arg, interval,
                                           digits, present, quantile))
        else:
            form = ctx.canonical(inner, scope)
            columns.append(KeyColumn(name, next(key for key in keys if ctx.canonical(key, scope) == form)))
    order = tree.args.get("order")
    ordering = tuple(
        (position, bool(ordered.args.get("desc")))
        for ordered in (order.expressions if order is not None else [])
        if (position := order_position(ordered, tree, ctx)) is not None
    )
    unit = exp.column(ctx.manifest.privacy_unit, table=scope[0].alias, quoted=True)
    limit, offset = tree.args.get("limit"), tree.args.get("offset")
    rows = limit.expression if limit is not None else None
    return CheckedQuery(ctx.manifest.name, tree, tuple(columns), ordering, unit, ctx.rules.sha256,
                        int(rows.this) if isinstance(rows, exp.Literal) else None,
                        int(offset.expression.this) if offset is not None else 0)
