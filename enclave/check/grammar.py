"""The grammar of an aggregate query, as an allow-list of node types and of their arguments.

A deny-list misses what it did not foresee; this module does the opposite. A node is accepted only if
its type is in the structural grammar below (SELECT, FROM, JOIN, WHERE, GROUP BY, ORDER BY, columns,
tables, literals) or is an operator, function or aggregate that the rules allow, and only if it sits
where the grammar expects it. Structural nodes may set only the arguments listed for them, so a feature
hiding in an argument (a sample on a table, QUALIFY on a SELECT, a subquery in IN) is refused too.
The walk stops at the first offending node of a branch, so one construct yields one violation.
"""

from __future__ import annotations

import re

from sqlglot import exp

from enclave.check.violations import Violation, at, span
from enclave.policy.rules import Rules, function_key

# Structural nodes and the arguments each may set (an argument that is None, False or empty is unset).
STRUCTURE: dict[type[exp.Expr], frozenset[str]] = {
    exp.Select: frozenset({"expressions", "from_", "joins", "where", "group", "order", "limit", "offset"}),
    exp.Limit: frozenset({"expression"}),
    exp.Offset: frozenset({"expression"}),
    exp.From: frozenset({"this"}),
    exp.Join: frozenset({"this", "on", "using", "side", "kind", "method"}),
    exp.Where: frozenset({"this"}),
    exp.Having: frozenset({"this"}),
    exp.Group: frozenset({"expressions", "all"}),
    exp.Order: frozenset({"expressions"}),
    exp.Ordered: frozenset({"this", "desc", "nulls_first"}),
    exp.Column: frozenset({"this", "table"}),
    exp.Identifier: frozenset({"this", "quoted"}),
    exp.Table: frozenset({"this", "alias"}),
    exp.TableAlias: frozenset({"this"}),
    exp.Alias: frozenset({"this", "alias"}),
    exp.Literal: frozenset({"this", "is_string"}),
    exp.Boolean: frozenset({"this"}),
    exp.Null: frozenset(),
    exp.Star: frozenset(),
    exp.Distinct: frozenset({"expressions"}),
    exp.DataType: frozenset({"this", "expressions", "nested"}),
    exp.DataTypeParam: frozenset({"this"}),
    exp.Var: frozenset({"this"}),
}

# Where a structural node may appear: (parent type, argument) pairs; None means anywhere.
PLACES: dict[type[exp.Expr], frozenset[tuple[type[exp.Expr], str]]] = {
    exp.From: frozenset({(exp.Select, "from_")}),
    exp.Join: frozenset({(exp.Select, "joins")}),
    exp.Where: frozenset({(exp.Select, "where")}),
    exp.Having: frozenset({(exp.Select, "having")}),
    exp.Group: frozenset({(exp.Select, "group")}),
    exp.Order: frozenset({(exp.Select, "order")}),
    exp.Ordered: frozenset({(exp.Order, "expressions")}),
    exp.Limit: frozenset({(exp.Select, "limit")}),
    exp.Offset: frozenset({(exp.Select, "offset")}),
    exp.Table: frozenset({(exp.From, "this"), (exp.Join, "this")}),
    exp.TableAlias: frozenset({(exp.Table, "alias")}),
    exp.Alias: frozenset({(exp.Select, "expressions")}),
    exp.Star: frozenset({(exp.Count, "this")}),
    exp.Distinct: frozenset({(exp.Count, "this")}),
    exp.DataType: frozenset({(exp.Cast, "to"), (exp.TryCast, "to")}),
    exp.DataTypeParam: frozenset({(exp.DataType, "expressions")}),
    exp.Var: frozenset({(exp.Extract, "this"), (exp.DateDiff, "unit"), (exp.TimestampTrunc, "unit"),
                        (exp.Limit, "expression")}),
}

# The rules' aggregate names and the sqlglot nodes each allows (STDDEV is STDDEV_SAMP, VARIANCE is VAR_SAMP).
AGGREGATE_NODES: dict[str, tuple[type[exp.Expr], ...]] = {
    "count": (exp.Count,), "count_distinct_unit": (exp.Count,), "sum": (exp.Sum,), "avg": (exp.Avg,),
    "median": (exp.Median,), "quantile_cont": (exp.PercentileCont,), "var_pop": (exp.VariancePop,),
    "var_samp": (exp.Variance,), "stddev_pop": (exp.StddevPop,), "stddev_samp": (exp.StddevSamp, exp.Stddev),
}


def _classes(*names: str) -> tuple[type[exp.Expr], ...]:
    return tuple(getattr(exp, name) for name in names if hasattr(exp, name))


# The families a refused node belongs to, most specific first: each gets its own stable code.
FAMILIES: tuple[tuple[tuple[type[exp.Expr], ...], str, str], ...] = (
    (_classes("With", "CTE", "Recursive"), "cte_not_allowed", "a WITH clause"),
    (_classes("SetOperation"), "set_operation_not_allowed", "a set operation"),
    (_classes("Window", "WindowSpec", "Qualify"), "window_not_allowed", "a window function"),
    (_classes("Subquery", "Exists", "Lateral", "Select", "Any", "All"), "subquery_not_allowed",
     "a subquery"),
    (_classes("TableSample"), "sample_not_allowed", "a sampling clause"),
    (_classes("TableColumn"), "whole_row_reference", "a whole-row reference"),
    (_classes("Columns", "Star", "StarMap"), "star_not_allowed", "a star"),
    (_classes("Pivot", "Unpivot", "PivotAlias"), "pivot_not_allowed", "PIVOT"),
    (_classes("Placeholder", "Parameter", "SessionParameter"), "parameter_not_allowed", "a parameter"),
    (_classes("Values", "Unnest", "UDTF", "ReadCSV", "ReadParquet"), "table_function_not_allowed",
     "a table function"),
    (_classes("Having"), "having_not_allowed", "HAVING"),
    (_classes("Limit", "Offset", "Fetch"), "limit_not_allowed", "LIMIT"),
    (_classes("GroupingSets", "Cube", "Rollup"), "grouping_sets_not_allowed", "GROUPING SETS"),
    (_classes("Distinct"), "distinct_not_allowed", "DISTINCT"),
    (_classes("AggFunc"), "aggregate_not_allowed", "aggregate"),
    (_classes("Binary", "Unary", "Connector", "Predicate"), "operator_not_allowed", "operator"),
    (_classes("Func"), "function_not_allowed", "function"),
)

# Arguments of a SELECT or a table that name a refused clause: each maps to its family's code.
CLAUSE_CODES: dict[str, tuple[str, str]] = {
    "with_": ("cte_not_allowed", "A WITH clause is not allowed."),
    "having": ("having_not_allowed", "HAVING is not allowed by these rules (post_processing)."),
    "limit_options": ("limit_not_allowed", "LIMIT ... PERCENT is not allowed; LIMIT takes a number of rows."),
    "qualify": ("window_not_allowed", "QUALIFY filters on window functions, which are not allowed."),
    "windows": ("window_not_allowed", "A WINDOW clause is not allowed."),
    "distinct": ("distinct_not_allowed", "SELECT DISTINCT is not allowed; use GROUP BY with an aggregate."),
    "sample": ("sample_not_allowed", "Sampling clauses are not allowed; the enclave bounds rows itself."),
    "laterals": ("subquery_not_allowed", "LATERAL is not allowed."),
    "pivots": ("pivot_not_allowed", "PIVOT and UNPIVOT are not allowed."),
    "grouping_sets": ("grouping_sets_not_allowed", "GROUPING SETS is not allowed."),
    "cube": ("grouping_sets_not_allowed", "CUBE is not allowed."),
    "rollup": ("grouping_sets_not_allowed", "ROLLUP is not allowed."),
    "db": ("qualified_name_not_allowed", "Schema and database qualifiers are not allowed."),
    "catalog": ("qualified_name_not_allowed", "Catalog qualifiers are not allowed."),
    "columns": ("clause_not_allowed", "Column aliases on a table are not allowed."),
    "joins": ("subquery_not_allowed", "Nested joins are not allowed."),
}

_REMEDIES = {
    "having_not_allowed": "filter the released table instead; small cells are suppressed automatically",
    "limit_not_allowed": "write LIMIT n [OFFSET m] with whole numbers; it trims the released, noisy table",
    "subquery_not_allowed": "write one flat SELECT ... FROM ... [JOIN ...] WHERE ... GROUP BY ...",
    "cte_not_allowed": "write one flat SELECT ... FROM ... [JOIN ...] WHERE ... GROUP BY ...",
    "star_not_allowed": "name the columns you need; COUNT(*) is allowed",
    "distinct_not_allowed": "use GROUP BY, or COUNT(DISTINCT <privacy unit>) to count persons",
    "parameter_not_allowed": "write the value, or run an approved template with parameters",
}


def _is_set(value: object) -> bool:
    return value not in (None, False, [], "")


# What a refused construct is called in SQL, where sqlglot's class name would not say it.
_NAMES = {exp.Filter: "FILTER", exp.Var: "This keyword", exp.Escape: "ESCAPE", exp.DPipe: "||",
          exp.Fetch: "FETCH", exp.Interval: "INTERVAL", exp.Collate: "COLLATE", exp.Lambda: "A lambda"}


def _describe(node: exp.Expr, source: str = "") -> str:
    """A refused node by the name the researcher wrote (MAKE_DATE, not sqlglot's DATE_FROM_PARTS)."""
    named = _NAMES.get(type(node))
    if named:
        return named
    if isinstance(node, exp.Func):
        where = span(node)
        written = re.match(r"[A-Za-z_][A-Za-z0-9_]*", source[where[0]:]) if where and source else None
        if written and source[where[0] + len(written.group()):].lstrip().startswith("("):
            return written.group().upper()
        return node.name.upper() if isinstance(node, exp.Anonymous) else node.sql_name()
    return re.sub(r"(?<!^)(?=[A-Z])", " ", type(node).__name__).upper()


def _family(node: exp.Expr) -> tuple[str, str]:
    for classes, code, label in FAMILIES:
        if isinstance(node, classes):
            return code, label
    return "construct_not_allowed", "construct"


class _Walker:
    def __init__(self, source: str, rules: Rules) -> None:
        self.source = source
        self.rules = rules
        self.operators = frozenset(rules.operators)
        self.aggregates = {node for name in rules.aggregates for node in AGGREGATE_NODES[name]}
        # HAVING is part of the grammar only where the rules let it run on released values (post_processing)
        self.select_args = STRUCTURE[exp.Select] | ({"having"} if "having" in rules.post_processing else set())
        self.violations: list[Violation] = []

    def refuse(self, code: str, message: str, node: exp.Expr) -> None:
        self.violations.append(at(code, message, self.source, node, _REMEDIES.get(code)))

    def node_allowed(self, node: exp.Expr, parent: exp.Expr | None, arg: str | None) -> bool:
        kind = type(node)
        if kind in STRUCTURE:
            places = PLACES.get(kind)
            if kind is exp.Select:
                return parent is None
            # a DISTINCT or a star in the wrong place is refused (and reported by its family)
            return places is None or (type(parent), arg) in places
        if isinstance(node, exp.AggFunc):
            return kind in self.aggregates
        if node.key in self.operators:
            return True
        return isinstance(node, exp.Func) and function_key(node) in self.rules.function_keys

    def refuse_node(self, node: exp.Expr, parent: exp.Expr | None, arg: str | None) -> None:
        code, label = _family(node)
        if code == "function_not_allowed":
            allowed = ", ".join(sorted(self.rules.functions))
            name = _describe(node, self.source)
            self.violations.append(at(code, f"Function {name} is not allowed.", self.source, node,
                                      f"allowed functions: {allowed}"))
        elif code == "aggregate_not_allowed":
            name = _describe(node, self.source)
            self.violations.append(at(code, f"Aggregate {name} is not allowed.", self.source, node,
                                      "allowed aggregates: COUNT(*), COUNT(column), COUNT(DISTINCT <privacy "
                                      "unit>), and of a bounded argument SUM, AVG, MEDIAN, QUANTILE_CONT(x, p), "
                                      "VAR_POP, VAR_SAMP, STDDEV_POP, STDDEV_SAMP"))
        elif code == "star_not_allowed" and isinstance(node, exp.Star) and isinstance(parent, exp.Column):
            self.refuse("whole_row_reference", "A table reference with .* is not allowed.", node)
        elif code in ("construct_not_allowed", "operator_not_allowed"):
            name = _describe(node, self.source)
            self.refuse(code, f"{name if name in _NAMES.values() else name.capitalize()} is not allowed here.", node)
        elif isinstance(node, exp.Fetch):
            self.refuse(code, "FETCH is not supported; write LIMIT n.", node)
        elif isinstance(node, exp.Select) and parent is None:
            self.refuse("statement_not_select", "Only a SELECT statement is accepted.", node)
        else:
            self.refuse(code, f"{label[0].upper()}{label[1:]} is not allowed.", node)

    def check_args(self, node: exp.Expr) -> bool:
        allowed = self.select_args if type(node) is exp.Select else STRUCTURE.get(type(node))
        if allowed is None:
            if isinstance(node, exp.In) and any(_is_set(node.args.get(k)) for k in ("query", "unnest", "field")):
                self.refuse("subquery_not_allowed", "IN takes a list of values, not a subquery.", node)
                return False
            if isinstance(node, exp.Cast | exp.TryCast):
                return self.check_cast(node)
            return True
        ok = True
        for key, value in node.args.items():
            if key in allowed or not _is_set(value):
                continue
            code, message = CLAUSE_CODES.get(key, ("clause_not_allowed", f"{key.strip('_').upper()} is not "
                                                                          "allowed here."))
            target = value if isinstance(value, exp.Expr) else (
                value[0] if isinstance(value, list) and value and isinstance(value[0], exp.Expr) else node)
            self.refuse(code, message, target)
            ok = False
        if isinstance(node, exp.Table) and not isinstance(node.this, exp.Identifier):
            self.refuse("table_function_not_allowed", "Only tables of the dataset may appear in FROM.", node)
            ok = False
        return ok

    def check_cast(self, node: exp.Cast) -> bool:
        extra = [k for k in ("format", "action", "default") if _is_set(node.args.get(k))]
        target = node.args.get("to")
        if extra or not isinstance(target, exp.DataType) or target.this not in self.rules.cast_type_keys:
            name = target.sql("duckdb") if isinstance(target, exp.DataType) else "this type"
            self.violations.append(at("cast_not_allowed", f"Cast to {name} is not allowed.", self.source, node,
                                      "allowed types: " + ", ".join(self.rules.cast_types)))
            return False
        return True

    def walk(self, root: exp.Expr) -> list[Violation]:
        if not isinstance(root, exp.Select):
            if isinstance(root, exp.SetOperation | exp.Subquery):
                self.refuse_node(root, None, None)
            else:
                self.refuse("statement_not_select", f"{_describe(root).capitalize()} statements are not "
                            "accepted; only one SELECT.", root)
            return self.violations
        pending: list[tuple[exp.Expr, exp.Expr | None, str | None]] = [(root, None, None)]
        while pending:
            node, parent, arg = pending.pop()
            if not self.node_allowed(node, parent, arg):
                self.refuse_node(node, parent, arg)
                continue
            if not self.check_args(node):
                continue
            for key, value in node.args.items():  # a list reversed, so that its children pop in order
                if isinstance(value, exp.Expr):
                    pending.append((value, node, key))
                elif isinstance(value, list):
                    pending.extend((child, node, key) for child in reversed(value) if isinstance(child, exp.Expr))
        return self.violations


def check_grammar(tree: exp.Expr, source: str, rules: Rules) -> list[Violation]:
    """Violations of the node-type and argument allow-list, one per offending construct."""
    return _Walker(source, rules).walk(tree)
