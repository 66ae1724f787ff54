"""rewrite: from a checked query to the SQL the enclave runs, bounded, clamped and regenerated.

The researcher's text is never executed: the executed SQL is rendered from the checked, qualified tree
after every rule of `RULES` has been applied, and must parse as exactly one SELECT.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from sqlglot import exp

from enclave.catalog.bounding import Layout
from enclave.catalog.manifest import Manifest
from enclave.check.query import CheckedQuery
from enclave.rewrite.plan import Plan, build, plan_of, render
from enclave.rewrite.rules import RULES, RewriteContext

__all__ = ["RULES", "RewriteContext", "RewrittenQuery", "rewrite", "sampling_salt"]


@dataclass(frozen=True)
class RewrittenQuery:
    """The SQL to execute, the plan it was rendered from, and the checked query it came from."""

    sql: str
    plan: Plan
    checked: CheckedQuery

    def tree(self) -> exp.Select:
        """A fresh, engine-neutral tree of the executed query (`sql` is its DuckDB rendering): an engine of
        another dialect renders this (enclave.execute.spark) and may change its own copy while doing so."""
        return build(self.plan)


def sampling_salt(secret: bytes, data_version: str) -> int:
    """The salt of the row and group order: keyed by the enclave's secret, fixed per data version.

    Fixed per data version so a repeated query sees the same rows (no new sample to average over);
    keyed so nobody outside the enclave can predict which rows are used.
    """
    digest = hmac.new(secret, f"row-order:{data_version}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def rewrite(query: CheckedQuery, manifest: Manifest, salt: int, layout: Layout | None = None) -> RewrittenQuery:
    """Apply every rule in order and render the result; `layout` is what the data version's build prepared
    for bounding (enclave.catalog.bounding), None for a build without it."""
    ctx = RewriteContext(manifest.contribution_bounds, salt, manifest.consent_required, layout)
    plan = plan_of(query)
    for rule in RULES:
        plan = rule(plan, ctx)
    return RewrittenQuery(render(plan), plan, query)
