"""Rewrite rules: pure functions from plan to plan, applied in the order of `RULES`.

Each rule has a fixture file, tests/fixtures/rewrite/<rule>.sql, of input / expected SQL pairs, which a
reviewer can read as the specification of what the enclave runs in place of the researcher's query.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from enclave.catalog.bounding import Layout
from enclave.catalog.manifest import ContributionBounds
from enclave.rewrite.plan import Bounds, Measure, Plan, Prepared

UNITS = "__units"
CONSENTED = "__consented"  # the per-query table of consented person keys (execute.sandbox creates it)


@dataclass(frozen=True)
class RewriteContext:
    """What the rules need besides the plan: the dataset's contribution bounds, the sampling salt,
    whether the dataset requires consent, and the bounding the data version's build prepared."""

    contribution: ContributionBounds
    salt: int
    consent_required: bool = False
    layout: Layout | None = None


Rule = Callable[[Plan, RewriteContext], Plan]


def split_averages(plan: Plan, ctx: RewriteContext) -> Plan:
    """AVG(x) becomes SUM(x - c) and COUNT(x), noised apart and divided after noise: mean = c + sum / count.

    The sum is centred on c, its bounds' midpoint (rounded to a millionth), so one person moves it by at
    most R·(hi - lo)/2 instead of R·max(|lo|, |hi|): half the noise for a column in [0, hi]. Where x has
    a value on every row (`never_null`), COUNT(x) is COUNT(*), so the plan noises it once with any
    COUNT(*) of the query (disclosure.plan dedupes equal quantities).
    """
    measures: list[Measure] = []
    for m in plan.measures:
        if m.function != "avg":
            measures.append(m)
            continue
        low, high = m.bounds or (0.0, 0.0)
        centre = round((low + high) / 2, 6)
        measures.append(dataclasses.replace(m, name=f"{m.name}__sum", function="sum", part="sum", centre=centre))
        count_arg = None if m.never_null or m.arg is None else m.arg.copy()
        measures.append(dataclasses.replace(m, name=f"{m.name}__count", function="count", part="count",
                                            arg=count_arg))
    return dataclasses.replace(plan, measures=tuple(measures))


# A quantile's grid: unit bins for integer bounds of at most this many values, else this many equal bins.
MAX_BINS = 1024
EQUAL_BINS = 256
VARIANCES = ("var_pop", "var_samp", "stddev_pop", "stddev_samp")


def quantile_edges(low: float, high: float) -> tuple[float, ...]:
    """The bin edges of a quantile of values in [low, high]: public, from the bounds alone. Integer bounds
    of at most MAX_BINS values get a bin per integer, [v, v + 1) (the quantile is then the integer whose
    bin the noisy CDF crosses p in); others EQUAL_BINS bins of equal width."""
    if float(low).is_integer() and float(high).is_integer() and high - low + 1 <= MAX_BINS:
        return tuple(float(v) for v in range(int(low), int(high) + 2))
    width = (high - low) / EQUAL_BINS if high > low else 1.0
    return tuple(low + i * width for i in range(EQUAL_BINS + 1))


def split_statistics(plan: Plan, ctx: RewriteContext) -> Plan:
    """VAR_* and STDDEV_* of x become COUNT(x), SUM(x - c) and SUM((x - c)² - h²/2), c the bounds' midpoint
    and h their half-width (both sums centred, which halves their sensitivity);
    MEDIAN and QUANTILE_CONT of x become a histogram of x over a grid of its bounds (`quantile_edges`).

    Each is noised as its own quantity and the statistic is computed from the noisy ones after noise
    (disclosure.protect): var_pop = SUM((x - c)²)/n - (SUM(x - c)/n)², clamped to [0, ((hi - lo)/2)²];
    a quantile is read off the noisy histogram by OpenDP's make_quantiles_from_counts. The sum of squares
    is clamped to [0, ((hi - lo)/2)²] (clamp_measures), which is the square of x clamped to [lo, hi],
    since c is the midpoint. The count and the centred sum are the same quantities an AVG(x) uses, so
    with an AVG of the same x they are noised once.
    """
    measures: list[Measure] = []
    for m in plan.measures:
        low, high = m.bounds or (0.0, 0.0)
        centre = round((low + high) / 2, 6)
        if m.function in VARIANCES and m.arg is not None:
            reach = max(abs(low - centre), abs(high - centre))
            deviation = exp.Paren(this=exp.Sub(this=m.arg.copy(), expression=_number(centre)))
            measures += [
                dataclasses.replace(m, name=f"{m.name}__count", function="count", part="var_count",
                                    arg=None if m.never_null else m.arg.copy()),
                dataclasses.replace(m, name=f"{m.name}__sum", function="sum", part="var_sum", centre=centre),
                dataclasses.replace(m, name=f"{m.name}__squares", function="sum", part="squares",
                                    arg=exp.Mul(this=deviation, expression=deviation.copy()), bounds=(0.0, reach**2),
                                    centre=round(reach**2 / 2, 6)),
            ]
        elif m.function == "quantile":
            measures.append(dataclasses.replace(m, name=f"{m.name}__histogram", function="histogram",
                                                part="histogram", edges=quantile_edges(low, high)))
        else:
            measures.append(m)
    return dataclasses.replace(plan, measures=tuple(measures))


def _number(value: float) -> exp.Literal:
    return exp.Literal.number(int(value) if float(value).is_integer() else value)


# DECIMAL(38, 6), built rather than parsed: a parsed type keeps its positions in the text on its literals,
# which every one of its copies (four per clamped sum) would deep-copy
SUM_TYPE = exp.DataType(this=exp.DataType.Type.DECIMAL, nested=False, expressions=[
    exp.DataTypeParam(this=exp.Literal.number(38)), exp.DataTypeParam(this=exp.Literal.number(6))])
BOOLEAN = exp.DataType.build("BOOLEAN")


def _clamped(arg: exp.Expr, low: float, high: float) -> exp.Expr:
    """`arg` as DECIMAL(38, 6), clamped to [low, high]; NULL stays NULL."""
    # the value becomes DECIMAL(38, 6) first (NULL if it cannot), so comparing it with the bounds
    # (at most 1e9) can never fail: no error depends on whether some row reached the clamp
    value = exp.TryCast(this=arg.copy(), to=SUM_TYPE.copy())
    clamped = exp.Case(
        ifs=[exp.If(this=exp.LT(this=value.copy(), expression=_number(low)), true=_number(low)),
             exp.If(this=exp.GT(this=value.copy(), expression=_number(high)), true=_number(high))],
        default=value,
    )
    return exp.Cast(this=clamped, to=SUM_TYPE.copy())


def _bin(value: exp.Expr, edges: tuple[float, ...]) -> exp.Expr:
    """The bin (0 .. len(edges) - 2) of a clamped value: its offset from the first edge on a unit grid,
    else the floor of its offset in bin widths, the top bound kept in the last bin."""
    low, last = edges[0], len(edges) - 2
    offset = exp.Paren(this=exp.Sub(this=value, expression=_number(low)))
    if all(float(e).is_integer() for e in edges) and edges[1] - edges[0] == 1:
        return exp.Cast(this=exp.Floor(this=offset), to=exp.DataType.build("BIGINT"))
    width = exp.Literal.number(repr(edges[1] - edges[0]))
    index = exp.Cast(this=exp.Floor(this=exp.Div(this=offset, expression=width)), to=exp.DataType.build("BIGINT"))
    return exp.Case(ifs=[exp.If(this=exp.GT(this=index.copy(), expression=exp.Literal.number(last)),
                                true=exp.Literal.number(last))], default=index)


def clamp_measures(plan: Plan, ctx: RewriteContext) -> Plan:
    """Each summed value is clamped to its bounds and made an exact decimal (minus its centre, for a centred
    sum); a histogram's value is clamped and becomes its bin; NULL stays NULL.

    Exact decimals make DuckDB's sum exact (no floating-point rounding that could let one person move
    a sum by more than the sensitivity the noise is calibrated to), and the noise is then added to an
    integer number of millionths. LEAST/GREATEST are not used: in DuckDB they turn NULL into a bound.
    """
    measures = []
    for m in plan.measures:
        if m.function in ("sum", "histogram") and m.arg is not None and m.bounds is not None:
            clamped = _clamped(m.arg, *m.bounds)
            if m.function == "histogram":
                m = dataclasses.replace(m, arg=_bin(clamped, m.edges))
            elif m.centre:
                m = dataclasses.replace(m, arg=exp.Cast(this=exp.Sub(this=clamped, expression=_number(m.centre)),
                                                        to=SUM_TYPE.copy()))
            else:
                m = dataclasses.replace(m, arg=clamped)
        measures.append(m)
    return dataclasses.replace(plan, measures=tuple(measures))


def _try(node: exp.Expr, copy: bool = True) -> exp.Expr:
    """TRY(node), with every CAST in it a TRY_CAST: a failed cast is NULL without raising, which keeps
    DuckDB vectorised (an error inside TRY makes it re-evaluate row by row, a thousand times slower).
    With `copy=False`, `node` (of the rule's own copy of the plan) is changed in place."""
    node = node.copy() if copy else node
    # not Expr.transform: it does not visit the children of a node it replaced, so a CAST inside a CAST
    # (every filter term is cast to BOOLEAN) stayed a CAST, and one failing cast per row made a query slow
    for cast in [n for n in node.walk() if type(n) is exp.Cast]:
        replacement = exp.TryCast(this=cast.this, to=cast.args["to"])
        if cast is node:
            node = replacement
        else:
            cast.replace(replacement)
    return node if isinstance(node, exp.Try) else exp.Try(this=node)


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    """The terms of a top-level AND chain (through parentheses), in order."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return [*_conjuncts(node.this), *_conjuncts(node.expression)]
    return [node]


def guard_errors(plan: Plan, ctx: RewriteContext) -> Plan:
    """Every row-level expression runs inside TRY(): an error becomes NULL instead of failing the query.

    Each term of a top-level AND gets its own TRY: a row passes exactly when every term is true without
    error, as with one TRY around the whole filter, but DuckDB can then push a term that names one table
    below the joins. One TRY around a whole filter kept a three-way self-join from filtering first, and
    made its run time depend on how many rows matched (a timing channel, and seconds of engine time).

    Without this, a query could make DuckDB raise (an overflow, a bad cast) only when some row matches a
    condition, and learn a fact about one person from whether it failed. The filter is cast to BOOLEAN
    inside the TRY, or DuckDB would cast a non-boolean filter outside it. It runs before clamping, so an
    expression the clamp repeats is already guarded. Every cast becomes TRY_CAST (see `_try`).
    """
    relation = plan.relation.copy()
    where = relation.args.get("where")
    if where is not None:
        where.set("this", exp.and_(*(_try(exp.Cast(this=c, to=BOOLEAN.copy()), copy=False)
                                     for c in _conjuncts(where.this)), copy=False))
    keys = tuple(dataclasses.replace(k, expr=_try(k.expr)) for k in plan.keys)
    measures = tuple(dataclasses.replace(m, arg=_try(m.arg)) if m.arg is not None else m for m in plan.measures)
    return dataclasses.replace(plan, relation=relation, keys=keys, measures=measures)


_OPERATORS = (exp.Binary, exp.Unary, exp.Between, exp.In, exp.Is)


def _explicit(node: exp.Expr, copy: bool = True) -> exp.Expr:
    """`node` with every operator in parentheses; with `copy=False`, changed in place."""
    node = node.copy() if copy else node
    for inner in reversed(list(node.walk())):  # children before their parents
        if isinstance(inner, _OPERATORS) and not isinstance(inner, exp.Paren) and not isinstance(
                inner.parent, exp.Paren):
            wrapper = exp.Paren()
            if inner is node:
                return exp.Paren(this=node)
            inner.replace(wrapper)
            wrapper.set("this", inner)
    return node


def parenthesize(plan: Plan, ctx: RewriteContext) -> Plan:
    """Every operator gets explicit parentheses, so DuckDB parses exactly the tree that was checked.

    sqlglot prints the fewest parentheses its own precedence rules need; where DuckDB's rules differ
    (chained comparisons, say) the executed query would mean something else than the checked one.
    """
    relation = plan.relation.copy()
    where = relation.args.get("where")
    if where is not None:
        where.set("this", _explicit(where.this, copy=False))
    keys = tuple(dataclasses.replace(k, expr=_explicit(k.expr)) for k in plan.keys)
    measures = tuple(dataclasses.replace(m, arg=_explicit(m.arg)) if m.arg is not None else m for m in plan.measures)
    return dataclasses.replace(plan, relation=relation, keys=keys, measures=measures)


def count_units(plan: Plan, ctx: RewriteContext) -> Plan:
    """Every group also counts its distinct persons: suppression is decided on this count, noised."""
    if any(m.function == "count_units" and m.part == "units" for m in plan.measures):
        return plan
    units = Measure(UNITS, "count_units", None, UNITS, part="units")
    return dataclasses.replace(plan, measures=(*plan.measures, units))


def restrict_to_consented(plan: Plan, ctx: RewriteContext) -> Plan:
    """Where the dataset requires consent, only persons in the query's consent snapshot are used.

    The condition `t.<unit> IN (SELECT person_id FROM __consented)` is added to WHERE for the first
    table and every inner-joined one. A left-joined table needs none: joins are only on equality of the
    person key, so each of its rows that joins belongs to a person the first table already restricted.
    The researcher cannot name `__consented` (not a table of the manifest) nor drop the condition: it
    is added here, after the check, to the tree that is executed.
    """
    if not ctx.consent_required:
        return plan
    relation = plan.relation.copy()
    tables = [relation.args["from_"].this]
    for join in relation.args.get("joins") or []:
        side = (join.side or "").lower()
        if side not in ("", "left"):
            raise ValueError(f"a {side} join cannot be restricted to consented persons")
        if not side:
            tables.append(join.this)
    snapshot = exp.select(exp.column("person_id")).from_(exp.Table(this=exp.to_identifier(CONSENTED, quoted=True)))
    unit = plan.unit.name
    conditions = [exp.In(this=exp.column(unit, table=exp.to_identifier(t.alias_or_name, quoted=True), quoted=True),
                         query=exp.Subquery(this=snapshot.copy())) for t in tables]
    where = relation.args.get("where")
    condition = exp.and_(*(exp.Paren(this=c) for c in conditions), copy=False)
    relation.set("where", exp.Where(this=exp.and_(where.this, condition) if where is not None else condition))
    return dataclasses.replace(plan, relation=relation)


ROWID = "__rowid"


def bound_tables_before_joins(plan: Plan, ctx: RewriteContext) -> Plan:
    """In a join, each table keeps at most `max_rows_per_unit` rows of each person before it is joined.

    A join on the person key multiplies a person's rows: three self-joined tables give k³ rows for a
    person with k rows, so the run time, and the memory, of a join would depend on the data. With each
    table bounded to R rows per person first, the joined rows are at most R^(tables - 1) per row of any
    inner table, a worst case known from the manifest and the tables' sizes before anything runs
    (enclave.execute.cost). The rows kept are the first R in a keyed-hash order of (salt, person, rowid),
    fixed per data version like every other choice of rows; a table's rowid travels as `__rowid`, the
    row identity of the later bound. A query without joins needs none of this: its one table's rows
    are the worst case already.
    """
    if not plan.relation.args.get("joins"):
        return plan
    relation = plan.relation.copy()
    unit = exp.to_identifier(plan.unit.name, quoted=True)
    tables = [relation.args["from_"].this, *(join.this for join in relation.args["joins"])]
    for table in tables:
        order = exp.func("hash", exp.Literal.number(ctx.salt), unit.copy(), exp.column("rowid"))
        rank = exp.Window(this=exp.RowNumber(), partition_by=[exp.column(unit.copy())],
                          order=exp.Order(expressions=[exp.Ordered(this=order), exp.Ordered(this=exp.column("rowid"))]))
        bounded = exp.select(exp.Star(), exp.alias_(exp.column("rowid"), ROWID, quoted=True)).from_(
            exp.Table(this=table.this.copy()), copy=False)
        bounded.set("qualify", exp.Qualify(this=exp.LTE(
            this=rank, expression=exp.Literal.number(ctx.contribution.max_rows_per_unit))))
        table.replace(exp.Subquery(this=bounded, alias=exp.TableAlias(this=exp.to_identifier(
            table.alias_or_name, quoted=True))))
    return dataclasses.replace(plan, relation=relation)


def _bare(node: exp.Expr) -> bool:
    """Whether a key is a column as it is (through the TRY and parentheses earlier rules added)."""
    while isinstance(node, (exp.Try, exp.Paren)):
        node = node.this
    return isinstance(node, exp.Column)


def prepared_bound(plan: Plan, ctx: RewriteContext) -> Prepared | None:
    """The build's prepared bound for a query of one table grouped by (expressions of) at most two of
    its dimension columns, prepared for this manifest's bounds; None for any other query."""
    layout = ctx.layout
    if layout is None or layout.bounds != ctx.contribution or plan.relation.args.get("joins"):
        return None
    table = plan.relation.args["from_"].this
    if not isinstance(table, exp.Table):
        return None
    columns = frozenset(c.name for k in plan.keys for c in k.expr.find_all(exp.Column))
    groups = layout.group_columns(table.name, columns)
    if groups is None:
        return None
    firsts = not plan.filtered and len(plan.keys) == len(columns) and all(_bare(k.expr) for k in plan.keys)
    return Prepared(groups, firsts)


def bound_contributions(plan: Plan, ctx: RewriteContext) -> Plan:
    """At most `max_rows_per_unit` rows and `max_groups_per_unit` groups of each person are used: by the
    build's prepared columns where they apply (`prepared_bound`), else per query (rewrite.plan)."""
    bounds = Bounds(ctx.contribution.max_rows_per_unit, ctx.contribution.max_groups_per_unit, ctx.salt,
                    prepared_bound(plan, ctx))
    return dataclasses.replace(plan, bounds=bounds)


RULES: tuple[Rule, ...] = (
    split_averages,
    split_statistics,
    guard_errors,
    clamp_measures,
    parenthesize,
    count_units,
    restrict_to_consented,
    bound_tables_before_joins,
    bound_contributions,
)
