"""Contribution bounding prepared once per analysis build, so that a query's bound is a filter.

Bounding each person's contribution per query (a window ranking every person's rows, or a hash
aggregate per person and group) cost 20-50x the aggregate it protected. The choice of rows and groups
is fixed per build anyway (repeats must see the same rows), so it is made once, when the build is
written, and stored beside the data. Every table of a build gets:

- `__pid`: an integer surrogate of the person key, the same in every table of the build. Integers hash
  and compare far faster than the VARCHAR key, and need no rowid: engines without one (Spark) read the
  same columns.
- for every set S of at most `MAX_SET` of the table's dimension columns, and for S empty: `__r<S>`, the
  row's number (1, 2, ...) among its person's rows in the person's G largest groups of S-values (largest
  first; ties: the group whose first row comes first in the keyed order), in the order of a keyed hash of
  (salt, person key, row position in the build), NULL for rows of the other groups. "At most R rows in at
  most G groups per person", for a query grouped by S or by expressions of S (whose groups are unions of
  S-groups), is `__r<S> <= R`: groups first, then rows, so a person keeps min(R, rows of their G largest
  groups), as the per-query bound did (tests/rewrite/test_bounds.py). And `__f<S>`, 1 on the first row
  of each (person, S-values) among those numbered at most R, else 0 (NULL outside the G groups), so the
  persons of a group of a query grouped by exactly S are SUM(__f<S>). <S> is the positions of S's
  columns among the table's dimension columns (`__r_0_1`); S empty is `__r` (a person's one group).

The salt is keyed by a secret of the enclave and the build (`sampling_salt`): nobody outside can predict
which rows a person keeps, and every data version of one build keeps the same ones (consent changes
make versions, not builds; consent takes or leaves a person whole, so a person's ranks do not move).
The choice reads only the person's own rows, so it is a function applied to each person separately: each
person adds at most R rows in at most G groups to any query, which is what the noise is calibrated to.

`__bounding` records what was prepared (each table's dimension columns, R and G), so a build prepared
for other bounds than its manifest's is never taken for one prepared for them (rewrite.rules).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from dataclasses import dataclass

import duckdb

from enclave.catalog.manifest import ContributionBounds, Manifest

MAX_SET = 2
BOUNDING_TABLE = "__bounding"


def is_bounding(name: str) -> bool:
    """Whether a table or column of a build is this module's (`__` names, which a query may never use)."""
    return name.startswith("__")


def sampling_salt(secret: bytes, build: str) -> int:
    """The salt of the row order of a build: keyed by an enclave secret, fixed per build."""
    digest = hmac.new(secret, f"row-order:{build}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def dimensions(manifest: Manifest, table: str) -> tuple[str, ...]:
    """A table's dimension columns, in manifest order: the positions that name its group columns."""
    return tuple(name for name, column in manifest.tables[table].columns.items() if column.role == "dimension")


def suffix(positions: tuple[int, ...]) -> str:
    """The part of a group column's name that names its set of dimension columns: `_0_1`, or '' for none."""
    return "".join(f"_{p}" for p in positions)


def sets(count: int) -> list[tuple[int, ...]]:
    """The sets of dimension positions a build prepares: the empty set, and every set of at most MAX_SET."""
    return [s for size in range(MAX_SET + 1) for s in itertools.combinations(range(count), size)]


@dataclass(frozen=True)
class Layout:
    """What a build prepared: each table's dimension columns, for the bounds it was prepared with."""

    bounds: ContributionBounds
    tables: dict[str, tuple[str, ...]]

    def group_columns(self, table: str, columns: frozenset[str]) -> str | None:
        """The suffix of the group columns of `table` for exactly `columns` (dimension columns), or None."""
        names = self.tables.get(table)
        if names is None or not columns <= set(names) or len(columns) > MAX_SET:
            return None
        return suffix(tuple(sorted(names.index(c) for c in columns)))


def layout_of(manifest: Manifest) -> Layout:
    """The layout `prepare` gives a build of this manifest."""
    return Layout(manifest.contribution_bounds, {name: dimensions(manifest, name) for name in manifest.tables})


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def prepare(con: duckdb.DuckDBPyConnection, manifest: Manifest, salt: int) -> None:
    """Add the bounding columns to every table of the build open on `con`, and record the layout.

    A person's rows are ranked once in the keyed order (`__rank`, not kept); then, for each set S, each
    (person, S-values) group is sized and ranked, largest first (ties: the group whose first row comes
    first); the rows of a person's G largest groups are numbered in rank order (`__r<S>`), and the first
    row of each group among those numbered at most R is marked (`__f<S>`). A group is named by its first
    row's rank (`__m<S>`), so no window partitions on the dimension columns after the first.
    Each table is rewritten sorted by person and rank, which also clusters a person's rows for the engine.
    Only integers, the manifest's column names (validated identifiers) and this module's names are formatted
    into the SQL.
    """
    unit = _quoted(manifest.privacy_unit)
    rows, groups = manifest.contribution_bounds.max_rows_per_unit, manifest.contribution_bounds.max_groups_per_unit
    union = " UNION ".join(f"SELECT {unit} FROM {_quoted(t)}" for t in manifest.tables)  # noqa: S608
    con.execute(f"CREATE TEMP TABLE __persons AS SELECT {unit}, CAST(row_number() OVER (ORDER BY {unit}) "  # noqa: S608
                f"AS INTEGER) AS __pid FROM ({union})")
    for table in manifest.tables:
        names = dimensions(manifest, table)
        sized, ranked, numbered, marked = [], [], [], []
        for positions in sets(len(names)):
            by = ", ".join([unit, *(_quoted(names[p]) for p in positions)])
            s = suffix(positions)
            sized.append(f"count(*) OVER (PARTITION BY {by}) AS __n{s}, min(__rank) OVER (PARTITION BY {by}) "
                         f"AS __m{s}")
            ranked.append(f"__m{s}, dense_rank() OVER (PARTITION BY {unit} ORDER BY __n{s} DESC, __m{s}) AS __g{s}")
            numbered.append(f"__m{s}, CASE WHEN __g{s} <= {int(groups)} THEN CAST(row_number() OVER (PARTITION BY "
                            f"{unit}, __g{s} <= {int(groups)} ORDER BY __rank) AS INTEGER) END AS __r{s}")
            marked.append(f"__r{s}, CAST(__r{s} = min(__r{s}) OVER (PARTITION BY {unit}, __m{s}) AND __r{s} <= "
                          f"{int(rows)} AS TINYINT) AS __f{s}")
        con.execute(f"""CREATE TABLE __prepared AS
            WITH ranked AS (
                SELECT t.*, row_number() OVER (PARTITION BY t.{unit} ORDER BY hash({int(salt)}, t.{unit}, t.rowid),
                       t.rowid) AS __rank FROM {_quoted(table)} AS t),
            sized AS (SELECT {unit}, __rank, {", ".join(sized)} FROM ranked),
            grouped AS (SELECT {unit}, __rank, {", ".join(ranked)} FROM sized),
            numbered AS (SELECT {unit}, __rank, {", ".join(numbered)} FROM grouped),
            marked AS (SELECT {unit}, __rank, {", ".join(marked)} FROM numbered)
            SELECT r.* EXCLUDE (__rank), p.__pid, m.* EXCLUDE ({unit}, __rank)
            FROM ranked AS r JOIN __persons AS p USING ({unit}) JOIN marked AS m USING ({unit}, __rank)
            ORDER BY p.__pid, r.__rank""")  # noqa: S608
        con.execute(f"DROP TABLE {_quoted(table)}")
        con.execute(f"ALTER TABLE __prepared RENAME TO {_quoted(table)}")
    con.execute("DROP TABLE __persons")
    con.execute(f"CREATE TABLE {BOUNDING_TABLE} (table_name VARCHAR, dimensions VARCHAR[], max_rows INTEGER, "
                "max_groups INTEGER)")
    con.executemany(f"INSERT INTO {BOUNDING_TABLE} VALUES (?, ?, ?, ?)", [  # noqa: S608
        [table, list(dimensions(manifest, table)), rows, groups] for table in manifest.tables])


def read_layout(con: duckdb.DuckDBPyConnection) -> Layout | None:
    """The layout a build records, or None for a build prepared by none (then no bound is a filter)."""
    found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                        "AND schema_name = 'main' AND table_name = ?", [BOUNDING_TABLE]).fetchone()
    if not found or not found[0]:
        return None
    rows = con.execute(f"SELECT table_name, dimensions, max_rows, max_groups FROM {BOUNDING_TABLE}").fetchall()  # noqa: S608
    if not rows or len({(r[2], r[3]) for r in rows}) != 1:
        return None
    bounds = ContributionBounds(max_rows_per_unit=rows[0][2], max_groups_per_unit=rows[0][3])
    return Layout(bounds, {name: tuple(dims) for name, dims, _, _ in rows})
