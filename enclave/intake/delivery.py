"""Contributor deliveries: read a roster or records file and validate it against the dataset manifest.

A delivery is what one contributor sends at one time: its roster (local_id, last_name, first_name,
birth_date, gender, and any person attributes the manifest asks of rosters) and its program records for
the tables it contributes, each keyed by local_id. Files are CSV (UTF-8, a header row) or Parquet.

Every value is first read as text with its file row number, then checked column by column in DuckDB,
so an error names the file, the row and the column. Values are never echoed: the steward has the file,
and error messages travel into logs. A delivery is all or nothing: nothing is loaded unless every file
of it is valid (see identity.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from enclave.catalog.manifest import Column, Manifest

ROSTER = "roster"
IDENTITY_COLUMNS = ("local_id", "last_name", "first_name", "birth_date", "gender")
MAX_PROBLEMS = 50
MAX_TEXT = 200

# code -> meaning; README.md documents each (a test checks it).
DELIVERY_CODES: dict[str, str] = {
    "unknown_contributor": "The contributor is not one of the dataset's contributors.",
    "unknown_kind": "The file is neither the roster nor a table this contributor delivers.",
    "duplicate_file": "The delivery has two files of the same kind.",
    "no_roster": "Records arrived for a contributor that has no roster yet: deliver the roster with them.",
    "unsupported_format": "The file is neither CSV nor Parquet.",
    "checksum_mismatch": "The file's SHA-256 is not the one the contributor declared: it changed in transit.",
    "encoding_error": "The file is not UTF-8 at the given row.",
    "malformed_row": "A CSV row has a different number of fields than the header (a truncated file, often).",
    "unreadable_file": "The file cannot be read as the format it claims (a truncated or corrupt Parquet file).",
    "empty_file": "The file has no header or no rows.",
    "missing_column": "A required column is missing from the header.",
    "unknown_column": "The header has a column the manifest does not declare for this file.",
    "duplicate_column": "The header names a column twice.",
    "missing_value": "A required value is empty.",
    "bad_value": "A value is not of the column's type (an integer, a YYYY-MM-DD date, true or false).",
    "value_not_allowed": "A value is not one of the column's allowed values.",
    "out_of_range": "A date lies outside the range the manifest allows.",
    "duplicate_local_id": "A local ID appears twice in one file where it must be unique.",
    "unknown_local_id": "A record's local ID is not in the contributor's roster.",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a delivery: where it is (file, row, column) and what, never the value."""

    code: str
    file: str
    message: str
    row: int | None = None
    column: str | None = None


class DeliveryRefused(Exception):
    """A delivery with problems: nothing of it was loaded."""

    def __init__(self, problems: list[Problem], total: int | None = None) -> None:
        self.problems = problems[:MAX_PROBLEMS]
        self.total = total if total is not None else len(problems)
        first = problems[0]
        super().__init__(f"{self.total} problem(s); first: {first.file}: {first.message}")


@dataclass(frozen=True)
class DeliveryFile:
    """One file as it arrived: what it holds (`roster` or a table name), its name, format and bytes."""

    kind: str
    name: str
    content: bytes
    format: Literal["csv", "parquet"] | None = None
    sha256: str | None = None  # as declared by the contributor, when it declares one

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def file_format(self) -> str | None:
        if self.format:
            return self.format
        lower = self.name.lower()
        return "csv" if lower.endswith(".csv") else "parquet" if lower.endswith(".parquet") else None


@dataclass(frozen=True)
class FileSpec:
    """What a file of one kind must hold: column -> (manifest column, required)."""

    kind: str
    columns: dict[str, tuple[Column, bool]]
    birth_dates: tuple[str, str] | None = None
    unique_local_id: bool = False


@dataclass
class Staged:
    """A validated file, loaded as text into a temp table of the intake connection."""

    file: DeliveryFile
    table: str
    rows: int
    columns: tuple[str, ...] = field(default_factory=tuple)


def _text(name: str) -> Column:
    return Column(type="VARCHAR", role="restricted", description=name)


def file_specs(manifest: Manifest, contributor: str) -> dict[str, FileSpec]:
    """The files a contributor may deliver: its roster and the tables it contributes."""
    intake = manifest.intake
    if intake is None:
        return {}
    genders = Column(type="VARCHAR", role="dimension", keys=list(intake.genders))
    roster: dict[str, tuple[Column, bool]] = {
        "local_id": (_text("local_id"), True), "last_name": (_text("last_name"), True),
        "first_name": (_text("first_name"), True), "birth_date": (Column(type="DATE", role="restricted"), True),
        "gender": (genders, False),
    }
    person = manifest.tables[intake.person_table]
    for attribute in intake.person_attributes:
        roster[attribute] = (person.columns[attribute], False)
    specs = {ROSTER: FileSpec(ROSTER, roster, (str(intake.birth_dates[0]), str(intake.birth_dates[1])), True)}
    for name, table in manifest.tables.items():
        if table.contributor != contributor or name == intake.person_table:
            continue
        columns: dict[str, tuple[Column, bool]] = {"local_id": (_text("local_id"), True)}
        for column, spec in table.columns.items():
            if column != manifest.privacy_unit:
                columns[column] = (spec, not spec.nullable)
        specs[name] = FileSpec(name, columns)
    return specs


def consent_spec() -> FileSpec:
    """A contributor's consent file: one statement per row (action give, the default, or revoke)."""
    return FileSpec("consent", {
        "local_id": (_text("local_id"), True), "purpose": (_text("purpose"), True),
        "action": (Column(type="VARCHAR", role="dimension", keys=["give", "revoke"]), False),
        "given": (Column(type="DATE", role="restricted"), False),
        "expires": (Column(type="DATE", role="restricted"), False),
    })


def _read_csv(file: DeliveryFile) -> tuple[list[str], list[list[str]]]:
    try:
        text = file.content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        row = file.content[: error.start].count(b"\n") + 1
        raise DeliveryRefused([Problem("encoding_error", file.name, f"row {row} is not valid UTF-8", row)]) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header:
            raise DeliveryRefused([Problem("empty_file", file.name, "the file has no header row")])
        rows, problems = [], []
        for values in reader:
            if len(values) != len(header):
                problems.append(Problem("malformed_row", file.name, f"row {reader.line_num} has {len(values)} "
                                        f"field(s); the header has {len(header)}", reader.line_num))
            elif len(problems) == 0:
                rows.append(values)
    except csv.Error:
        raise DeliveryRefused([Problem("malformed_row", file.name, f"row {reader.line_num} is not valid CSV "
                                       "(an unclosed quote: the file may be truncated)", reader.line_num)]) from None
    if problems:
        raise DeliveryRefused(problems)
    return [h.strip() for h in header], rows


def _read_parquet(file: DeliveryFile) -> tuple[list[str], list[list[str]]]:
    try:
        table = pq.read_table(pa.BufferReader(file.content))
    except (pa.ArrowException, OSError):
        raise DeliveryRefused([Problem("unreadable_file", file.name, "the file is not a readable Parquet file "
                                       "(truncated or corrupt)")]) from None
    columns = []
    for column in table.columns:
        values = column.to_pylist()
        columns.append(["" if v is None else (str(v).lower() if isinstance(v, bool) else str(v)) for v in values])
    return table.column_names, [list(row) for row in zip(*columns, strict=True)]


def read(file: DeliveryFile) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a file, every value as text ('' for missing)."""
    if file.sha256 and file.sha256.lower() != file.digest:
        raise DeliveryRefused([Problem("checksum_mismatch", file.name, "the file's SHA-256 does not match the "
                                       "declared one")])
    fmt = file.file_format
    if fmt == "csv":
        header, rows = _read_csv(file)
    elif fmt == "parquet":
        header, rows = _read_parquet(file)
    else:
        raise DeliveryRefused([Problem("unsupported_format", file.name, "name the file .csv or .parquet")])
    if not rows:
        raise DeliveryRefused([Problem("empty_file", file.name, "the file has no rows")])
    return header, rows


def _header_problems(file: DeliveryFile, header: list[str], spec: FileSpec) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.append(Problem("duplicate_column", file.name, f"column {name!r} appears twice", 1, name))
        seen.add(name)
        if name not in spec.columns:
            problems.append(Problem("unknown_column", file.name, f"column {name!r} is not expected in a "
                                    f"{spec.kind} file; expected: {', '.join(spec.columns)}", 1, name))
    for name, (_, required) in spec.columns.items():
        if required and name not in seen:
            problems.append(Problem("missing_column", file.name, f"required column {name!r} is missing", 1, name))
    return problems


def _type_check(column: str, spec: Column) -> tuple[str, str] | None:
    """SQL true when the text value `v` is NOT of the column's type, and the expectation in words."""
    if spec.type in ("INTEGER", "BIGINT"):
        limit = 2**31 - 1 if spec.type == "INTEGER" else 2**63 - 1
        return (f"NOT regexp_full_match(v, '-?[0-9]{{1,19}}') OR TRY_CAST(v AS HUGEINT) NOT BETWEEN "
                f"{-limit - 1} AND {limit}", "an integer")
    if spec.type == "DOUBLE":
        return "TRY_CAST(v AS DOUBLE) IS NULL OR NOT isfinite(TRY_CAST(v AS DOUBLE))", "a finite number"
    if spec.type == "BOOLEAN":
        return "lower(v) NOT IN ('true', 'false')", "true or false"
    if spec.type == "DATE":
        return ("NOT regexp_full_match(v, '[0-9]{4}-[0-9]{2}-[0-9]{2}') OR TRY_CAST(v AS DATE) IS NULL",
                "a date as YYYY-MM-DD")
    return f"length(v) > {MAX_TEXT}", f"text of at most {MAX_TEXT} characters"


def _literal(value: object) -> str:
    return "'" + str(value).lower().replace("'", "''") + "'" if isinstance(value, bool) else (
        "'" + str(value).replace("'", "''") + "'")


def _value_checks(spec: FileSpec, column: str) -> list[tuple[str, str, str]]:
    """(code, SQL true when the non-empty text value `v` is wrong, message) for one column."""
    manifest_column, _ = spec.columns[column]
    checks = []
    typed = _type_check(column, manifest_column)
    if typed:
        checks.append(("bad_value", typed[0], f"is not {typed[1]}"))
    keys = manifest_column.public_keys
    if keys is not None:
        keys_sql = ", ".join(_literal(k) for k in keys)
        value = "lower(v)" if manifest_column.type == "BOOLEAN" else (
            "TRY_CAST(v AS BIGINT)::VARCHAR" if manifest_column.type in ("INTEGER", "BIGINT") else "v")
        shown = ", ".join(str(k) for k in keys[:12]) + (", ..." if len(keys) > 12 else "")
        checks.append(("value_not_allowed", f"{value} NOT IN ({keys_sql})", f"is not one of the allowed values "
                       f"({shown})"))
    if column == "birth_date" and spec.birth_dates:
        low, high = spec.birth_dates
        checks.append(("out_of_range", f"TRY_CAST(v AS DATE) NOT BETWEEN DATE '{low}' AND DATE '{high}'",
                       f"is outside {low} to {high}"))
    return checks


def stage(con: duckdb.DuckDBPyConnection, file: DeliveryFile, spec: FileSpec, table: str) -> Staged:
    """Read and validate one file into a temp table of text columns plus `_row`; raise if anything is wrong."""
    header, rows = read(file)
    problems = _header_problems(file, header, spec)
    if problems:
        raise DeliveryRefused(problems)
    first_row = 2 if file.file_format == "csv" else 1
    columns = list(zip(*rows, strict=True))
    select = ", ".join(f'unnest(?) AS "{name}"' for name in header)
    con.execute(f'CREATE OR REPLACE TEMP TABLE "{table}" AS SELECT {first_row} - 1 + '
                f'row_number() OVER () AS _row, * FROM (SELECT {select})', [list(c) for c in columns])
    for name in header:  # '' is missing
        con.execute(f'UPDATE "{table}" SET "{name}" = NULL WHERE trim("{name}") = \'\'')
    found: list[Problem] = []
    total = 0
    for name in header:
        _, required = spec.columns[name]
        checks = [("missing_value", "v IS NULL", "is empty")] if required else []
        for code, condition, message in [*checks, *_value_checks(spec, name)]:
            where = condition if code == "missing_value" else f"v IS NOT NULL AND ({condition})"
            query = f'SELECT _row FROM (SELECT _row, "{name}" AS v FROM "{table}") WHERE {where} ORDER BY _row'
            bad = [r for (r,) in con.execute(query).fetchall()]
            total += len(bad)
            found.extend(Problem(code, file.name, f"row {r}, column {name}: the value {message}", r, name)
                         for r in bad[:MAX_PROBLEMS])
    if spec.unique_local_id:
        duplicates = con.execute(f'SELECT _row FROM (SELECT _row, count(*) OVER (PARTITION BY local_id) AS n, '
                                 f'row_number() OVER (PARTITION BY local_id ORDER BY _row) AS k FROM "{table}") '
                                 f'WHERE n > 1 AND k > 1 ORDER BY _row').fetchall()
        total += len(duplicates)
        found.extend(Problem("duplicate_local_id", file.name, f"row {r}, column local_id: the local ID "
                             "already appears on an earlier row", r, "local_id") for (r,) in duplicates[:MAX_PROBLEMS])
    if found:
        found.sort(key=lambda p: (p.row or 0, p.column or ""))
        raise DeliveryRefused(found, total)
    return Staged(file, table, len(rows), tuple(header))
