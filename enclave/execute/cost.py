"""The worst case of a rewritten query, and the deadline it runs to, known before it runs (invariant 10).

What a researcher sees of a query besides its numbers, its response time and its outcome, must not
depend on the data ("Differential Privacy Under Fire", Haeberlen, Pierce and Narayan, USENIX Security
2011: predictable transactions). So the enclave never lets the engine's speed show: every query gets a
deadline from public facts alone — the manifest's contribution bound R, the query's tables and joins,
and the size of each table in the data version (public metadata, like the dataset's size) — and its
answer is held until that deadline (enclave.pipeline). The engine is interrupted at the deadline; an
overrun is answered at the deadline as `execution_timeout`, charged, whatever the data.

The worst case: each table of a join keeps at most R rows per person before it is joined
(rewrite.rules.bound_tables_before_joins), and joins are on the person key. So each row of a table
joins with at most R rows of every other table, and a left-joined table adds at most R rows per row
(or one NULL row). The joined rows are therefore at most n_t * R^(k-1) for every inner table t of the
query (n_t its rows, k the number of tables): the smallest such product is the worst case. A single
table's worst case is its size. The deadline is `base_seconds + worst / rows_per_second`, the throughput
budgeted for the query's shape (`rows_per_second`); a query whose
worst case exceeds `max_worst_case_rows` or whose deadline exceeds `timeout_seconds` is refused before
it runs, with a remedy, and so neither memory nor time can run out in a way the data decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlglot import exp

from enclave.policy.rules import Execution
from enclave.rewrite.plan import Plan


@dataclass(frozen=True)
class Cost:
    """A query's worst case in joined rows and the deadline, in seconds after execution starts."""

    worst_case_rows: int
    deadline_seconds: float
    within_limits: bool


def _table_name(node: exp.Expr) -> str:
    """The base table of a FROM or JOIN item: a table, or the bounded subquery over one."""
    if isinstance(node, exp.Subquery):
        return _table_name(node.this.args["from_"].this)
    return node.name


def worst_case_rows(plan: Plan, table_rows: Mapping[str, int], max_rows_per_unit: int) -> int:
    """The most rows the query's FROM and JOINs can produce, from table sizes and the bound alone."""
    relation = plan.relation
    joins = relation.args.get("joins") or []
    first = _table_name(relation.args["from_"].this)
    if not joins:
        return table_rows[first]
    inner = [first, *(_table_name(j.this) for j in joins if (j.side or "").lower() != "left")]
    others = len(joins)  # every other table multiplies a row by at most R
    return min(table_rows[name] for name in inner) * max_rows_per_unit ** others


def rows_per_second(plan: Plan, execution: Execution) -> int:
    """The engine's budgeted throughput for the shape of the query: the build's prepared filter is one scan
    (with a distinct count of persons, or without: rewrite.plan._filtered), a per-query bound is windows
    and hash aggregates per person. The shape is public: it follows from the SQL and the manifest."""
    prepared = plan.bounds.prepared if plan.bounds is not None else None
    if prepared is None:
        return execution.rows_per_second
    return execution.filtered_rows_per_second if prepared.firsts else execution.distinct_rows_per_second


def cost_of(plan: Plan, table_rows: Mapping[str, int], max_rows_per_unit: int, execution: Execution) -> Cost:
    worst = worst_case_rows(plan, table_rows, max_rows_per_unit)
    deadline = execution.base_seconds + worst / rows_per_second(plan, execution)
    # the memory bound: a shape holding rows or persons (windows, a distinct count) holds at most `worst` of
    # them; the prepared filter with first-row marks holds one accumulator per group, whatever the rows
    prepared = plan.bounds.prepared if plan.bounds is not None else None
    holds_rows = prepared is None or not prepared.firsts
    within = (worst <= execution.max_worst_case_rows or not holds_rows) and deadline <= execution.timeout_seconds
    return Cost(worst, round(deadline, 3), within)
