"""Parse untrusted SQL into exactly one sqlglot tree, within bounds, never crashing.

Hostile input is stopped before the parser sees it where possible: the text length, the token count and
the nesting depth (brackets, CASE ... END, runs of prefix operators) are measured on the token stream,
which sqlglot produces without recursion. Only then does the recursive parser run, with a node budget,
and anything it still raises (including RecursionError) becomes a clean rejection.
"""

from __future__ import annotations

import re

from sqlglot import Dialect, exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from enclave.check.violations import Violation, at_offsets
from enclave.policy.rules import Limits

DIALECT = Dialect.get_or_raise("duckdb")
_OPEN = {TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE}
_CLOSE = {TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END}
_PREFIX = {TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE}


def _too_deep(tokens: list[Token], limit: int) -> Token | None:
    depth = prefix_run = 0
    for token in tokens:
        if token.token_type in _OPEN:
            depth += 1
        elif token.token_type in _CLOSE:
            depth = max(0, depth - 1)
        prefix_run = prefix_run + 1 if token.token_type in _PREFIX else 0
        if depth > limit or prefix_run > limit:
            return token
    return None


def _size(node: exp.Expr) -> tuple[int, int]:
    """The number of nodes of a tree and its depth, in one walk without recursion."""
    count = deepest = 0
    pending = [(node, 1)]
    while pending:
        current, depth = pending.pop()
        count += 1
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in current.iter_expressions())
    return count, deepest


def _at_token(code: str, message: str, source: str, token: Token) -> Violation:
    return at_offsets(code, message, source, token.start, token.end)


def parse(source: str, limits: Limits) -> tuple[exp.Expr | None, list[Violation]]:
    """One statement's tree, or the violations that stopped it."""
    if len(source) > limits.max_sql_chars:
        return None, [Violation("sql_too_long", f"The SQL is {len(source)} characters long; the limit is "
                                f"{limits.max_sql_chars}.", remedy="shorten the query")]
    try:
        tokens = DIALECT.tokenize(source)
    except TokenError as error:
        return None, [Violation("syntax_error", f"The SQL could not be read: {str(error)[:120]}")]
    if len(tokens) > limits.max_tokens:
        return None, [Violation("sql_too_long", f"The SQL has {len(tokens)} tokens; the limit is "
                                f"{limits.max_tokens}.", remedy="shorten the query")]
    if not tokens:
        return None, [Violation("empty_query", "There is no SQL statement.")]
    deep = _too_deep(tokens, limits.max_depth)
    if deep is not None:
        return None, [_at_token("sql_too_deep", f"Nesting deeper than {limits.max_depth} levels.", source,
                                deep)]
    parser = DIALECT.parser(max_nodes=limits.max_nodes)
    try:
        statements = [s for s in parser.parse(tokens, source) if s is not None]
    except ParseError as error:
        return None, [_parse_violation(error, source, tokens, limits)]
    except RecursionError:
        return None, [Violation("sql_too_deep", "The SQL is nested too deeply to parse.")]
    except Exception:  # any other parser failure is a refusal, never a crash
        return None, [Violation("syntax_error", "The SQL could not be parsed.")]
    if not statements:
        return None, [Violation("empty_query", "There is no SQL statement.")]
    if len(statements) > 1:
        second = _second_statement(tokens)
        message = "Only one statement is accepted; found another after a semicolon."
        if second is None:
            return None, [Violation("multiple_statements", message)]
        return None, [_at_token("multiple_statements", message, source, second)]
    tree = statements[0]
    nodes, depth = _size(tree)
    if nodes > limits.max_nodes:  # sqlglot's own budget does not count every node
        return None, [Violation("sql_too_complex", f"The query has more than {limits.max_nodes} parts.",
                                remedy="simplify the query")]
    if depth > 4 * limits.max_depth:
        return None, [Violation("sql_too_deep", "The parsed query is nested too deeply.")]
    return tree, []


def _second_statement(tokens: list[Token]) -> Token | None:
    for index, token in enumerate(tokens):
        if token.token_type == TokenType.SEMICOLON and index + 1 < len(tokens):
            return tokens[index + 1]
    return None


def _parse_violation(error: ParseError, source: str, tokens: list[Token], limits: Limits) -> Violation:
    detail = error.errors[0] if error.errors else {}
    # sqlglot describes tokens by their repr; keep only the token's own text
    description = re.sub(r"<Token token_type: [^,]+, text: (.*?), line: .*?>", r"'\1'",
                         str(detail.get("description") or "Invalid SQL"))
    if "nodes" in description.lower() and "max" in description.lower():
        return Violation("sql_too_complex", f"The query has more than {limits.max_nodes} parts.",
                         remedy="simplify the query")
    # sqlglot counts lines its own way; find its token and position it by its offsets instead
    line, col = detail.get("line"), detail.get("col")
    token = next((t for t in tokens if t.line == line and t.col == col), None)
    message = f"Syntax error: {description[:120]}"
    if token is None:
        return Violation("syntax_error", message)
    return at_offsets("syntax_error", message, source, token.start, token.end)
