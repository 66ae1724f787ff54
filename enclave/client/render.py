"""Text and HTML for people: a check report, a release (in a terminal and in Jupyter), any small table.

The `enclave` command prints these same texts, remote or in process, so a researcher reads one format
wherever they ask. A release always says how it was protected: the mechanisms, ε and δ spent, the
suppression threshold and the intervals' confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from enclave.client.models import Cell, CheckReport, Result


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest value, for a terminal; None is shown empty."""
    text = [[str(h) for h in headers], *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(line[i]) for line in text) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in text)


def check_text(report: CheckReport) -> str:
    if not report.accepted:
        return "\n".join([f"refused: {len(report.violations)} violation(s)",
                          *(v.render(report.sql) for v in report.violations)])
    lines = [f"accepted (rules {(report.rules_sha256 or '')[:12]})", f"  canonical: {report.canonical_sql}"]
    plan = report.plan
    if plan is not None:
        lines.append(f"  cost: ε={plan.epsilon:g}, δ={plan.delta:.2g}; groups by {plan.group_selection}; "
                     f"cells with fewer than {plan.suppression_threshold} persons are suppressed")
        lines += [f"    {q.column}: {q.mechanism}, sensitivity {q.sensitivity:g}, scale {q.scale:.4g}, "
                  f"ε {q.epsilon:.4g}, ±{q.accuracy:.4g} at {100 * (1 - plan.alpha):g}%" for q in plan.quantities]
        if plan.accuracy_targets:
            lines.append(f"  accuracy targets (ε={plan.epsilon:.6g} is the least that meets them):")
            lines += [f"    {t.column}: ± {t.accuracy:.6g} (target ± {t.target:g})" for t in plan.accuracy_targets]
        if plan.outputs:
            lines.append(f"  intervals at {100 * (1 - plan.alpha):g}%:")
            lines += [f"    {o.column} ({o.kind}): {o.interval}" for o in plan.outputs]
        if plan.deadline_seconds is not None:
            lines.append(f"  deadline: answered {plan.deadline_seconds:g} s after it starts (worst case "
                         f"{plan.worst_case_rows:,} joined rows), whatever the data")
    return "\n".join(lines)


def _shown(cell: Cell, key: bool) -> str:
    if key:
        return "NULL" if cell.value is None else str(cell.value)  # a NULL key is a group of its own
    if cell.suppressed:
        return "*"
    if cell.interval is None:
        return "" if cell.value is None else str(cell.value)
    return f"{cell.value} [{cell.interval[0]:g}, {cell.interval[1]:g}]"


def _spent(result: Result) -> str:
    note = " (replayed: the answer already released, nothing spent)" if result.replayed else ""
    parts = [f"ε={result.epsilon:g} δ={result.delta:.2g} spent{note}"]
    if result.epsilon_remaining is not None and result.delta_remaining is not None:
        parts.append(f"left ε={result.epsilon_remaining:g} δ={result.delta_remaining:.2g}")
    if result.audit_seq is not None:
        parts.append(f"audit record {result.audit_seq}")
    parts.append(f"query {result.query_id}")
    return "; ".join(parts)


def result_text(result: Result) -> str:
    names = [c.name for c in result.columns]
    rows = [[_shown(cell, c.is_key) for c, cell in zip(result.columns, row, strict=True)] for row in result.rows]
    return (f"{table(names, rows)}\n\n{_spent(result)}\nintervals at {100 * result.confidence:g}%; "
            f"'*' marks cells suppressed below {result.suppression_threshold} persons")


def _html_cell(cell: Cell, key: bool) -> str:
    if not key and cell.suppressed:
        return f'<td title="{escape(cell.reason or "suppressed")}"><em>suppressed</em></td>'
    if not key and cell.value is None:  # no estimate (a mean whose noisy count is not positive)
        return f'<td title="{escape(cell.reason or "no value")}"><em>no estimate</em></td>'
    shown = escape(_shown(cell, key))
    if key or cell.interval is None:
        return f"<td>{shown}</td>"
    value, _, interval = shown.partition(" ")
    return f"<td>{value} <small>{interval}</small></td>"


def result_html(result: Result) -> str:
    """The release as an HTML table with a footer saying how it was protected (for Jupyter)."""
    head = "".join(f"<th>{escape(c.name)}</th>" for c in result.columns)
    body = "".join("<tr>" + "".join(_html_cell(cell, c.is_key) for c, cell in zip(result.columns, row, strict=True))
                   + "</tr>" for row in result.rows)
    mechanisms = ", ".join(result.mechanisms) or "none"
    suppressed = sum(cell.suppressed for row in result.rows for cell in row)
    footer = (f"Protected by differential privacy (OpenDP): mechanisms {escape(mechanisms)}; "
              f"{escape(_spent(result))}. Groups whose noisy count of persons is below "
              f"{result.suppression_threshold} are suppressed ({suppressed} cells here). Intervals in brackets "
              f"are at {100 * result.confidence:g}% confidence. Data version {escape(result.data_version)}.")
    return (f'<table class="enclave-release"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<p class="enclave-protection"><small>{footer}</small></p>')
