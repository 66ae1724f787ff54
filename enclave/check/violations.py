"""Violations: why a query was refused, pointing at the SQL token that caused it.

Every violation has a stable code from `CODES` (documented there and in the README; a test fails when a
code is used but not documented), a one-line message, the line and column of the offending token, the
offending text (`highlight`) and, where one exists, a remedy. Messages are built only from the query's
own text and the dataset's public manifest: never from data, so a refusal cannot leak a value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlglot import exp

from enclave import caret

# code -> what it means. The single list of check codes; README.md documents each.
CODES: dict[str, str] = {
    "sql_too_long": "The SQL text exceeds the rules' length or token limit.",
    "sql_too_deep": "Brackets, CASE expressions or operators are nested deeper than the rules allow.",
    "sql_too_complex": "The parsed query has more nodes than the rules allow.",
    "syntax_error": "The SQL does not parse in the DuckDB dialect.",
    "empty_query": "There is no statement.",
    "multiple_statements": "More than one statement; exactly one SELECT is accepted.",
    "statement_not_select": "The statement is not a SELECT (DDL, DML, PRAGMA, SET, COPY, ATTACH, PIVOT, ...).",
    "subquery_not_allowed": "A subquery, EXISTS, IN (SELECT ...) or LATERAL: queries are one flat SELECT.",
    "cte_not_allowed": "A WITH clause (common table expression).",
    "set_operation_not_allowed": "UNION, INTERSECT or EXCEPT.",
    "window_not_allowed": "A window function, WINDOW or QUALIFY clause.",
    "table_function_not_allowed": "A table function or a file, URL or VALUES list in FROM.",
    "sample_not_allowed": "A sampling clause (USING SAMPLE, TABLESAMPLE).",
    "star_not_allowed": "SELECT *, COLUMNS(*) or a star outside COUNT(*).",
    "whole_row_reference": "A table or alias used as a value (a whole-row reference).",
    "pivot_not_allowed": "PIVOT or UNPIVOT.",
    "parameter_not_allowed": "A placeholder ($1, ?, :name) in ad-hoc SQL.",
    "clause_not_allowed": "A clause an aggregate query does not need (INTO, hints, settings, ...).",
    "having_not_allowed": "HAVING that the rules do not allow (post_processing), or a HAVING condition beyond "
    "comparisons of aggregates, output columns, GROUP BY keys and literals.",
    "limit_not_allowed": "LIMIT or OFFSET that is not a whole number, LIMIT ... PERCENT, or FETCH.",
    "distinct_not_allowed": "SELECT DISTINCT, or DISTINCT in an aggregate other than COUNT(DISTINCT unit).",
    "grouping_sets_not_allowed": "GROUPING SETS, CUBE or ROLLUP.",
    "construct_not_allowed": "An expression outside the allowed grammar (arrays, structs, lambdas, ...).",
    "operator_not_allowed": "An operator that the rules do not allow.",
    "function_not_allowed": "A function that the rules do not allow.",
    "aggregate_not_allowed": "An aggregate function that the rules do not allow.",
    "cast_not_allowed": "A cast to a type the rules do not allow.",
    "qualified_name_not_allowed": "A schema, database or catalog qualifier on a table or column.",
    "unknown_table": "A table that is not in the dataset.",
    "missing_table": "A query without FROM: every query reads a table of the dataset.",
    "unknown_column": "A column that is not in the tables of the query.",
    "unknown_alias": "A table qualifier that names no table of the query.",
    "ambiguous_column": "An unqualified column present in more than one table of the query.",
    "duplicate_alias": "Two tables of the query share one name or alias.",
    "restricted_column": "A restricted column (identifier, free text) or the privacy unit used outside the "
    "places it is allowed.",
    "join_not_allowed": "A join kind that is not allowed (CROSS, comma, NATURAL, ASOF, POSITIONAL, RIGHT, ...).",
    "join_condition_not_allowed": "A join that is not exactly equality of the privacy unit of two tables.",
    "too_many_joins": "More joins than the rules allow.",
    "worst_case_too_large": "In the worst case the query's joins produce more rows, or need more time, than the "
    "rules allow (known from the contribution bounds and the tables' sizes, before anything runs).",
    "aggregate_misplaced": "An aggregate nested in another, or in WHERE, GROUP BY or a join condition.",
    "unbounded_aggregate": "SUM, AVG, a quantile or a variance of an expression with no known bounds.",
    "quantile_not_allowed": "QUANTILE_CONT with a fraction that is not a literal strictly between 0 and 1.",
    "output_not_aggregate": "An output column that is neither an aggregate (or, where the rules allow, arithmetic of "
    "aggregates) nor a grouping key.",
    "derived_not_allowed": "An expression of aggregates using more than + - * /, unary minus, parentheses, numeric "
    "literals, ROUND(e, n) and NULLIF(e, 0).",
    "no_aggregate": "A query with no aggregate, which would list group keys or rows.",
    "group_key_not_output": "A GROUP BY expression that is not an output column.",
    "group_key_aggregate": "A GROUP BY expression that is an aggregate or a constant.",
    "too_many_group_keys": "More GROUP BY keys than the rules allow.",
    "too_many_aggregates": "More aggregates than the rules allow.",
    "duplicate_output_name": "Two output columns with the same name.",
    "reserved_name": "An output column or table alias containing '__', which the enclave reserves for itself.",
    "order_not_output": "ORDER BY something that is not an output column.",
    "type_mismatch": "The engine cannot type the query (text compared with a number, say); nothing ran.",
    "engine_unsupported": "The dataset's engine (Spark) cannot compute this construct with DuckDB's meaning; "
    "nothing ran.",
    "internal_check_failed": "The query failed a re-check after qualification; it is refused (fail closed).",
}


@dataclass(frozen=True)
class Violation:
    """One reason a query was refused, positioned at its token (line and col are 1-based)."""

    code: str
    message: str
    line: int | None = None
    col: int | None = None
    highlight: str = ""
    remedy: str | None = None

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"undocumented violation code {self.code!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def render(self, source: str) -> str:
        """A human-readable block: the message, the line with a caret under the token, the remedy."""
        return caret.render(self.code, self.message, self.line, self.col, self.highlight, self.remedy, source)


def span(node: exp.Expr) -> tuple[int, int] | None:
    """Source offsets [start, end] covered by a node, from the positions sqlglot keeps on its tokens."""
    starts, ends = [], []
    for child in node.walk():
        meta = child.meta if child._meta else None
        if meta and "start" in meta and "end" in meta:
            starts.append(meta["start"])
            ends.append(meta["end"])
    return (min(starts), max(ends)) if starts else None


def position(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset, counting lines as str.splitlines() does."""
    lines = source[:offset].splitlines(keepends=True)
    if not lines:
        return 1, 1
    last = lines[-1]
    if last.splitlines() != [last]:  # the text before the offset ends with a line break
        return len(lines) + 1, 1
    return len(lines), len(last) + 1


def _balanced(source: str, start: int, end: int) -> tuple[int, int]:
    """Widen [start, end] to take in the brackets its tokens open or close (a call's closing bracket)."""
    excerpt = source[start:end + 1]
    missing_close = excerpt.count("(") - excerpt.count(")")
    while missing_close > 0 and end + 1 < len(source):
        end += 1
        missing_close += {"(": 1, ")": -1}.get(source[end], 0)
    missing_open = excerpt.count(")") - excerpt.count("(")
    while missing_open > 0 and start > 0:
        start -= 1
        missing_open += {")": 1, "(": -1}.get(source[start], 0)
    return start, end


def at_offsets(code: str, message: str, source: str, start: int, end: int, remedy: str | None = None
               ) -> Violation:
    start, end = _balanced(source, start, end)
    line, col = position(source, start)
    excerpt = source[start : end + 1]
    if len(excerpt) > 80:
        excerpt = excerpt[:77] + "..."
    return Violation(code, message, line, col, excerpt, remedy)


def at(code: str, message: str, source: str, node: exp.Expr | None, remedy: str | None = None) -> Violation:
    """A violation positioned at `node` (or unpositioned when the node carries no source position)."""
    where = span(node) if node is not None else None
    if where is None:
        return Violation(code, message, remedy=remedy)
    return at_offsets(code, message, source, where[0], where[1], remedy)
