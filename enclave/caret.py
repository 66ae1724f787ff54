"""A check violation in words, as sqlglot shows a parse error: the rule, its line, carets, the remedy.

Standard library only: the server's check (`enclave.check.violations`) and the researcher's client
(`enclave.client`, which imports nothing of the server side) both render violations through this one
function, so `enclave check` in process and a client's `QueryRejected` print the same text.
"""

from __future__ import annotations


def render(code: str, message: str, line: int | None, col: int | None, highlight: str, remedy: str | None,
           sql: str) -> str:
    """The rule and message, then (when the position falls in `sql`) its line with a caret under each
    character of the offending token's first line, then the remedy."""
    text = [f"{code}: " + (f"line {line}, col {col}: " if line else "") + message]
    lines = sql.splitlines()  # the check counts lines as str.splitlines() does
    if line and col and 1 <= line <= len(lines):
        quoted = lines[line - 1]
        token = next(iter(highlight.splitlines()), "")
        carets = max(1, min(len(token), len(quoted) - col + 1))
        text += [f"    {quoted}", f"    {' ' * (col - 1)}{'^' * carets}"]
    if remedy:
        text.append(f"    remedy: {remedy}")
    return "\n".join(text)
