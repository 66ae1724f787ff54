"""A release as pandas DataFrames, in nullable dtypes so that a missing value is `pd.NA`, never a number.

A suppressed cell must not read as 0 or as a float NaN that arithmetic silently skips or propagates:
`Int64`, `Float64`, `boolean` and `string` hold `pd.NA`, which refuses to compare and says what it is.
Imported only when a frame is asked for, so the client's other uses (the `enclave` command) never load
pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from enclave.client.models import Cell, Result

# the dtype of a column with no value at all (every cell suppressed), by the kind of output
_EMPTY_DTYPE = {"key": "string", "count": "Int64", "count_distinct_unit": "Int64"}


def _dtype(values: list[object], kind: str) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return _EMPTY_DTYPE.get(kind, "Float64")
    if all(isinstance(v, bool) for v in present):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "Int64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "Float64"
    return "string"


def _series(values: list[object], dtype: str) -> pd.Series:
    return pd.Series([pd.NA if v is None else v for v in values], dtype=dtype)


def _shown(cell: Cell) -> object:
    return None if cell.suppressed else cell.value


def _keys(result: Result) -> dict[str, pd.Series]:
    keyed = [(i, c) for i, c in enumerate(result.columns) if c.is_key]
    return {c.name: _series(values := [row[i].value for row in result.rows], _dtype(values, "key")) for i, c in keyed}


def values_frame(result: Result) -> pd.DataFrame:
    data = {}
    for i, column in enumerate(result.columns):
        values = [_shown(row[i]) for row in result.rows]
        data[column.name] = _series(values, _dtype(values, column.kind))
    return pd.DataFrame(data)


def _bound(cell: Cell, side: int) -> float | None:
    return None if cell.suppressed or cell.interval is None else float(cell.interval[side])


def intervals_frame(result: Result) -> pd.DataFrame:
    data = _keys(result)
    for i, column in enumerate(result.columns):
        if not column.is_key:
            for side, suffix in enumerate(("lower", "upper")):
                data[f"{column.name}_{suffix}"] = _series([_bound(row[i], side) for row in result.rows], "Float64")
    return pd.DataFrame(data)


def protection_frame(result: Result) -> pd.DataFrame:
    keys = [(i, c.name) for i, c in enumerate(result.columns) if c.is_key]
    records: list[dict[str, object]] = []
    for row in result.rows:
        for i, column in enumerate(result.columns):
            if column.is_key:
                continue
            cell = row[i]
            records.append({**{name: row[k].value for k, name in keys}, "column": column.name,
                            "mechanism": cell.mechanism, "scale": cell.scale, "lower": _bound(cell, 0),
                            "upper": _bound(cell, 1), "suppressed": cell.suppressed, "reason": cell.reason})
    names = [name for _, name in keys]
    dtypes = {"column": "string", "mechanism": "string", "scale": "Float64", "lower": "Float64", "upper": "Float64",
              "suppressed": "boolean", "reason": "string"}
    data = {name: _series(values := [r[name] for r in records], _dtype(values, "key")) for name in names}
    data.update({name: _series([r[name] for r in records], dtype) for name, dtype in dtypes.items()})
    return pd.DataFrame(data)
