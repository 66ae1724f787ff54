"""What a query's names refer to: its tables (with aliases) and each column's table and manifest entry.

Resolution follows DuckDB: names are case-insensitive, a qualified column names a table or alias of the
query, an unqualified column must exist in exactly one of the query's tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from enclave.catalog.manifest import Column, Manifest


@dataclass(frozen=True)
class Source:
    """A table as the query uses it: its alias (or name) and the manifest table it refers to."""

    alias: str
    table: str
    node: exp.Table


@dataclass(frozen=True)
class Resolved:
    source: Source
    name: str
    column: Column


def sources(select: exp.Select) -> list[Source]:
    """The tables of FROM and JOIN, in order."""
    tables = []
    from_ = select.args.get("from_")
    if from_ is not None:
        tables.append(from_.this)
    tables.extend(join.this for join in select.args.get("joins") or [])
    return [
        Source((table.alias or table.name).lower(), table.name.lower(), table)
        for table in tables
        if isinstance(table, exp.Table) and isinstance(table.this, exp.Identifier)
    ]


def using_columns(select: exp.Select) -> frozenset[str]:
    """Columns named in JOIN ... USING: unqualified, each is one column (DuckDB takes the left table's)."""
    return frozenset(u.name.lower() for join in select.args.get("joins") or [] for u in join.args.get("using") or [])


def candidates(column: exp.Column, scope: list[Source], manifest: Manifest,
               using: frozenset[str] = frozenset()) -> list[Resolved]:
    """Every reading of a column reference: none (unknown), one, or several (ambiguous)."""
    name = column.name.lower()
    qualifier = column.table.lower()
    found = []
    for source in scope:
        if qualifier and source.alias != qualifier:
            continue
        entry = manifest.column(source.table, name)
        if entry is not None:
            found.append(Resolved(source, name, entry))
    if not qualifier and name in using and len(found) > 1:
        return found[:1]
    return found


def usable_columns(scope: list[Source], manifest: Manifest) -> list[str]:
    """The columns of the query's tables that may be selected, grouped or filtered (for remedies)."""
    names = []
    for source in scope:
        table = manifest.tables.get(source.table)
        if table is None:
            continue
        names += [f"{source.alias}.{n}" for n, c in table.columns.items() if c.role in ("dimension", "measure")]
    return names
