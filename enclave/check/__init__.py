"""check: untrusted SQL in, a checked query or every violation out. No data is touched.

Order: bounded parse -> desugar (FILTER) -> grammar allow-list -> normalise -> semantic checks -> qualify against the
manifest -> the same checks again on the qualified tree (fail closed if they disagree) -> describe.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from enclave.catalog.manifest import Manifest
from enclave.check.grammar import check_grammar
from enclave.check.parse import parse
from enclave.check.query import CheckedQuery, describe, desugar, normalize, qualified
from enclave.check.scope import using_columns
from enclave.check.semantics import SEMANTIC_CHECKS, Context
from enclave.check.violations import CODES, Violation
from enclave.policy.rules import Rules

__all__ = ["CODES", "CheckResult", "CheckedQuery", "Violation", "check", "recheck"]


@dataclass(frozen=True)
class CheckResult:
    """Accepted with the checked query, or refused with every violation found."""

    violations: tuple[Violation, ...]
    query: CheckedQuery | None = None

    @property
    def accepted(self) -> bool:
        return self.query is not None and not self.violations


def _violations(tree: exp.Expr, ctx: Context) -> list[Violation]:
    found = check_grammar(tree, ctx.source, ctx.rules)
    if found or not isinstance(tree, exp.Select):
        return found
    return _semantic(tree, ctx)


def _semantic(tree: exp.Select, ctx: Context) -> list[Violation]:
    found = [violation for rule in SEMANTIC_CHECKS for violation in rule(tree, ctx)]
    return list(dict.fromkeys(found))  # one problem reported twice (two aggregates of one expression) once


def recheck(query: CheckedQuery, rules: Rules, manifest: Manifest) -> list[Violation]:
    """Run every check again on a checked query's qualified tree: it must find nothing."""
    return _violations(query.tree, Context(query.canonical_sql, rules, manifest, using_columns(query.tree)))


def check(source: str, rules: Rules, manifest: Manifest) -> CheckResult:
    """Check one SQL text against the rules and a dataset's manifest. Never raises on any input."""
    try:
        return _check(source, rules, manifest)
    except Exception:  # fail closed: an unforeseen input is a refusal, never a crash
        return CheckResult((Violation("internal_check_failed", "The query could not be checked."),))


def _check(source: str, rules: Rules, manifest: Manifest) -> CheckResult:
    tree, found = parse(source, rules.limits)
    if tree is None:
        return CheckResult(tuple(found))
    # The tree is check's own from here (a fresh parse): each step changes it in place, none copies it.
    tree = desugar(tree, copy=False)
    found = check_grammar(tree, source, rules)
    if found or not isinstance(tree, exp.Select):
        return CheckResult(tuple(found))
    # normalize adds only aliases, table qualifiers and copies of output expressions the grammar has
    # accepted: the semantic checks follow without a second grammar pass (the qualified tree gets one)
    tree = normalize(tree, manifest, copy=False)
    found = _semantic(tree, Context(source, rules, manifest, using_columns(tree)))
    if found:
        return CheckResult(tuple(found))
    tree = qualified(tree, manifest, copy=False)
    ctx = Context(source, rules, manifest, using_columns(tree))  # a new context: the tree has changed
    again = _violations(tree, ctx)
    if again:
        codes = ", ".join(sorted({v.code for v in again}))
        return CheckResult((Violation("internal_check_failed", f"The qualified query failed a re-check ({codes})."),))
    return CheckResult((), describe(tree, ctx))
