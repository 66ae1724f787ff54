"""The rewrite stage's plan: a checked query taken apart into what the executed SQL will compute.

A `Plan` holds the relation (FROM, JOIN, WHERE of the checked tree), the privacy unit, the grouping
keys and the measures, plus the contribution bounds once they are set. Rewrite rules are pure
functions from plan to plan; `render` turns a plan into SQL through sqlglot's AST, never by splicing
the researcher's text, so the executed SQL is always regenerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlglot
from sqlglot import exp

from enclave.check.bounds import Interval
from enclave.check.query import AggregateColumn, CheckedQuery, KeyColumn

Function = Literal["count", "count_units", "sum", "avg"]
Part = Literal["value", "sum", "count", "units"]


@dataclass(frozen=True)
class Measure:
    """One aggregate the executed SQL computes, and which output column (and part of it) it serves."""

    name: str
    function: Function
    arg: exp.Expr | None
    output: str
    part: Part = "value"
    bounds: Interval | None = None


@dataclass(frozen=True)
class Bounds:
    """Per-person contribution bounds and the salt that makes the choice of rows deterministic."""

    max_rows: int
    max_groups: int
    salt: int


@dataclass(frozen=True)
class Plan:
    relation: exp.Select
    unit: exp.Column
    keys: tuple[KeyColumn, ...]
    measures: tuple[Measure, ...]
    bounds: Bounds | None = None


def plan_of(query: CheckedQuery) -> Plan:
    """The plan that computes a checked query exactly as written (no rule applied yet)."""
    relation = exp.Select()
    for arg in ("from_", "joins", "where"):
        value = query.tree.args.get(arg)
        if value:
            relation.set(arg, [v.copy() for v in value] if isinstance(value, list) else value.copy())
    functions: dict[str, Function] = {"count": "count", "count_distinct_unit": "count_units", "sum": "sum",
                                      "avg": "avg"}
    measures = tuple(
        Measure(c.name, functions[c.function], c.arg.copy() if c.arg is not None else None, c.name,
                bounds=c.bounds)
        for c in query.columns if isinstance(c, AggregateColumn)
    )
    keys = tuple(KeyColumn(k.name, k.expr.copy()) for k in query.keys)
    return Plan(relation, query.unit.copy(), keys, measures)


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _aggregate(measure: Measure, arg: exp.Expr | None, unit: exp.Expr) -> exp.Expr:
    if measure.function == "count_units":
        return exp.Count(this=exp.Distinct(expressions=[unit]))
    if measure.function == "count":
        return exp.Count(this=arg if arg is not None else exp.Star())
    return (exp.Sum if measure.function == "sum" else exp.Avg)(this=arg)


def _row_identity(relation: exp.Select) -> list[exp.Column]:
    """The physical identity of a joined row: the rowid of each table (fixed for a data version)."""
    tables = [relation.args["from_"].this, *(join.this for join in relation.args.get("joins") or [])]
    return [exp.column("rowid", table=_ident(t.alias_or_name)) for t in tables]


def render(plan: Plan) -> str:
    """The SQL that computes a plan, generated from the AST with comments dropped."""
    return build(plan).sql("duckdb", comments=False)


def build(plan: Plan) -> exp.Select:
    if plan.bounds is None:
        return _plain(plan)
    return _bounded(plan, plan.bounds)


def _plain(plan: Plan) -> exp.Select:
    select = plan.relation.copy()
    select.set("expressions", [
        *(exp.alias_(k.expr.copy(), k.name, quoted=True) for k in plan.keys),
        *(exp.alias_(_aggregate(m, m.arg.copy() if m.arg else None, plan.unit.copy()), m.name, quoted=True)
          for m in plan.measures),
    ])
    if plan.keys:
        select.set("group", exp.Group(expressions=[k.expr.copy() for k in plan.keys]))
    return select


def _bounded(plan: Plan, bounds: Bounds) -> exp.Select:
    """Rows of each person bounded by a keyed-hash order, then the groups each person reaches.

    `__rows` projects the unit, keys and measure arguments of every row that passes WHERE, with a hash
    of (salt, unit, row identity) as its order. `__bounded_rows` keeps each person's first `max_rows`
    rows in that order; `__bounded` then keeps the rows of each person's first `max_groups` groups, in
    an order keyed by (salt, unit, keys). Ties are broken by the row identity and the keys themselves,
    so the choice is a function of the data version and the salt alone.
    """
    identity = _row_identity(plan.relation)
    unit = exp.column("__unit", quoted=True)
    key_cols = [exp.column(f"__k{i}", quoted=True) for i in range(len(plan.keys))]
    arg_cols = {m.name: exp.column(f"__a{i}", quoted=True) for i, m in enumerate(plan.measures) if m.arg}
    rows = plan.relation.copy()
    rows.set("expressions", [
        exp.alias_(plan.unit.copy(), "__unit", quoted=True),
        *(exp.alias_(k.expr.copy(), f"__k{i}", quoted=True) for i, k in enumerate(plan.keys)),
        *(exp.alias_(m.arg.copy(), arg_cols[m.name].name, quoted=True) for m in plan.measures if m.arg),
        *(exp.alias_(column, f"__r{i}", quoted=True) for i, column in enumerate(identity)),
        exp.alias_(exp.func("hash", exp.Literal.number(bounds.salt), plan.unit.copy(), *identity),
                   "__row_order", quoted=True),
    ])
    row_ids = ", ".join(f'"__r{i}"' for i in range(len(identity)))
    # Only integers and this stage's own column names are formatted into these fixed query shapes.
    bounded_rows = sqlglot.parse_one(
        f'SELECT * FROM "__rows" QUALIFY row_number() OVER (PARTITION BY "__unit" '  # noqa: S608
        f'ORDER BY "__row_order", {row_ids}) <= {int(bounds.max_rows)}', read="duckdb")
    ctes = [("__rows", rows), ("__bounded_rows", bounded_rows)]
    if plan.keys:
        keys = ", ".join(f'"__k{i}"' for i in range(len(plan.keys)))
        ctes.append(("__bounded", sqlglot.parse_one(
            f'SELECT * FROM "__bounded_rows" QUALIFY dense_rank() OVER (PARTITION BY "__unit" '  # noqa: S608
            f'ORDER BY hash({int(bounds.salt)}, "__unit", {keys}), {keys}) <= {int(bounds.max_groups)}',
            read="duckdb")))
    final_source = ctes[-1][0]
    final = exp.select(
        *(exp.alias_(col, k.name, quoted=True) for col, k in zip(key_cols, plan.keys, strict=True)),
        *(exp.alias_(_aggregate(m, arg_cols[m.name].copy() if m.arg else None, unit.copy()), m.name, quoted=True)
          for m in plan.measures),
    ).from_(exp.Table(this=_ident(final_source)))
    if plan.keys:
        final = final.group_by(*(col.copy() for col in key_cols))
    for name, query in ctes:
        final = final.with_(exp.to_identifier(name, quoted=True), as_=query)
    return final
