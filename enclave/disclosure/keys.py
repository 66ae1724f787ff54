"""Public key sets: which groups a query may release without spending δ on choosing them.

A grouping key has a public domain when it is
- a dimension column with `keys` in its manifest: its keys, and NULL as one more key (a person without
  a recorded value, or without a row on the right of a LEFT JOIN, is counted in the NULL group rather
  than silently left out);
- a row function of such columns only (`COALESCE(gender, 'unknown')`, `LOWER(gender)`,
  `birth_year // 5 * 5`): the values DuckDB gives it on every combination of their keys, NULL included
  (`enclave.disclosure.domains`), if those are at most the rules' `max_output_groups`;
- a CASE (or IF) whose every result is a literal (`CASE WHEN days_absent >= 18 THEN 'chronic' ELSE
  'not' END`): its literals.
Then every combination of keys is released, zeros included, so no group appears or disappears because
of one person. Any other key (a measure, an expression of one) has no public domain, and its groups are
chosen by OpenDP's noisy threshold instead, which costs δ.

Warning: a public domain is published whether or not anyone has its keys; that is safe only because
every key set it derives from is declared public by the steward.
"""

from __future__ import annotations

import itertools
import math

from sqlglot import exp

from enclave.catalog.manifest import Column, Manifest
from enclave.check.query import CheckedQuery
from enclave.check.scope import sources
from enclave.disclosure import domains
from enclave.disclosure.domains import KeyValue
from enclave.rewrite import RewrittenQuery


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
        found, value = _literal(_unwrapped(branch)) if branch is not None else (True, None)
        if not found:
            return None
        if value not in values:
            values.append(value)
    return tuple(values)


def _unwrapped(expr: exp.Expr) -> exp.Expr:
    """The expression inside the rewrite's TRY() and any parentheses (neither changes a column or a literal)."""
    while isinstance(expr, exp.Paren | exp.Try):
        expr = expr.this
    return expr


def _column(column: exp.Column, query: CheckedQuery, manifest: Manifest) -> Column | None:
    tables = {s.alias: s.table for s in sources(query.tree)}
    return manifest.column(tables.get(column.table, ""), column.name)


def _public(column: Column | None) -> bool:
    return column is not None and column.role == "dimension" and column.public_keys is not None


def _evaluated(expr: exp.Expr, query: CheckedQuery, manifest: Manifest, limit: int) -> tuple[KeyValue, ...] | None:
    """The domain of a row function whose every column has a public key set (see domains), or None."""
    columns = list({(c.table, c.name): c for c in expr.find_all(exp.Column)}.values())
    specs = [_column(c, query, manifest) for c in columns]
    if not columns or not all(_public(spec) for spec in specs) or expr.find(exp.AggFunc, exp.Subquery):
        return None
    keys = tuple((spec.type, spec.public_keys) for spec in specs)  # type: ignore[union-attr]
    if domains.combinations(keys) > limit:  # type: ignore[arg-type]
        return None
    return domains.evaluate(domains.template(expr, columns), keys)  # type: ignore[arg-type]


def key_domain(expr: exp.Expr, query: CheckedQuery, manifest: Manifest, limit: int) -> tuple[KeyValue, ...] | None:
    """The public values one grouping key can take, NULL included where it can occur, or None.

    `expr` is the key as executed (the rewritten query's key), so an evaluated domain holds exactly the
    values the executed query can produce from public keys.
    """
    inner = _unwrapped(expr)
    if isinstance(inner, exp.Column):
        column = _column(inner, query, manifest)
        return (*column.public_keys, None) if _public(column) else None  # type: ignore[union-attr,misc]
    evaluated = _evaluated(expr, query, manifest, limit)
    if evaluated is not None:
        return evaluated
    if isinstance(inner, exp.Case) and inner.this is None:
        return _branch_values([b.args.get("true") for b in inner.args.get("ifs") or []] + [inner.args.get("default")])
    if isinstance(inner, exp.If):
        return _branch_values([inner.args.get("true"), inner.args.get("false")])
    return None


def domain_size(expr: exp.Expr, query: CheckedQuery, manifest: Manifest, limit: int) -> int | None:
    """How many values a grouping key can take (NULL included), known without the data, or None.

    A public domain, a boolean, or an integer column with bounds. With sizes known before anything
    runs, the number of groups a query can produce is bounded in advance, so no refusal can depend on
    how many groups the data happens to have (which one person could tip).
    """
    public = key_domain(expr, query, manifest, limit)
    if public is not None:
        return len(public)
    inner = _unwrapped(expr)
    if isinstance(inner, exp.Column):
        column = _column(inner, query, manifest)
        if column is not None and column.role in ("dimension", "measure"):
            if column.type == "BOOLEAN":
                return 3
            if column.type in ("INTEGER", "BIGINT") and column.value_bounds is not None:
                low, high = column.value_bounds
                return int(high) - int(low) + 2
    return None


def public_groups(rewritten: RewrittenQuery, manifest: Manifest, limit: int) -> tuple[tuple[KeyValue, ...], ...] | None:
    """Every combination of public keys, in order, or None if any key is not public or they are too many.

    The keys are the executed query's (TRY()-guarded), so the groups match its result row for row.
    """
    domains_ = [key_domain(key.expr, rewritten.checked, manifest, limit) for key in rewritten.plan.keys]
    if any(domain is None for domain in domains_):
        return None
    if math.prod(len(domain) for domain in domains_) > limit:  # type: ignore[arg-type]
        return None
    return tuple(itertools.product(*domains_))  # type: ignore[arg-type]
