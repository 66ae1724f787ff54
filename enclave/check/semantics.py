"""Semantic checks: names, roles, joins, aggregates and the shape of the output.

Each check is a pure function of (tree, context) returning violations, and `SEMANTIC_CHECKS` applies
them in order; adding a rule is adding one function here and one fixture file in tests/fixtures/check.
They run after the grammar check has accepted the tree, so each may assume one flat SELECT built from
allowed nodes, and they run again on the qualified tree (fail closed if that ever finds something new).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlglot import exp

from enclave.catalog.manifest import Manifest
from enclave.check.bounds import bounds
from enclave.check.grammar import AGGREGATE_NODES
from enclave.check.scope import Resolved, Source, candidates, sources, usable_columns
from enclave.check.violations import Violation, at
from enclave.policy.rules import Rules


@dataclass(frozen=True)
class Context:
    """What every check may read: the query text (for positions), the rules and the manifest.

    A context serves one tree that no check changes: it remembers each node's canonical form (the
    checks compare the same keys and outputs many times), so a changed tree needs a new context."""

    source: str
    rules: Rules
    manifest: Manifest
    using: frozenset[str] = frozenset()
    # id(node), scope -> (node, form); the node is kept so that its id cannot be reused meanwhile
    _forms: dict[tuple[int, tuple[str, ...]], tuple[exp.Expr, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def resolve(self, column: exp.Column, scope: list[Source]) -> Resolved | None:
        found = candidates(column, scope, self.manifest, self.using)
        return found[0] if len(found) == 1 else None

    def canonical(self, node: exp.Expr, scope: list[Source]) -> str:
        """An expression as it means, not as it is written: columns resolved to their table, names
        case-folded, COUNT(1) as COUNT(*). Two output or grouping expressions match by this."""
        key = (id(node), tuple(f"{s.alias}:{s.table}" for s in scope))
        known = self._forms.get(key)
        if known is not None:
            return known[1]

        def meaning(part: exp.Expr) -> exp.Expr:
            if isinstance(part, exp.Column) and (resolved := self.resolve(part, scope)) is not None:
                return exp.column(resolved.name, table=resolved.source.alias)
            if isinstance(part, exp.Count) and isinstance(part.this, exp.Literal) and not part.this.is_string:
                return exp.Count(this=exp.Star())
            return part

        # transform returns a copy of its own: generate it without another
        form = node.transform(meaning).sql("duckdb", normalize=True, comments=False, copy=False).lower()
        self._forms[key] = (node, form)
        return form


Check = Callable[[exp.Select, Context], list[Violation]]


def output_items(tree: exp.Select) -> list[exp.Expr]:
    """The SELECT list with aliases removed."""
    return [item.this if isinstance(item, exp.Alias) else item for item in tree.expressions]


def round_digits(item: exp.Expr) -> int | None:
    """The digits of `ROUND(x[, n])` with n a whole-number literal of at most 12 (negative allowed), else None."""
    if not isinstance(item, exp.Round) or item.args.get("truncate"):
        return None
    digits = item.args.get("decimals")
    if digits is None:
        return 0
    value = digits.this if isinstance(digits, exp.Neg) else digits
    if isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit() and int(value.this) <= 12:
        return -int(value.this) if isinstance(digits, exp.Neg) else int(value.this)
    return None


def rounded(item: exp.Expr) -> tuple[exp.Expr, int | None]:
    """`ROUND(aggregate[, n])` as (aggregate, n): rounding a released value is post-processing."""
    digits = round_digits(item)
    if digits is not None and isinstance(item.this, exp.AggFunc):
        return item.this, digits
    return item, None


def derived(item: exp.Expr) -> tuple[exp.Expr, int | None]:
    """An output expression of aggregates as (expression, digits): a ROUND around it is the released
    value's rounding, like ROUND of one aggregate."""
    digits = round_digits(item)
    return (item.this, digits) if digits is not None else (item, None)


def _zero(node: exp.Expr | None) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string and float(node.this) == 0


def arithmetic_offences(node: exp.Expr) -> list[exp.Expr]:
    """The parts of an expression of aggregates that its grammar does not allow: + - * /, unary minus,
    parentheses, numeric literals, ROUND(e, n) and NULLIF(e, 0), over aggregates (leaves here: each is
    judged by `_aggregate_form`). Post-processing evaluates exactly this grammar (disclosure/derived.py)."""
    match node:
        case exp.AggFunc():
            return []
        case exp.Literal(is_string=False):
            return []
        case exp.Paren() | exp.Neg():
            return arithmetic_offences(node.this)
        case exp.Add() | exp.Sub() | exp.Mul() | exp.Div():
            return arithmetic_offences(node.left) + arithmetic_offences(node.right)
        case exp.Round():
            if round_digits(node) is None:
                return [node.args.get("decimals") or node]
            return arithmetic_offences(node.this)
        case exp.Nullif():
            return arithmetic_offences(node.this) if _zero(node.expression) else [node.expression or node]
    return [node]


def output_name(item: exp.Expr) -> str:
    """An output column's name: its alias, its column name, or its expression text."""
    if isinstance(item, exp.Alias):
        return item.alias
    if isinstance(item, exp.Column):
        return item.name
    return item.sql("duckdb", comments=False).lower()


def group_keys(tree: exp.Select) -> list[exp.Expr]:
    group = tree.args.get("group")
    return list(group.expressions) if group is not None else []


def _inside(node: exp.Expr, kinds: tuple[type[exp.Expr], ...]) -> bool:
    return node.find_ancestor(*kinds) is not None


def _is_unit(column: exp.Column, scope: list[Source], ctx: Context) -> bool:
    resolved = ctx.resolve(column, scope)
    return resolved is not None and resolved.column.role == "privacy_unit"


def check_tables(tree: exp.Select, ctx: Context) -> list[Violation]:
    """Every table is a table of the dataset, under a distinct name."""
    if tree.args.get("from_") is None:
        return [at("missing_table", "The query reads no table.", ctx.source, tree.expressions[0] if tree.expressions
                   else None, "tables: " + ", ".join(ctx.manifest.tables))]
    found, seen = [], set()
    for source in sources(tree):
        if source.table not in ctx.manifest.tables:
            found.append(at("unknown_table", f"Table {source.node.name} is not in dataset {ctx.manifest.name}.",
                            ctx.source, source.node.this,
                            "tables: " + ", ".join(ctx.manifest.tables)))
        if source.alias in seen:
            found.append(at("duplicate_alias", f"The name {source.alias} is used for two tables.", ctx.source,
                            source.node, "give each table its own alias"))
        seen.add(source.alias)
    return found


def check_joins(tree: exp.Select, ctx: Context) -> list[Violation]:
    """Joins are inner (or left, if allowed) and only on equality of the privacy unit of two tables."""
    joins = tree.args.get("joins") or []
    unit = ctx.manifest.privacy_unit
    remedy = f"JOIN <table> ON a.{unit} = b.{unit}, or JOIN <table> USING ({unit})"
    found = []
    if len(joins) > ctx.rules.limits.max_joins:
        found.append(at("too_many_joins", f"{len(joins)} joins; the limit is {ctx.rules.limits.max_joins}.",
                        ctx.source, joins[ctx.rules.limits.max_joins]))
    scope = sources(tree)
    for index, join in enumerate(joins):
        side = (join.side or "").lower()
        kind = (join.kind or "").upper()
        wanted = side or "inner"
        if join.method or kind not in ("", "INNER", "OUTER") or (kind == "OUTER" and not side) or (
            wanted not in ctx.rules.join_kinds
        ):
            label = " ".join(p for p in (join.method, side.upper(), kind) if p) or "this"
            found.append(at("join_not_allowed", f"{label} join is not allowed.", ctx.source, join.this,
                            f"allowed: {', '.join(k.upper() for k in ctx.rules.join_kinds)} {remedy}"))
            continue
        using = join.args.get("using") or []
        on = join.args.get("on")
        if using:
            if [u.name.lower() for u in using] != [unit]:
                found.append(at("join_condition_not_allowed", f"Joins may use only USING ({unit}).",
                                ctx.source, using[0], remedy))
            continue
        joined, earlier = scope[index + 1] if index + 1 < len(scope) else None, scope[: index + 1]
        if not _unit_equality(on, joined, earlier, scope, ctx):
            found.append(at("join_condition_not_allowed",
                            f"A join must be exactly equality of {unit} between two tables." if on else
                            "A join without a condition (CROSS or comma join) is not allowed.",
                            ctx.source, on if on is not None else join.this, remedy))
    return found


def _unit_equality(on: exp.Expr | None, joined: Source | None, earlier: list[Source], scope: list[Source],
                   ctx: Context) -> bool:
    while isinstance(on, exp.Paren):
        on = on.this
    if not isinstance(on, exp.EQ) or joined is None:
        return False
    sides = [on.this, on.expression]
    if not all(isinstance(side, exp.Column) for side in sides):
        return False
    resolved = [ctx.resolve(side, scope) for side in sides]
    if any(r is None or r.column.role != "privacy_unit" for r in resolved):
        return False
    aliases = {r.source.alias for r in resolved}  # type: ignore[union-attr]
    return joined.alias in aliases and len(aliases) == 2 and bool(aliases & {s.alias for s in earlier})


def _column_place(column: exp.Column) -> str:
    node: exp.Expr = column
    while node.parent is not None:
        parent, key = node.parent, node.arg_key
        if isinstance(parent, exp.Join) and key == "on":
            return "join"
        if isinstance(parent, exp.Distinct) and node is column and isinstance(parent.parent, exp.Count):
            return "count_distinct"
        if isinstance(parent, exp.Order):
            return "order"
        node = parent
    return "expression"


def check_columns(tree: exp.Select, ctx: Context) -> list[Violation]:
    """Every column exists in exactly one table of the query and is used as its role allows."""
    scope = sources(tree)
    known = {s.alias for s in scope}
    unit = ctx.manifest.privacy_unit
    usable = ", ".join(usable_columns(scope, ctx.manifest))
    found = []
    for column in tree.find_all(exp.Column):
        place = _column_place(column)
        if place == "order":
            continue  # ORDER BY names output columns; check_order judges it
        if column.table and column.table.lower() not in known:
            found.append(at("unknown_alias", f"{column.table} is not a table or alias of this query.", ctx.source,
                            column, f"tables here: {', '.join(sorted(known))}"))
            continue
        readings = candidates(column, scope, ctx.manifest, ctx.using)
        if not readings:
            found.append(at("unknown_column", f"Column {column.sql('duckdb')} does not exist in the query's "
                            "tables.", ctx.source, column, f"allowed columns: {usable}"))
        elif len(readings) > 1:
            tables = " or ".join(f"{r.source.alias}.{r.name}" for r in readings)
            found.append(at("ambiguous_column", f"Column {column.name} is in several tables.", ctx.source,
                            column, f"write {tables}"))
        elif readings[0].column.role == "restricted":
            found.append(at("restricted_column", f"Column {column.name} is restricted: it cannot be used in "
                            "a query.", ctx.source, column, f"allowed columns: {usable}"))
        elif readings[0].column.role == "privacy_unit" and place not in ("join", "count_distinct"):
            found.append(at("restricted_column", f"{column.name} is the privacy unit: it may only join tables "
                            f"and be counted as COUNT(DISTINCT {unit}).", ctx.source, column,
                            f"allowed columns: {usable}"))
    return found


def check_aggregates(tree: exp.Select, ctx: Context) -> list[Violation]:
    """Aggregates are allowed ones, SUM/AVG have bounded arguments, and each is an output column on its
    own, a leaf of an output expression (with `arithmetic` post-processing) or part of HAVING.

    Every aggregate of the SELECT list counts against `max_aggregates`; one of HAVING counts only when
    no aggregate before it computes the same thing (an output alias used in HAVING costs nothing more)."""
    scope = sources(tree)
    outputs = {id(rounded(item)[0]) for item in output_items(tree)}
    arithmetic = "arithmetic" in ctx.rules.post_processing
    allowed = set(ctx.rules.aggregates)
    found: list[Violation] = []
    # ORDER BY may repeat an output aggregate; check_order judges it
    nodes = [node for node in tree.find_all(exp.AggFunc) if not _inside(node, (exp.Order,))]
    having = [node for node in nodes if _inside(node, (exp.Having,))]
    selected = {ctx.canonical(node, scope) for node in nodes if not _inside(node, (exp.Having,))}
    count = len(nodes) - len(having) + len({ctx.canonical(node, scope) for node in having} - selected)
    for node in nodes:
        if _inside(node, (exp.Where, exp.Group, exp.Join)) or _inside(node, (exp.AggFunc,)):
            found.append(at("aggregate_misplaced", "An aggregate may appear only as an output column or in "
                            "HAVING.", ctx.source, node))
            continue
        if id(node) not in outputs and not arithmetic and not _inside(node, (exp.Having,)):
            found.append(at("output_not_aggregate", "An output column must be exactly one aggregate (or "
                            "ROUND of one) or a grouping key, not an expression of an aggregate.", ctx.source,
                            node.parent, "output the aggregate itself, or ROUND(aggregate, n); scale the "
                            "released value afterwards"))
            continue
        if not (_inside(node, (exp.Having,)) and ctx.canonical(node, scope) in selected):
            found.extend(_aggregate_form(node, scope, allowed, ctx))  # judged once, where it is selected
    if count > ctx.rules.limits.max_aggregates:
        found.append(at("too_many_aggregates", f"{count} aggregates; the limit is "
                        f"{ctx.rules.limits.max_aggregates}.", ctx.source, tree.expressions[-1]))
    return found


def aggregate_function(node: exp.AggFunc) -> str:
    """The rules' name for an aggregate node (grammar.AGGREGATE_NODES), e.g. count_distinct_unit."""
    if isinstance(node, exp.Count):
        return "count_distinct_unit" if isinstance(node.this, exp.Distinct) else "count"
    return next((name for name, nodes in AGGREGATE_NODES.items() if type(node) in nodes), node.key)


BOUNDED_AGGREGATES = frozenset({"sum", "avg", "median", "quantile_cont", "var_pop", "var_samp", "stddev_pop",
                                "stddev_samp"})


def _aggregate_form(node: exp.AggFunc, scope: list[Source], allowed: set[str], ctx: Context) -> list[Violation]:
    unit = ctx.manifest.privacy_unit
    function = aggregate_function(node)
    if function == "count_distinct_unit":
        inner = node.this.expressions
        named_unit = len(inner) == 1 and isinstance(inner[0], exp.Column) and inner[0].name.lower() == unit
        if named_unit and not _is_unit(inner[0], scope, ctx):
            return []  # the column check reports why the unit does not resolve (ambiguous, unknown alias)
        if not named_unit:
            return [at("distinct_not_allowed", f"COUNT(DISTINCT ...) is allowed only for {unit}.", ctx.source,
                       node, f"count persons with COUNT(DISTINCT {unit}), or rows with COUNT(*)")]
    if node.expressions:
        return [at("aggregate_not_allowed", "An aggregate takes one argument here.", ctx.source, node)]
    if function not in allowed:
        return [at("aggregate_not_allowed", f"{function.upper()} is not allowed by the rules.", ctx.source, node,
                   "allowed aggregates: " + ", ".join(sorted(allowed)))]
    if function == "quantile_cont" and quantile_of(node) is None:
        return [at("quantile_not_allowed", "QUANTILE_CONT takes a literal fraction strictly between 0 and 1.",
                   ctx.source, node.expression or node, "write e.g. QUANTILE_CONT(x, 0.9); MEDIAN(x) is 0.5")]
    if function in BOUNDED_AGGREGATES and bounds(node.this, lambda c: _lookup(c, scope, ctx)) is None:
        bounded = [f"{s.alias}.{n}" for s in scope for n, c in
                   (ctx.manifest.tables[s.table].columns.items() if s.table in ctx.manifest.tables else [])
                   if c.value_bounds is not None or c.type == "BOOLEAN"]
        return [at("unbounded_aggregate", f"{function.upper()} needs an argument with known bounds.",
                   ctx.source, node.this, "aggregate a bounded column (" + ", ".join(bounded) + ") or an "
                   "expression of them and literals, e.g. CASE WHEN ... THEN 1 ELSE 0 END")]
    return []


def quantile_of(node: exp.AggFunc) -> float | None:
    """The fraction p of MEDIAN (0.5) or QUANTILE_CONT(x, p) (a numeric literal in (0, 1)), else None."""
    if isinstance(node, exp.Median):
        return 0.5
    p = node.args.get("expression")
    if isinstance(p, exp.Literal) and not p.is_string:
        value = float(p.this)
        return value if 0 < value < 1 else None
    return None


def _lookup(column: exp.Column, scope: list[Source], ctx: Context):
    resolved = ctx.resolve(column, scope)
    return resolved.column if resolved is not None and resolved.column.role != "restricted" else None


def check_output(tree: exp.Select, ctx: Context) -> list[Violation]:
    """Every output column is one aggregate or a grouping key; every key is output; names are unique."""
    keys = group_keys(tree)
    items = output_items(tree)
    scope = sources(tree)
    key_forms = [ctx.canonical(key, scope) for key in keys]
    aggregated = {id(item) for item in items if item.find(exp.AggFunc)}
    found = []
    for item in items:
        if id(item) in aggregated:
            continue  # check_aggregates judges aggregates
        if ctx.canonical(item, scope) not in key_forms:
            found.append(at("output_not_aggregate", "An output column must be an aggregate or a GROUP BY key.",
                            ctx.source, item, "add it to GROUP BY, or aggregate it"))
    if not aggregated:
        found.append(at("no_aggregate", "The query has no aggregate, so it would list keys or rows.",
                        ctx.source, tree.expressions[0] if tree.expressions else None,
                        "add COUNT(*), COUNT(DISTINCT ...), SUM(...) or AVG(...)"))
    # a key is normally a plain output column: an aggregate's form is worked out only when none matches
    plain_first = sorted(items, key=lambda item: id(item) in aggregated)
    for key, form in zip(keys, key_forms, strict=True):
        if key.find(exp.AggFunc):
            continue
        if not key.find(exp.Column):
            found.append(at("group_key_aggregate", "A GROUP BY key must depend on a column.", ctx.source, key))
        elif not any(ctx.canonical(item, scope) == form for item in plain_first):
            found.append(at("group_key_not_output", "Every GROUP BY key must also be an output column.",
                            ctx.source, key, "add it to the SELECT list"))
    if len(keys) > ctx.rules.limits.max_group_keys:
        found.append(at("too_many_group_keys", f"{len(keys)} GROUP BY keys; the limit is "
                        f"{ctx.rules.limits.max_group_keys}.", ctx.source, keys[ctx.rules.limits.max_group_keys]))
    names = [output_name(item).lower() for item in tree.expressions]
    for item, name in zip(tree.expressions, names, strict=True):
        if "__" in name:
            found.append(at("reserved_name", f"The output name {name} contains '__', which the enclave reserves.",
                            ctx.source, item, "choose another alias"))
    for source in scope:
        if "__" in source.alias:
            found.append(at("reserved_name", f"The alias {source.alias} contains '__', which the enclave reserves.",
                            ctx.source, source.node, "choose another alias"))
    for item, name in zip(tree.expressions, names, strict=True):
        if names.count(name) > 1:
            found.append(at("duplicate_output_name", f"Two output columns are named {name}.", ctx.source, item,
                            "give each output column its own alias"))
            break
    return found


def check_derived(tree: exp.Select, ctx: Context) -> list[Violation]:
    """An output expression of aggregates (`arithmetic` post-processing) uses only the grammar that is
    evaluated on the released values: see `arithmetic_offences`."""
    if "arithmetic" not in ctx.rules.post_processing:
        return []  # check_aggregates refuses every expression of an aggregate
    found = []
    for item in output_items(tree):
        if not item.find(exp.AggFunc) or isinstance(rounded(item)[0], exp.AggFunc):
            continue
        found.extend(at("derived_not_allowed", f"{part.sql('duckdb', comments=False)} is not allowed in an "
                        "expression of aggregates.", ctx.source, part, _DERIVED_REMEDY)
                     for part in arithmetic_offences(derived(item)[0]))
    return found


_DERIVED_REMEDY = ("combine aggregates and numeric literals with + - * / and parentheses, ROUND(e, n) and "
                   "NULLIF(e, 0); it is computed on the released, noisy values")
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def check_having(tree: exp.Select, ctx: Context) -> list[Violation]:
    """HAVING is a condition on released values: comparisons (BETWEEN, IS [NOT] NULL) joined by AND, OR
    and NOT, of aggregates and arithmetic of them, output columns (their expressions by now: see
    `normalize`), GROUP BY keys and literals. A key is compared with keys and literals, a value with
    values and numbers. It runs on the noisy values after protection (disclosure/derived.py `keep`)."""
    having = tree.args.get("having")
    if having is None:
        return []
    scope = sources(tree)
    keys = {ctx.canonical(key, scope) for key in group_keys(tree)}

    def refuse(node: exp.Expr, message: str) -> Violation:
        return at("having_not_allowed", message, ctx.source, node, "HAVING may compare aggregates, arithmetic of "
                  "them, output columns and GROUP BY keys with literals, joined by AND, OR and NOT")

    def operand(node: exp.Expr) -> tuple[str, list[Violation]]:
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Null):
            return "null", []
        if node.find(exp.AggFunc):
            return "value", [refuse(part, f"{part.sql('duckdb', comments=False)} is not allowed in an expression "
                                    "of aggregates.") for part in arithmetic_offences(node)]
        if ctx.canonical(node, scope) in keys or (isinstance(node, exp.Literal) and node.is_string):
            return "key", []
        if not node.find(exp.Column) and not arithmetic_offences(node):
            return "number", []
        return "", [refuse(node, f"{node.sql('duckdb', comments=False)} is neither a GROUP BY key, an aggregate "
                           "nor an output column.")]

    def condition(node: exp.Expr) -> list[Violation]:
        if isinstance(node, exp.Paren | exp.Not):
            return condition(node.this)
        if isinstance(node, exp.And | exp.Or):
            return condition(node.left) + condition(node.right)
        if isinstance(node, exp.Boolean):
            return []
        if isinstance(node, _COMPARISONS):
            parts = [node.left, node.right]
        elif isinstance(node, exp.Between):
            parts = [node.this, node.args["low"], node.args["high"]]
        elif isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            parts = [node.this]
        else:
            return [refuse(node, f"{node.sql('duckdb', comments=False)} is not a condition HAVING allows.")]
        judged = [operand(part) for part in parts]
        found = [violation for _, violations in judged for violation in violations]
        kinds = [kind for kind, _ in judged]
        if not found and {"key", "value"} <= set(kinds):
            found.append(refuse(parts[kinds.index("key")], "A comparison in HAVING compares an aggregate with a "
                                "key or text."))
        return found

    return condition(having.this)


def order_position(ordered: exp.Ordered, tree: exp.Select, ctx: Context) -> int | None:
    """The output column an ORDER BY item names (0-based), by position, alias or expression (by meaning;
    an aggregate also names the ROUND of it)."""
    target = ordered.this
    items = output_items(tree)
    if isinstance(target, exp.Literal) and not target.is_string and target.this.isdigit():
        position = int(target.this) - 1
        return position if 0 <= position < len(items) else None
    if isinstance(target, exp.Column) and not target.table:
        names = [output_name(item).lower() for item in tree.expressions]
        if target.name.lower() in names:
            return names.index(target.name.lower())
    scope = sources(tree)
    wanted = ctx.canonical(target, scope)
    for index, item in enumerate(items):
        if wanted in (ctx.canonical(item, scope), ctx.canonical(rounded(item)[0], scope)):
            return index
    return None


def check_order(tree: exp.Select, ctx: Context) -> list[Violation]:
    """ORDER BY may only name output columns; the released table is sorted after noise is added."""
    order = tree.args.get("order")
    if order is None:
        return []
    return [
        at("order_not_output", "ORDER BY may only name output columns.", ctx.source, ordered.this,
           "order by an output column's alias or position")
        for ordered in order.expressions
        if order_position(ordered, tree, ctx) is None
    ]


def check_limit(tree: exp.Select, ctx: Context) -> list[Violation]:
    """LIMIT and OFFSET are whole numbers: they trim the released table after noise (post-processing)."""
    found = []
    for clause in (tree.args.get("limit"), tree.args.get("offset")):
        value = clause.expression if clause is not None else None
        if isinstance(clause, exp.Limit) and isinstance(value, exp.Var) and value.name.upper() == "ALL":
            continue
        if clause is not None and not (isinstance(value, exp.Literal) and not value.is_string
                                       and value.this.isdigit()):
            found.append(at("limit_not_allowed", f"{clause.key.upper()} takes a whole number.", ctx.source,
                            clause, "write LIMIT n [OFFSET m]; it trims the released, noisy table"))
    return found


SEMANTIC_CHECKS: tuple[Check, ...] = (
    check_tables,
    check_joins,
    check_columns,
    check_aggregates,
    check_derived,
    check_having,
    check_output,
    check_order,
    check_limit,
)
