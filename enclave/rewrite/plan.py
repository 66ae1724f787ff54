"""The rewrite stage's plan: a checked query taken apart into what the executed SQL will compute.

A `Plan` holds the relation (FROM, JOIN, WHERE of the checked tree), the privacy unit, the grouping
keys and the measures, plus the contribution bounds once they are set. Rewrite rules are pure
functions from plan to plan; `render` turns a plan into SQL through sqlglot's AST, never by splicing
the researcher's text, so the executed SQL is always regenerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import sqlglot
from sqlglot import exp

from enclave.check.bounds import Interval
from enclave.check.query import AggregateColumn, CheckedQuery, KeyColumn

Function = Literal["count", "count_units", "sum", "avg", "histogram", "quantile", "var_pop", "var_samp",
                   "stddev_pop", "stddev_samp"]
Part = Literal["value", "sum", "count", "units", "histogram", "squares", "var_sum", "var_count"]


@dataclass(frozen=True)
class Measure:
    """One aggregate the executed SQL computes, and which output column (and part of it) it serves."""

    name: str
    function: Function
    arg: exp.Expr | None
    output: str
    part: Part = "value"
    bounds: Interval | None = None
    never_null: bool = False  # `arg` has a value on every row: COUNT(arg) is COUNT(*)
    centre: float = 0.0  # a sum adds up `arg - centre` (clamped first): see rewrite.rules.split_averages
    edges: tuple[float, ...] = ()  # a histogram's bin edges: `arg` is the bin of each row (rules.bin_quantiles)


@dataclass(frozen=True)
class Prepared:
    """A bound the build prepared (enclave.catalog.bounding): a filter on the table's bounding columns.

    `groups` names the group columns of the set of dimension columns the query's keys are computed from;
    `firsts` says the keys are exactly those columns, so a group's persons are the sum of its first-row marks.
    """

    groups: str
    firsts: bool


@dataclass(frozen=True)
class Bounds:
    """Per-person contribution bounds and the salt that makes the choice of rows deterministic; `prepared`
    where the build's bounding columns apply to the query (a filter instead of per-query windows)."""

    max_rows: int
    max_groups: int
    salt: int
    prepared: Prepared | None = None


@dataclass(frozen=True)
class Plan:
    relation: exp.Select
    unit: exp.Column
    keys: tuple[KeyColumn, ...]
    measures: tuple[Measure, ...]
    bounds: Bounds | None = None
    filtered: bool = False  # the researcher wrote a WHERE (the consent restriction is not one)


def plan_of(query: CheckedQuery) -> Plan:
    """The plan that computes a checked query exactly as written (no rule applied yet)."""
    relation = exp.Select()
    for arg in ("from_", "joins", "where"):
        value = query.tree.args.get(arg)
        if value:
            relation.set(arg, [_detached(v) for v in value] if isinstance(value, list) else _detached(value))
    functions: dict[str, Function] = {"count": "count", "count_distinct_unit": "count_units", "sum": "sum",
                                      "avg": "avg", "quantile": "quantile", "var_pop": "var_pop",
                                      "var_samp": "var_samp", "stddev_pop": "stddev_pop",
                                      "stddev_samp": "stddev_samp"}
    # hidden aggregates (used only by derived columns or HAVING) are computed and noised like the others
    measures = tuple(Measure(c.name, functions[c.function], _measured(c, query), c.name, bounds=c.bounds,
                             never_null=c.never_null) for c in query.aggregates)
    keys = tuple(KeyColumn(k.name, _detached(k.expr)) for k in query.keys)
    return Plan(relation, _detached(query.unit), keys, measures, filtered=query.tree.args.get("where") is not None)


_POSITIONS = frozenset({"line", "col", "start", "end"})


def _detached(node: exp.Expr) -> exp.Expr:
    """A copy of a checked node for the plan, without positions (see `_unpositioned`)."""
    return _unpositioned(node.copy())


def _unpositioned(node: exp.Expr) -> exp.Expr:
    """`node` without the positions in the parsed text that the parser left on its nodes. Nothing in the
    rewrite reads them (only violations do, and it makes none), and deep-copying one small dict per
    identifier and literal was half the cost of every later copy. Other meta (a function's written
    name, say) is kept."""
    for part in node.walk():
        if part._meta is not None and part._meta.keys() <= _POSITIONS:
            part._meta = None  # sqlglot's own slot for meta; `meta` only ever adds to it
    return node


def _measured(column: AggregateColumn, query: CheckedQuery) -> exp.Expr | None:
    """The argument a measure computes on. COUNT(DISTINCT t.person_id) keeps its column only where `t` is
    not the first table: it counts the persons with a row of `t` (a LEFT JOIN leaves it NULL for the
    others), while the first table's persons are every person of the query (the units count)."""
    if column.arg is None:
        return None
    if column.function == "count_distinct_unit" and isinstance(column.arg, exp.Column) and (
            column.arg.table == query.unit.table):
        return None
    return _detached(column.arg)


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _named(node: exp.Expr, name: str) -> exp.Alias:
    """`node AS "name"` for a node of the tree being built (already its own copy: not copied again)."""
    return exp.alias_(node, name, quoted=True, copy=False)


def _aggregate(measure: Measure, arg: exp.Expr | None, unit: exp.Expr) -> exp.Expr:
    if measure.function == "count_units":
        return exp.Count(this=exp.Distinct(expressions=[arg if arg is not None else unit]))
    if measure.function == "count":
        return exp.Count(this=arg if arg is not None else exp.Star())
    if measure.function == "histogram":
        return exp.func("histogram", arg)
    return (exp.Sum if measure.function == "sum" else exp.Avg)(this=arg)


def _row_identity(relation: exp.Select) -> list[exp.Column]:
    """The physical identity of a joined row: the rowid of each table (fixed for a data version), which a
    table bounded before its join carries as `__rowid`."""
    tables = [relation.args["from_"].this, *(join.this for join in relation.args.get("joins") or [])]
    return [exp.column("__rowid", table=_ident(t.alias_or_name), quoted=True) if isinstance(t, exp.Subquery)
            else exp.column("rowid", table=_ident(t.alias_or_name)) for t in tables]


def render(plan: Plan) -> str:
    """The SQL that computes a plan, generated from the AST with comments dropped (without sqlglot's
    defensive copy: `build` returns a tree of its own)."""
    return build(plan).sql("duckdb", comments=False, copy=False)


def build(plan: Plan) -> exp.Select:
    """The SELECT that computes a plan: a new tree that shares no node with the plan."""
    if plan.bounds is None:
        return _plain(plan)
    if plan.bounds.prepared is not None:
        return _filtered(plan, plan.bounds, plan.bounds.prepared)
    return _bounded(plan, plan.bounds)


def _plain(plan: Plan) -> exp.Select:
    select = plan.relation.copy()
    select.set("expressions", [
        *(_named(k.expr.copy(), k.name) for k in plan.keys),
        *(_named(_aggregate(m, m.arg.copy() if m.arg else None, plan.unit.copy()), m.name)
          for m in plan.measures),
    ])
    if plan.keys:
        select.set("group", exp.Group(expressions=[k.expr.copy() for k in plan.keys]))
    return select


def _filtered(plan: Plan, bounds: Bounds, prepared: Prepared) -> exp.Select:
    """The plain aggregate of the rows the build prepared the bound for (enclave.catalog.bounding).

    `__r<S> <= R` keeps each person's first R rows, in the build's keyed order, of their G largest groups
    of the dimension columns S the keys are computed from (groups of expressions of S are unions of
    S-groups, so a person is still in at most G of them). It is a plain column filter the engine pushes
    into its scan, ahead of the researcher's WHERE: the bound is a function of each person's rows alone,
    fixed per build, applied before anything the query asks. A group's persons are the sum of its
    first-row marks `__f<S>` where the groups are exactly S and no WHERE can drop a person's first row of
    one; otherwise the distinct integer surrogates `__pid`.
    """
    table = plan.relation.args["from_"].this.alias_or_name

    def own(name: str) -> exp.Column:
        return exp.column(name, table=_ident(table), quoted=True)

    bound = exp.LTE(this=own(f"__r{prepared.groups}"), expression=exp.Literal.number(bounds.max_rows))
    select = _plain(plan)
    where = select.args.get("where")
    select.set("where", exp.Where(this=exp.and_(bound, where.this, copy=False) if where is not None else bound))
    # COALESCE: a query without keys over no rows (nobody consented) has 0 persons, not NULL
    units = exp.Coalesce(this=exp.Sum(this=own(f"__f{prepared.groups}")), expressions=[exp.Literal.number(0)]) if (
        prepared.firsts) else exp.Count(this=exp.Distinct(expressions=[own("__pid")]))
    for named, measure in zip(select.expressions[len(plan.keys):], plan.measures, strict=True):
        if measure.function == "count_units":
            if measure.arg is not None:
                raise ValueError("a prepared bound applies to one table: its persons are the query's units")
            named.set("this", units.copy())
    return select


def _bounded(plan: Plan, bounds: Bounds) -> exp.Select:
    """Each person's contribution bounded, aggregated per (person, group) first (Wilson et al., 2020).

    `__rows` projects the unit, keys and measure arguments of every row that passes WHERE, with a hash
    of (salt, unit, row identity) as its order. `__cells` aggregates them per (person, group) with a
    hash aggregate, and `__per_unit` counts each person's rows and groups on that smaller table. A
    person within both bounds keeps every cell (`__within`): no sort, and that is nearly everyone.
    For the others, groups come first, then rows: `__over_groups` ranks a person's cells by their row
    count and keeps the `max_groups` largest, and `__over_rows` keeps, of the person's rows in those
    groups, the first `max_rows` in hash order, aggregated into cells the same way. Cutting rows
    first would waste the row bound on groups the group cut then drops (60 rows in 20 groups kept 7,
    not 12); this way a person keeps min(max_rows, rows of their largest max_groups groups). Without
    keys a person has one group and only the row cut applies. Ties between groups are broken by a
    hash of (salt, unit, keys), then the keys, and between rows by the row identity, so the choice is
    a function of the data version and the salt alone: a repeated query sees the same rows.

    The choice reads only the person's own rows, so the bound is still a function applied to each
    person separately, and what a person can add to or take from the result is unchanged: at most
    `max_rows` rows in at most `max_groups` groups. For a person within the bounds the windows would
    keep every row, so this is exactly the windowed bound applied to everyone, at the cost of hash
    aggregates. The final SELECT adds the cells up per group; a group's persons are its cells.
    """
    identity = _row_identity(plan.relation)
    args = {m.name: f"__a{i}" for i, m in enumerate(plan.measures) if m.arg}
    rows = plan.relation.copy()
    rows.set("expressions", [
        _named(plan.unit.copy(), "__unit"),
        *(_named(k.expr.copy(), f"__k{i}") for i, k in enumerate(plan.keys)),
        *(_named(m.arg.copy(), args[m.name]) for m in plan.measures if m.arg),
        *(_named(column.copy(), f"__r{i}") for i, column in enumerate(identity)),  # and in the hash below
        _named(exp.func("hash", exp.Literal.number(bounds.salt), plan.unit.copy(), *identity), "__row_order"),
    ])
    keys = ", ".join(f'"__k{i}"' for i in range(len(plan.keys)))
    cell_by = ", ".join(['"__unit"', *([keys] if keys else [])])
    partials = ", ".join(['count(*) AS "__n"', *(
        f'{_PARTIALS[m.function]}("{column}") AS "{column}"' for m in plan.measures if (column := args.get(m.name)))])
    row_ids = ", ".join(f'"__r{i}"' for i in range(len(identity)))
    within = f'u."__n" <= {int(bounds.max_rows)} AND u."__g" <= {int(bounds.max_groups)}'
    largest = (f' QUALIFY row_number() OVER (PARTITION BY "__unit" ORDER BY c."__n" DESC, '
               f'hash({int(bounds.salt)}, "__unit", {keys}), {keys}) <= {int(bounds.max_groups)}') if keys else ""
    in_group = " AND ".join(['r."__unit" = g."__unit"', *(
        f'r."__k{i}" IS NOT DISTINCT FROM g."__k{i}"' for i in range(len(plan.keys)))])  # a NULL key is a group
    # Only integers and this stage's own column names are formatted into these fixed query shapes.
    fixed = {
        "__cells": f'SELECT {cell_by}, {partials} FROM "__rows" GROUP BY {cell_by}',
        "__per_unit": 'SELECT "__unit", sum("__n") AS "__n", count(*) AS "__g" FROM "__cells" GROUP BY "__unit"',
        "__within": f'SELECT c.* FROM "__cells" AS c JOIN "__per_unit" AS u USING ("__unit") WHERE {within}',
        "__over_groups": (f'SELECT {cell_by} FROM "__cells" AS c JOIN "__per_unit" AS u USING ("__unit") '
                          f'WHERE NOT ({within}){largest}'),
        "__over_rows": (f'SELECT r.* FROM "__rows" AS r JOIN "__over_groups" AS g ON {in_group} '
                        f'QUALIFY row_number() OVER (PARTITION BY r."__unit" ORDER BY "__row_order", '
                        f'{row_ids}) <= {int(bounds.max_rows)}'),
        "__bounded": (f'SELECT * FROM "__within" UNION ALL '
                      f'SELECT {cell_by}, {partials} FROM "__over_rows" GROUP BY {cell_by}'),
    }
    final = exp.select(
        *(_named(exp.column(f"__k{i}", quoted=True), k.name) for i, k in enumerate(plan.keys)),
        *(_named(_from_cells(m, args.get(m.name)), m.name) for m in plan.measures),
    ).from_(exp.Table(this=_ident("__bounded")), copy=False)
    if plan.keys:
        final = final.group_by(*(exp.column(f"__k{i}", quoted=True) for i in range(len(plan.keys))), copy=False)
    # One WITH built once: `Select.with_` would copy the growing tree for every CTE.
    ctes = [("__rows", rows), *((name, _parsed(query).copy()) for name, query in fixed.items())]
    final.set("with_", exp.With(expressions=[exp.CTE(this=query, alias=_ident(name)) for name, query in ctes]))
    return final


@lru_cache(maxsize=256)
def _parsed(fixed: str) -> exp.Expr:
    """A fixed query shape, parsed once per process. Shared: callers copy it before they use it.

    The shapes vary only with the integers and column counts formatted into them (bounds, salt, the
    numbers of keys, measures and tables), so a process sees few of them."""
    return _unpositioned(sqlglot.parse_one(fixed, read="duckdb"))


# A measure's partial per (person, group) cell: a histogram keeps the cell's bins (its NULLs dropped).
_PARTIALS = {"sum": "sum", "count": "count", "count_units": "count", "histogram": "list"}


def _from_cells(measure: Measure, column: str | None) -> exp.Expr:
    """A measure as a total over (person, group) cells: a group's persons are its cells, and a joined
    table's persons the cells with at least one of its rows (a non-NULL person key of that table)."""
    if measure.function == "count_units":
        if column is None:
            return exp.Count(this=exp.Star())
        has_row = exp.GT(this=exp.column(column, quoted=True), expression=exp.Literal.number(0))
        return exp.Count(this=exp.Case(ifs=[exp.If(this=has_row, true=exp.Literal.number(1))]))
    if measure.function == "histogram":  # the group's bins, counted: a MAP of bin -> rows
        bins = exp.func("flatten", exp.func("list", exp.column(column or "__n", quoted=True)))
        return exp.func("list_aggregate", bins, exp.Literal.string("histogram"))
    return exp.Sum(this=exp.column(column or "__n", quoted=True))
