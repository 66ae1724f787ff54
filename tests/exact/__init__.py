"""Exact-value tests: each released number against plain DuckDB on the demo."""

from __future__ import annotations

import sqlglot

from enclave.pipeline import Enclave


def on_kept_rows(enclave: Enclave, reference: str, query: str | None = None) -> str:
    """`reference` on the rows the contribution bound keeps for `query` (default: the reference itself):
    the build's prepared filter of the query's shape. The bound applies to each person's rows before the
    WHERE, so a person with more than R rows in all years may lose one in the years asked about; that the
    filter is the bound is tests/rewrite/test_prepared.py. The statistic is then DuckDB's, on the same rows."""
    prepared = enclave.prepare("demo", query or reference).rewritten
    assert prepared is not None
    assert prepared.plan.bounds is not None
    assert prepared.plan.bounds.prepared is not None
    bound = f'"__r{prepared.plan.bounds.prepared.groups}" <= {prepared.plan.bounds.max_rows}'
    return sqlglot.parse_one(reference, read="duckdb").where(bound).sql("duckdb")
