"""Rewrite rules: pure functions from plan to plan, applied in the order of `RULES`.

Each rule has a fixture file, tests/fixtures/rewrite/<rule>.sql, of input / expected SQL pairs, which a
reviewer can read as the specification of what the enclave runs in place of the researcher's query.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from enclave.catalog.manifest import ContributionBounds
from enclave.rewrite.plan import Bounds, Measure, Plan

UNITS = "__units"


@dataclass(frozen=True)
class RewriteContext:
    """What the rules need besides the plan: the dataset's contribution bounds and the sampling salt."""

    contribution: ContributionBounds
    salt: int


Rule = Callable[[Plan, RewriteContext], Plan]


def split_averages(plan: Plan, ctx: RewriteContext) -> Plan:
    """AVG(x) becomes SUM(x) and COUNT(x): the two are noised apart and divided after noise."""
    measures: list[Measure] = []
    for m in plan.measures:
        if m.function != "avg":
            measures.append(m)
            continue
        measures.append(dataclasses.replace(m, name=f"{m.name}__sum", function="sum", part="sum"))
        measures.append(dataclasses.replace(m, name=f"{m.name}__count", function="count", part="count",
                                            arg=m.arg.copy() if m.arg is not None else None))
    return dataclasses.replace(plan, measures=tuple(measures))


def _number(value: float) -> exp.Literal:
    return exp.Literal.number(int(value) if float(value).is_integer() else value)


def clamp_measures(plan: Plan, ctx: RewriteContext) -> Plan:
    """Each summed value is clamped to its bounds. NULL stays NULL (unlike LEAST/GREATEST in DuckDB)."""
    measures = []
    for m in plan.measures:
        if m.function == "sum" and m.arg is not None and m.bounds is not None:
            low, high = m.bounds
            clamped = exp.Case(
                ifs=[exp.If(this=exp.LT(this=m.arg.copy(), expression=_number(low)), true=_number(low)),
                     exp.If(this=exp.GT(this=m.arg.copy(), expression=_number(high)), true=_number(high))],
                default=m.arg.copy(),
            )
            m = dataclasses.replace(m, arg=clamped)
        measures.append(m)
    return dataclasses.replace(plan, measures=tuple(measures))


def _try(node: exp.Expr) -> exp.Expr:
    return node if isinstance(node, exp.Try) else exp.Try(this=node)


def guard_errors(plan: Plan, ctx: RewriteContext) -> Plan:
    """Every row-level expression runs inside TRY(): an error becomes NULL instead of failing the query.

    Without this, a query could make DuckDB raise (an overflow, a bad cast) only when some row matches a
    condition, and learn a fact about one person from whether it failed.
    """
    relation = plan.relation.copy()
    where = relation.args.get("where")
    if where is not None:
        where.set("this", _try(where.this))
    keys = tuple(dataclasses.replace(k, expr=_try(k.expr)) for k in plan.keys)
    measures = tuple(dataclasses.replace(m, arg=_try(m.arg)) if m.arg is not None else m for m in plan.measures)
    return dataclasses.replace(plan, relation=relation, keys=keys, measures=measures)


def count_units(plan: Plan, ctx: RewriteContext) -> Plan:
    """Every group also counts its distinct persons: suppression is decided on this count, noised."""
    if any(m.function == "count_units" and m.part == "units" for m in plan.measures):
        return plan
    units = Measure(UNITS, "count_units", None, UNITS, part="units")
    return dataclasses.replace(plan, measures=(*plan.measures, units))


def bound_contributions(plan: Plan, ctx: RewriteContext) -> Plan:
    """At most `max_rows_per_unit` rows and `max_groups_per_unit` groups of each person are used."""
    bounds = Bounds(ctx.contribution.max_rows_per_unit, ctx.contribution.max_groups_per_unit, ctx.salt)
    return dataclasses.replace(plan, bounds=bounds)


RULES: tuple[Rule, ...] = (
    split_averages,
    clamp_measures,
    guard_errors,
    count_units,
    bound_contributions,
)
