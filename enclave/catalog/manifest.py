"""Dataset manifests: what a dataset holds and how each column may be used.

A manifest is the steward's declaration of a dataset (`datasets/<name>/manifest.yaml`): its tables and
columns, which column is the privacy unit (the linked person key), each column's role, the contribution
bounds per person and the suppression threshold. The check and rewrite stages read nothing else about
the data, so a manifest is also the complete public description of a dataset.

Roles:
- `privacy_unit`: the pseudonymous person key. Never output, grouped or filtered; usable only to join
  two tables of the dataset and in COUNT(DISTINCT ...).
- `dimension`: may be output, grouped and filtered. With `keys` (its public key set) every key is
  released, zeros included. Warning: declare `keys` only for a domain that is public knowledge (school
  years, a fixed code list); keys listed here are published whether or not anyone has them.
- `measure`: may be filtered and aggregated; `bounds` are required and each value is clamped to them.
  Warning: bounds that are too wide add noise, too narrow bias the result; they must not be derived from
  the data itself.
- `restricted`: identifiers and free text; never selected, grouped, filtered or joined on.

`nullable: false` declares that every row has a value (intake refuses a delivery with an empty one). It
lets AVG(x) divide by the query's COUNT(*) instead of noising a COUNT(x) of its own (disclosure.plan).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StringConstraints, model_validator

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Role = Literal["privacy_unit", "dimension", "measure", "restricted"]
ColumnType = Literal["VARCHAR", "INTEGER", "BIGINT", "DOUBLE", "BOOLEAN", "DATE"]
Key = str | bool | int
NUMERIC_TYPES = frozenset({"INTEGER", "BIGINT", "DOUBLE"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class KeyRange(_Strict):
    """An inclusive range of integer keys, e.g. school years 2019 to 2024."""

    first: int = Field(alias="from")
    last: int = Field(alias="to")

    @model_validator(mode="after")
    def _ordered(self) -> KeyRange:
        if self.first > self.last or self.last - self.first > 10_000:
            raise ValueError("a key range needs from <= to and at most 10,000 keys")
        return self


class Column(_Strict):
    type: ColumnType
    role: Role
    description: str = ""
    keys: list[Key] | KeyRange | None = Field(
        default=None, description="Public key set of a dimension; every key is released, zeros included."
    )
    bounds: tuple[float, float] | None = Field(
        default=None, description="Clamping bounds [lower, upper]; required for a measure."
    )
    nullable: bool = Field(
        default=True, description="false: every row has a value, and a delivery with an empty one is refused."
    )

    @model_validator(mode="after")
    def _role_fits(self) -> Column:
        if self.keys is not None and self.role != "dimension":
            raise ValueError("only a dimension may declare public keys")
        if self.role == "measure" and self.bounds is None:
            raise ValueError("a measure needs bounds")
        if self.bounds is not None:
            if self.type not in NUMERIC_TYPES:
                raise ValueError("bounds need a numeric column")
            if self.bounds[0] > self.bounds[1]:
                raise ValueError("bounds must be [lower, upper] with lower <= upper")
        expected = {"BOOLEAN": bool, "INTEGER": int, "BIGINT": int}.get(self.type, str)
        keys = self.keys if isinstance(self.keys, list) else []
        if isinstance(self.keys, KeyRange) and expected is not int:
            raise ValueError("a key range needs an integer column")
        if any(type(key) is not expected for key in keys):
            raise ValueError(f"every key of a {self.type} column must be a {expected.__name__}")
        if len(set(keys)) != len(keys):
            raise ValueError("keys must be distinct")
        return self

    @property
    def public_keys(self) -> tuple[Key, ...] | None:
        if isinstance(self.keys, KeyRange):
            return tuple(range(self.keys.first, self.keys.last + 1))
        return tuple(self.keys) if self.keys is not None else None

    @property
    def value_bounds(self) -> tuple[float, float] | None:
        """Bounds a value of this column lies in, from `bounds` or from integer public keys."""
        if self.bounds is not None:
            return self.bounds
        if self.type in NUMERIC_TYPES and self.public_keys:
            return (min(self.public_keys), max(self.public_keys))  # type: ignore[type-var]
        return None


class Table(_Strict):
    contributor: Name
    description: str = ""
    columns: dict[Name, Column] = Field(min_length=1)


class Contributor(_Strict):
    name: str
    description: str = ""


class ContributionBounds(_Strict):
    """How much one person may contribute to one query; the rewrite stage enforces both bounds."""

    max_rows_per_unit: PositiveInt = Field(description="Rows of one person a query may use.")
    max_groups_per_unit: PositiveInt = Field(description="Groups one person may contribute to.")


PERSON_DERIVED = {"birth_year": "INTEGER", "gender": "VARCHAR"}


class Intake(_Strict):
    """How the dataset is built from contributors' deliveries (see enclave.intake).

    The person table holds one row per linked person: its privacy unit, `birth_year` and `gender` when
    declared (derived from the linked rosters), and the `person_attributes`, which rosters may carry and
    which are taken from the first contributor (in manifest order) that gives one.
    """

    person_table: Name = Field(description="The table with one row per linked person.")
    birth_dates: tuple[dt.date, dt.date] = Field(description="Range every roster birth date must lie in.")
    genders: list[str] = Field(default=["F", "M", "X"], min_length=1, description="Allowed roster gender codes.")
    person_attributes: list[Name] = Field(default=[], description="Person-table columns rosters may carry.")
    link_threshold: float = Field(default=0.5, gt=0, lt=1, description="Match probability at or above which "
                                  "two roster rows are the same person; the steward may set another per run.")


class Manifest(_Strict):
    """A dataset: its tables, the privacy unit, column roles, contribution bounds and suppression."""

    name: Name
    title: str
    description: str = ""
    privacy_unit: Name = Field(description="The column, present in every table, that identifies a person.")
    contributors: dict[Name, Contributor] = Field(min_length=1)
    contribution_bounds: ContributionBounds
    suppression_threshold: int | None = Field(
        default=None, description="Raises the rules' threshold for this dataset; it can never lower it."
    )
    consent_required: bool = Field(default=False, description="Every query sees only persons whose consent "
                                   "for the grant's purpose is valid when it runs.")
    intake: Intake | None = Field(default=None, description="Built from contributors' deliveries by linkage.")
    template_approvals: int = Field(default=1, ge=1, le=2, description="Reviewers (not the proposer) a "
                                    "template of this dataset needs before it can run.")
    tables: dict[Name, Table] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for table_name, table in self.tables.items():
            if table.contributor not in self.contributors:
                raise ValueError(f"table {table_name}: unknown contributor {table.contributor!r}")
            unit = table.columns.get(self.privacy_unit)
            if unit is None or unit.role != "privacy_unit":
                raise ValueError(f"table {table_name}: needs column {self.privacy_unit} as the privacy_unit")
            others = [name for name, c in table.columns.items() if c.role == "privacy_unit"]
            if others != [self.privacy_unit]:
                raise ValueError(f"table {table_name}: only {self.privacy_unit} may be the privacy_unit")
        if self.intake is not None:
            self._intake_fits(self.intake)
        return self

    def _intake_fits(self, intake: Intake) -> None:
        person = self.tables.get(intake.person_table)
        if person is None:
            raise ValueError(f"intake: unknown person_table {intake.person_table!r}")
        for name in intake.person_attributes:
            if name not in person.columns or name in PERSON_DERIVED or name == self.privacy_unit:
                raise ValueError(f"intake: person attribute {name!r} must be another column of {intake.person_table}")
        for name, column in person.columns.items():
            derived = PERSON_DERIVED.get(name)
            if name != self.privacy_unit and name not in intake.person_attributes and derived != column.type:
                raise ValueError(f"intake: {intake.person_table}.{name} is neither a person attribute nor derived "
                                 f"({', '.join(f'{k} {v}' for k, v in PERSON_DERIVED.items())})")
        if intake.birth_dates[0] > intake.birth_dates[1]:
            raise ValueError("intake: birth_dates must be [first, last]")

    def column(self, table: str, column: str) -> Column | None:
        found = self.tables.get(table)
        return found.columns.get(column) if found else None


def load_manifest(path: Path) -> Manifest:
    return Manifest.model_validate(yaml.safe_load(path.read_text()))
