"""Bounds of a numeric expression, by interval arithmetic over manifest bounds and literals.

SUM and AVG need an argument whose values lie in known bounds: they are clamped to them, and the
bounds give the sensitivity that calibrates the noise. A measure column has declared bounds; so does
an expression built from bounded columns, numeric literals, CASE/IF branches, COALESCE, LEAST/GREATEST,
ABS, casts of booleans and + - * (CASE WHEN proficient THEN 1 ELSE 0 END lies in [0, 1]). Anything else
(division, strings, unbounded columns) has no bounds, and the check refuses to sum it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sqlglot import exp

from enclave.catalog.manifest import Column

Interval = tuple[float, float]
Lookup = Callable[[exp.Column], Column | None]
_NUMERIC = {*exp.DataType.NUMERIC_TYPES}


def _hull(nodes: list[exp.Expr | None], lookup: Lookup) -> Interval | None:
    """The interval covering every branch; a NULL branch adds no value, an unbounded one spoils all."""
    parts = [bounds(node, lookup) for node in nodes if node is not None and not isinstance(node, exp.Null)]
    if not parts or any(part is None for part in parts):
        return None
    return (min(p[0] for p in parts), max(p[1] for p in parts))  # type: ignore[index]


def _literal(node: exp.Expr) -> float | None:
    """The value of a numeric literal (or its negation), else None."""
    negate = isinstance(node, exp.Neg)
    inner = node.this if negate else node
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if isinstance(inner, exp.Literal) and not inner.is_string:
        value = float(inner.this)
        return -value if negate else value
    return None


def _product(a: Interval, b: Interval) -> Interval:
    corners = [x * y for x in a for y in b]
    return (min(corners), max(corners))


# Bounds wider than this are refused: a sum is noised in millionths of its unit as a 64-bit integer.
WIDEST = 1e9


def bounds(node: exp.Expr, lookup: Lookup) -> Interval | None:
    """The interval every value of `node` lies in (NULLs aside), or None when it is unknown or too wide."""
    found = _bounds(node, lookup)
    if found is None or max(abs(found[0]), abs(found[1])) > WIDEST:
        return None
    return found


def _bounds(node: exp.Expr, lookup: Lookup) -> Interval | None:
    match node:
        case exp.Paren() | exp.Alias():
            return bounds(node.this, lookup)
        case exp.Literal(is_string=False):
            value = float(node.this)
            return (value, value) if math.isfinite(value) else None
        case exp.Column():
            column = lookup(node)
            if column is not None and column.type == "BOOLEAN":
                return (0.0, 1.0)
            return column.value_bounds if column is not None else None
        case exp.Boolean():
            return (0.0, 1.0)
        case exp.Cast() | exp.TryCast():
            target = node.args.get("to")
            inner = bounds(node.this, lookup)
            is_numeric = isinstance(target, exp.DataType) and target.this in _NUMERIC
            return inner if is_numeric else None
        case exp.Neg():
            inner = bounds(node.this, lookup)
            return (-inner[1], -inner[0]) if inner else None
        case exp.Abs():
            inner = bounds(node.this, lookup)
            if inner is None:
                return None
            low = 0.0 if inner[0] <= 0 <= inner[1] else min(abs(inner[0]), abs(inner[1]))
            return (low, max(abs(inner[0]), abs(inner[1])))
        case exp.Add() | exp.Sub() | exp.Mul():
            left, right = bounds(node.left, lookup), bounds(node.right, lookup)
            if left is None or right is None:
                return None
            if isinstance(node, exp.Add):
                return (left[0] + right[0], left[1] + right[1])
            if isinstance(node, exp.Sub):
                return (left[0] - right[1], left[1] - right[0])
            return _product(left, right)
        case exp.Case():
            branches = [branch.args.get("true") for branch in node.args.get("ifs") or []]
            return _hull([*branches, node.args.get("default")], lookup)
        case exp.If():
            return _hull([node.args.get("true"), node.args.get("false")], lookup)
        case exp.Coalesce() | exp.Least() | exp.Greatest():
            return _hull([node.this, *node.expressions], lookup)
        case exp.Div() | exp.IntDiv():
            left, divisor = bounds(node.left, lookup), _literal(node.right)
            if left is None or not divisor:
                return None
            low, high = sorted((left[0] / divisor, left[1] / divisor))
            return (low - 1, high + 1) if isinstance(node, exp.IntDiv) else (low, high)
        case exp.Mod():
            left, divisor = bounds(node.left, lookup), _literal(node.right)
            if left is None or not divisor:
                return None
            return (0.0 if left[0] >= 0 else -abs(divisor), 0.0 if left[1] <= 0 else abs(divisor))
        case exp.Round() | exp.Floor() | exp.Ceil():
            inner = bounds(node.this, lookup)
            return (inner[0] - 1, inner[1] + 1) if inner else None
        case exp.Predicate() | exp.Connector() | exp.Not():
            return (0.0, 1.0)  # a boolean: FALSE and TRUE sum as 0 and 1
        case exp.Null():
            return None
    return None



_STRICT = (exp.Paren, exp.Cast, exp.Neg, exp.Abs, exp.Round, exp.Floor, exp.Ceil, exp.Add, exp.Sub, exp.Mul,
           exp.Predicate, exp.Connector, exp.Not)


def never_null(node: exp.Expr, lookup: Lookup) -> bool:
    """Whether `node` has a value on every row, by what it is built of: a column declared `nullable:
    false` (`lookup` gives None for one a LEFT JOIN can leave NULL), a literal, a CASE whose branches and
    ELSE all have one (its conditions may be NULL), COALESCE with one argument that has, and operators
    and casts of such. Anything else may be NULL (a division, NULLIF, TRY_CAST, a CASE without ELSE).
    Then AVG(node) divides by COUNT(*): COUNT(node) is the same number, so it is not noised again."""
    match node:
        case exp.Column():
            column = lookup(node)
            return column is not None and not column.nullable
        case exp.Literal() | exp.Boolean():
            return True
        case exp.Case():
            default = node.args.get("default")
            branches = [branch.args.get("true") for branch in node.args.get("ifs") or []]
            return default is not None and all(b is not None and never_null(b, lookup) for b in [*branches, default])
        case exp.If():
            false = node.args.get("false")
            return false is not None and never_null(node.args["true"], lookup) and never_null(false, lookup)
        case exp.Coalesce():
            return any(never_null(part, lookup) for part in [node.this, *node.expressions])
        case exp.TryCast():
            return False
        case _ if isinstance(node, _STRICT):
            return all(never_null(part, lookup) for part in node.iter_expressions())
    return False
