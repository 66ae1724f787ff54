"""The released table: every cell with its value and how it was protected. JSON and CSV.

A cell says its mechanism and noise scale, its interval at confidence 1 - alpha, whether it was
suppressed and why, and whether it is derived (computed after protection from other noisy values); a
suppressed cell is present with value null, never dropped or zeroed. Nothing here is a true value:
every number passed through `protect` first.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr

CellValue = int | float | str | bool | None


class Cell(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: CellValue
    mechanism: str | None = None
    scale: float | None = None
    interval: tuple[float, float] | None = None
    suppressed: bool = False
    reason: str | None = None
    # computed after protection from other noisy values (a derived column: arithmetic of aggregates)
    derived: bool = False


class ReleaseColumn(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["key", "count", "count_distinct_unit", "sum", "avg", "quantile", "var_pop", "var_samp", "stddev_pop",
                  "stddev_samp", "derived"]


class Release(BaseModel):
    """A protected result as released to a researcher."""

    model_config = ConfigDict(frozen=True)

    query_id: str
    dataset: str
    data_version: str
    rules_sha256: str
    engine: str = "duckdb"  # the engine that computed the true aggregates (noise was added in the enclave)
    epsilon: float
    delta: float
    alpha: float
    suppression_threshold: int
    columns: list[ReleaseColumn]
    rows: list[list[Cell]]
    # groups that HAVING dropped, judged on their noisy values (None: the query has no HAVING)
    having_removed: int | None = None
    epsilon_remaining: float | None = None
    delta_remaining: float | None = None
    audit_seq: int | None = None
    replayed: bool = False
    # when the answer may be shown (time.monotonic()): the query's deadline, set before it ran; never sent
    _answer_at: float = PrivateAttr(default=0.0)

    @property
    def answer_at(self) -> float:
        return self._answer_at

    def held_until(self, answer_at: float) -> Release:
        """This release, to be answered no earlier than `answer_at` (a time.monotonic() value)."""
        copy = self.model_copy()
        copy._answer_at = answer_at
        return copy

    def payload(self) -> str:
        """The canonical JSON of what is released, without the per-response fields; what the log hashes."""
        body = self.model_dump(exclude={"epsilon_remaining", "delta_remaining", "audit_seq", "replayed"})
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def to_csv(self) -> str:
        """One row per group: each key, and for each statistic its value, interval and suppression."""
        out = io.StringIO()
        writer = csv.writer(out)
        header: list[str] = []
        for column in self.columns:
            if column.kind == "key":
                header.append(column.name)
            else:
                header += [column.name, f"{column.name}_lower", f"{column.name}_upper",
                           f"{column.name}_suppressed"]
        writer.writerow(header)
        for row in self.rows:
            line: list[object] = []
            for column, cell in zip(self.columns, row, strict=True):
                if column.kind == "key":
                    line.append(cell.value)
                else:
                    low, high = cell.interval or ("", "")
                    line += [cell.value if cell.value is not None else "", low, high, cell.suppressed]
            writer.writerow(line)
        return out.getvalue()
