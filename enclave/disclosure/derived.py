"""Post-processing SQL on released values: derived columns and HAVING, evaluated with numpy.

The check stage accepts arithmetic of aggregates as an output column and a HAVING condition, and hands
them over in one form (enclave/check/query.py): each aggregate, and in HAVING each GROUP BY key, is a
column named like the aggregate or key column that holds it. Here they are computed from what protect
has already released, the noisy values, and nothing else: these functions get no true value, so what
they return is post-processing of a differentially private release and costs nothing more.

Arrays are 1-D (one value per group) or 2-D (simulated draws x groups, for intervals): every operation
is elementwise and broadcasts. A value is a float; NaN means "no value" (a suppressed or not-estimable
input, a division by zero or by a non-positive noisy count, an overflow), and propagates.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping

import numpy as np
from sqlglot import exp

from enclave.check.semantics import round_digits

# SQL's three truth values as numbers, so that AND is min, OR is max and NOT is 1 - x (Kleene logic)
TRUE, UNKNOWN, FALSE = 1.0, 0.5, 0.0

_ARITHMETIC: dict[type[exp.Expr], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    exp.Add: np.add, exp.Sub: np.subtract, exp.Mul: np.multiply}
_COMPARISONS: dict[type[exp.Expr], Callable[[object, object], object]] = {
    exp.EQ: operator.eq, exp.NEQ: operator.ne, exp.GT: operator.gt, exp.GTE: operator.ge,
    exp.LT: operator.lt, exp.LTE: operator.le}


def evaluate(expr: exp.Expr, values: Mapping[str, np.ndarray], counts: Collection[str] = ()) -> np.ndarray:
    """The value of a derived expression, elementwise over the noisy values of the aggregates it names.

    `counts` names the aggregates that are counts: divided by, a count that is not positive (noise can
    take a small count below zero) gives no value, as a mean over a non-positive noisy count has none.
    Any other divisor gives no value only at zero."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        result = np.asarray(_value(expr, values, frozenset(counts)), dtype=float)
    shape = np.broadcast_shapes(*(np.shape(v) for v in values.values())) if values else result.shape
    result = np.array(np.broadcast_to(result, np.broadcast_shapes(result.shape, shape)), dtype=float)
    result[~np.isfinite(result)] = np.nan
    return result


def _value(node: exp.Expr, values: Mapping[str, np.ndarray], counts: frozenset[str]) -> np.ndarray:
    match node:
        case exp.Column():
            return np.asarray(values[node.name], dtype=float)
        case exp.Literal(is_string=False):
            return np.asarray(float(node.this))
        case exp.Paren():
            return _value(node.this, values, counts)
        case exp.Neg():
            return -_value(node.this, values, counts)
        case exp.Div():
            numerator, divisor = _value(node.left, values, counts), _value(node.right, values, counts)
            empty = divisor <= 0 if _is_count(node.right, counts) else divisor == 0
            return np.where(empty, np.nan, numerator / np.where(empty, 1.0, divisor))
        case exp.Round():
            digits = round_digits(node)
            if digits is None:
                raise ValueError("ROUND needs whole-number digits")
            return _round(_value(node.this, values, counts), digits)
        case exp.Nullif():
            inner = _value(node.this, values, counts)
            return np.where(inner == _value(node.expression, values, counts), np.nan, inner)
    operation = _ARITHMETIC.get(type(node))
    if operation is None:  # the check admits nothing else: fail closed, never guess
        raise ValueError(f"{type(node).__name__} is not derived arithmetic")
    return operation(_value(node.left, values, counts), _value(node.right, values, counts))


def _is_count(node: exp.Expr, counts: frozenset[str]) -> bool:
    """A divisor that is a count, through parentheses and NULLIF(count, 0)."""
    while isinstance(node, exp.Paren | exp.Nullif):
        node = node.this
    return isinstance(node, exp.Column) and node.name in counts


def _round(value: np.ndarray, digits: int) -> np.ndarray:
    """ROUND as SQL (and DuckDB) does it: halves away from zero, not numpy's halves to even."""
    scale = 10.0 ** digits
    return np.sign(value) * np.floor(np.abs(value) * scale + 0.5) / scale


def keep(having: exp.Expr, values: Mapping[str, np.ndarray], keys: Mapping[str, np.ndarray],
         counts: Collection[str] = ()) -> np.ndarray:
    """Which groups a HAVING condition keeps, judged on their noisy values and keys.

    As in SQL, a condition that is unknown (a comparison with no value: NULL, NaN, a suppressed input,
    or values of types that do not compare) does not keep its group."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        truth = _truth(having, values, keys, frozenset(counts))
    shape = np.broadcast_shapes(*(np.shape(v) for v in (*values.values(), *keys.values())))
    return np.broadcast_to(np.asarray(truth) == TRUE, shape).copy()


def _truth(node: exp.Expr, values: Mapping[str, np.ndarray], keys: Mapping[str, np.ndarray],
           counts: frozenset[str]) -> np.ndarray:
    def truth(part: exp.Expr) -> np.ndarray:
        return _truth(part, values, keys, counts)

    def operand(part: exp.Expr) -> np.ndarray | object:
        while isinstance(part, exp.Paren):
            part = part.this
        if isinstance(part, exp.Null):
            return None
        if isinstance(part, exp.Literal) and part.is_string:
            return part.this
        if isinstance(part, exp.Column) and part.name in keys:
            return np.asarray(keys[part.name], dtype=object)
        return evaluate(part, values, counts)

    match node:
        case exp.Paren():
            return truth(node.this)
        case exp.Not():
            return TRUE - truth(node.this)
        case exp.And():
            return np.minimum(truth(node.left), truth(node.right))
        case exp.Or():
            return np.maximum(truth(node.left), truth(node.right))
        case exp.Boolean():
            return np.asarray(TRUE if node.this else FALSE)
        case exp.Between():
            value = operand(node.this)
            return np.minimum(_compare(operator.ge, value, operand(node.args["low"])),
                              _compare(operator.le, value, operand(node.args["high"])))
        case exp.Is() if isinstance(node.expression, exp.Null):
            return np.where(_missing(operand(node.this)), TRUE, FALSE)
    comparison = _COMPARISONS.get(type(node))
    if comparison is None:  # the check admits nothing else: fail closed, never guess
        raise ValueError(f"{type(node).__name__} is not a HAVING condition")
    return _compare(comparison, operand(node.left), operand(node.right))


def _missing(value: object) -> np.ndarray:
    """Where a value is NULL: None, or NaN (no value)."""
    array = np.asarray(value, dtype=object)
    return np.vectorize(lambda v: v is None or (isinstance(v, float) and v != v), otypes=[bool])(array)


def _compare(comparison: Callable[[object, object], object], left: object, right: object) -> np.ndarray:
    """A comparison as a truth value per element: unknown where either side is missing or the two do not
    compare (a text key with a number), as SQL would not make them equal or ordered either."""
    if all(isinstance(side, np.ndarray) and side.dtype.kind == "f" for side in (left, right)):
        known = ~(np.isnan(left) | np.isnan(right))  # type: ignore[arg-type]
        return np.where(known, np.where(comparison(left, right), TRUE, FALSE), UNKNOWN)
    a, b = np.broadcast_arrays(np.asarray(left, dtype=object), np.asarray(right, dtype=object))
    out = np.full(a.shape, UNKNOWN)
    missing = _missing(a) | _missing(b)
    for index in np.ndindex(a.shape):
        if missing[index]:
            continue
        try:
            out[index] = TRUE if comparison(a[index], b[index]) else FALSE
        except TypeError:
            continue
    return out
