"""Public key sets: which groups a query may release without spending δ on choosing them.

A grouping key has a public domain when it is a dimension column with `keys` in its manifest, or a CASE
(or IF) whose every result is a literal (`CASE WHEN days_absent >= 18 THEN 'chronic' ELSE 'not' END`).
Then every combination of keys is released, zeros included, so no group appears or disappears because
of one person. Any other key (a measure, an expression) has no public domain, and its groups are
chosen by OpenDP's noisy threshold instead, which costs δ.
"""

from __future__ import annotations

import itertools

from sqlglot import exp

from enclave.catalog.manifest import Key, Manifest
from enclave.check.query import CheckedQuery
from enclave.check.scope import sources

KeyValue = Key | float | None


def _literal(node: exp.Expr) -> tuple[bool, KeyValue]:
    if isinstance(node, exp.Null):
        return True, None
    if isinstance(node, exp.Boolean):
        return True, bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return True, node.this
        number = float(node.this)
        return True, int(number) if number.is_integer() and "." not in node.this else number
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        found, value = _literal(node.this)
        return found, -value if isinstance(value, int | float) else None
    return False, None


def _branch_values(branches: list[exp.Expr | None]) -> tuple[KeyValue, ...] | None:
    values: list[KeyValue] = []
    for branch in branches:
        found, value = _literal(branch) if branch is not None else (True, None)
        if not found:
            return None
        if value not in values:
            values.append(value)
    return tuple(values)


def key_domain(expr: exp.Expr, query: CheckedQuery, manifest: Manifest) -> tuple[KeyValue, ...] | None:
    """The public values one grouping key can take, or None when its domain is not public."""
    if isinstance(expr, exp.Paren):
        return key_domain(expr.this, query, manifest)
    if isinstance(expr, exp.Column):
        tables = {s.alias: s.table for s in sources(query.tree)}
        column = manifest.column(tables.get(expr.table, ""), expr.name)
        return column.public_keys if column is not None and column.role == "dimension" else None
    if isinstance(expr, exp.Case) and expr.this is None:
        return _branch_values([b.args.get("true") for b in expr.args.get("ifs") or []] + [expr.args.get("default")])
    if isinstance(expr, exp.If):
        return _branch_values([expr.args.get("true"), expr.args.get("false")])
    return None


def domain_size(expr: exp.Expr, query: CheckedQuery, manifest: Manifest) -> int | None:
    """How many values a grouping key can take (NULL included), known without the data, or None.

    A public key set, a boolean, or an integer column with bounds. With sizes known before anything
    runs, the number of groups a query can produce is bounded in advance, so no refusal can depend on
    how many groups the data happens to have (which one person could tip).
    """
    public = key_domain(expr, query, manifest)
    if public is not None:
        return len(public) + 1
    while isinstance(expr, exp.Paren):
        expr = expr.this
    if isinstance(expr, exp.Column):
        tables = {s.alias: s.table for s in sources(query.tree)}
        column = manifest.column(tables.get(expr.table, ""), expr.name)
        if column is not None and column.role in ("dimension", "measure"):
            if column.type == "BOOLEAN":
                return 3
            if column.type in ("INTEGER", "BIGINT") and column.value_bounds is not None:
                low, high = column.value_bounds
                return int(high) - int(low) + 2
    return None


def public_groups(query: CheckedQuery, manifest: Manifest, limit: int) -> tuple[tuple[KeyValue, ...], ...] | None:
    """Every combination of public keys, in order, or None if any key is not public or they are too many."""
    domains = [key_domain(key.expr, query, manifest) for key in query.keys]
    if any(domain is None for domain in domains):
        return None
    size = 1
    for domain in domains:
        size *= len(domain)  # type: ignore[arg-type]
    if size > limit:
        return None
    return tuple(itertools.product(*domains))  # type: ignore[arg-type]
