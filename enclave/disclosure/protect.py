"""protect: true aggregates in, released cells out. Noise, then suppression, then rounding.

1. Groups: with public keys, every combination of them, NULL included (a group nobody is in counts
   zero); otherwise the groups whose noisy count of persons passes OpenDP's threshold. A NULL key is a
   key like any other (released as null: JSON null, an empty CSV field). A value outside a public key
   set (which a manifest that is right never lets happen) is never released.
2. Noise: each quantity of the plan, as one vector over those groups, through its OpenDP measurement.
3. Suppression: a group whose noisy count of persons is below the threshold has every statistic
   suppressed (value null, reason given); its keys stay, so nothing disappears silently.
4. Post-processing: means are the bounds' midpoint plus the noisy centred sum over the noisy count,
   clamped to the measure's bounds; counts are integers; other values are rounded. A count's or sum's
   interval is OpenDP's accuracy of its noise; a mean's comes from replicates of its noisy quantities
   (disclosure.intervals). None of this touches the true values again.
5. Post-processing SQL (disclosure.derived), on those noisy values only: a derived column is its
   expression of the noisy aggregates (hidden ones included), its interval the same expression over
   their replicates; HAVING drops the groups whose noisy values fail it (a suppressed group's values are
   no values to it), before ORDER BY and LIMIT, and the release says how many it dropped.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import NamedTuple

import numpy as np

from enclave.check.query import AggregateColumn, DerivedColumn, KeyColumn, column_kind
from enclave.disclosure import intervals, noise, statistics
from enclave.disclosure.derived import evaluate, keep
from enclave.disclosure.keys import KeyValue
from enclave.disclosure.plan import PrivacyPlan, Quantity
from enclave.disclosure.release import Cell, CellValue, ReleaseColumn
from enclave.execute.sandbox import RawResult
from enclave.rewrite import RewrittenQuery
from enclave.rewrite.rules import UNITS

DIGITS = 2
NO_INTERVAL = "no interval: too many of its replicates have a noisy count too small for an estimate"


def _groups(plan: PrivacyPlan, units: dict[tuple, int]) -> tuple[list[tuple[KeyValue, ...]], dict[tuple, int] | None]:
    """The groups to release, and (for threshold selection) their already noisy counts of persons."""
    if plan.groups is not None:
        return list(plan.groups), None
    quantity = plan.quantity(UNITS)
    measurement = noise.threshold_measurement(quantity.scale, plan.selection_threshold)
    encoded = {json.dumps(list(key), default=str): count for key, count in units.items()}
    kept = measurement(encoded)
    by_code = {json.dumps(list(key), default=str): key for key in units}
    groups = sorted((by_code[code] for code in kept), key=lambda key: json.dumps(list(key), default=str))
    return groups, {key: int(kept[json.dumps(list(key), default=str)]) for key in groups}


LIMIT = 2**62


def _units(value: object, unit: int) -> int:
    """A true count or exact decimal sum as the integer the noise is added to (exact: no float).

    Clipped to the 64-bit range OpenDP works in; clipping moves two values no further apart, so it
    cannot raise the sensitivity.
    """
    units = int(Decimal(value) * unit) if value is not None else 0  # type: ignore[arg-type]
    return max(-LIMIT, min(LIMIT, units))


def _outward(low: float, high: float, digits: int) -> tuple[float, float]:
    """An interval rounded to `digits` decimals away from its middle, so rounding never makes it miss."""
    scale = 10.0**digits
    return (math.floor(round(low * scale, 6)) / scale, math.ceil(round(high * scale, 6)) / scale)


def decimals(half_width: float) -> int:
    """Decimals to show a value of this precision with: at least DIGITS, and enough that rounding moves it
    by at most a hundredth of its interval's half-width (a rate of ±0.004 keeps five)."""
    if not math.isfinite(half_width) or half_width <= 0:
        return DIGITS
    return max(DIGITS, 2 - math.floor(math.log10(half_width)))


def _interval(value: float, half_width: float) -> tuple[float, float]:
    return _outward(value - half_width, value + half_width, decimals(half_width))


class Protected(NamedTuple):
    """What protect releases: the columns, the rows, and how many groups HAVING dropped (None without
    HAVING), a count of noisy values only."""

    columns: list[ReleaseColumn]
    rows: list[list[Cell]]
    having_removed: int | None = None


def protect(raw: RawResult, rewritten: RewrittenQuery, plan: PrivacyPlan) -> Protected:
    """The released columns and rows of one executed query."""
    query = rewritten.checked
    width = len(query.keys)
    units_column = raw.columns.index(plan.sources[UNITS])
    groups, selected = _groups(plan, {tuple(row[:width]): int(row[units_column] or 0) for row in raw.rows})

    noisy: dict[str, np.ndarray] = {}
    for quantity in plan.quantities:
        if selected is not None and quantity.mechanism == "laplace_threshold":
            noisy[quantity.column] = np.array([selected[group] for group in groups], dtype=np.int64)
            continue
        vector = true_vector(raw, width, quantity, groups)
        noisy[quantity.column] = np.array(noise.vector_laplace(quantity.noise_scale)(vector) if vector else [],
                                          dtype=np.int64)
    del raw  # from here on only noisy values are read: the released ones, and replicates of them
    bins = max([len(q.edges) - 1 for q in plan.quantities if q.edges] or [1])
    # replicates only where an interval is simulated: a count's or sum's is OpenDP's accuracy
    simulates = bool(query.derived) or any(c.function in statistics.SIMULATED for c in query.aggregates)
    draws = intervals.draws_for(len(groups) * bins) if simulates else 0
    released = {q.column: _shaped(noisy[q.column], q, len(groups)) / q.unit for q in plan.quantities}
    replicated = {q.column: _shaped(intervals.replicates(noisy[q.column], q.noise_scale, draws), q, len(groups))
                  / q.unit for q in plan.quantities}
    values = {c.name: statistics.estimate(c, plan, released) for c in query.aggregates}
    unclamped = {c.name: (statistics.estimate(c, plan, released, clamp=False),
                          statistics.estimate(c, plan, replicated, clamp=False)) for c in query.aggregates}

    persons = released[plan.sources[UNITS]]
    suppressed = persons < plan.suppression_threshold
    counts = frozenset(c.name for c in query.aggregates if c.function in ("count", "count_distinct_unit"))
    # Post-processing SQL sees the released values (a suppressed group's are none, as for the researcher)
    # and, for a derived column's interval, the same statistics of the replicates.
    shown = {name: np.where(suppressed, np.nan, value) for name, value in values.items()}
    simulated = {c.name: statistics.estimate(c, plan, replicated) for c in query.aggregates} if query.derived else {}
    derived = {c.name: (evaluate(c.expr, shown, counts), evaluate(c.expr, simulated, counts)) for c in query.derived}
    rows = [[_key_cell(column, group, plan, query.keys) if isinstance(column, KeyColumn) else
             _derived_cell(column, position, bool(suppressed[position]), plan, *derived[column.name])
             if isinstance(column, DerivedColumn) else
             _cell(column, position, bool(suppressed[position]), plan, values[column.name], *unclamped[column.name])
             for column in query.columns] for position, group in enumerate(groups)]
    removed = None
    if query.having is not None:
        keys = {k.name: _objects([group[i] for group in groups]) for i, k in enumerate(query.keys)}
        kept = keep(query.having, shown, keys, counts) if groups else np.zeros(0, dtype=bool)
        rows = [row for row, stays in zip(rows, kept, strict=True) if stays]
        removed = int(len(kept) - kept.sum())
    columns = [ReleaseColumn(name=c.name, kind=column_kind(c)) for c in query.columns]  # type: ignore[arg-type]
    ordered = _ordered(rows, query.order)
    end = None if query.limit is None else query.offset + query.limit
    return Protected(columns, ordered[query.offset:end], removed)  # LIMIT and OFFSET trim the noisy, ordered table


def _objects(items: list[KeyValue]) -> np.ndarray:
    """A group key's values as a 1-D numpy array of Python objects (text, numbers, dates, None) as they are."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def true_vector(raw: RawResult, width: int, quantity: Quantity, groups: list[tuple[KeyValue, ...]]) -> list[int]:
    """A quantity's true values over the groups (keys: the first `width` columns of `raw`), as the
    integers its noise is added to; a group without a row is zero. Read by protect alone (and by the
    exact-value tests, which compute each statistic from it without noise)."""
    column = raw.columns.index(quantity.column)
    rows = {tuple(row[:width]): row[column] for row in raw.rows}
    return [v for group in groups for v in _vector(rows.get(group), quantity)]


def _vector(value: object, quantity: Quantity) -> list[int]:
    """One group's true value as the integers its noise is added to: one, or a histogram's count per bin."""
    if not quantity.edges:
        return [_units(value, quantity.unit)]
    counts = value if isinstance(value, dict) else {}
    return [_units(counts.get(b), 1) for b in range(len(quantity.edges) - 1)]


def _shaped(vector: np.ndarray, quantity: Quantity, groups: int) -> np.ndarray:
    """A noised vector (or replicates of it) with a histogram's bins on a last axis of their own."""
    return vector.reshape(*vector.shape[:-1], groups, len(quantity.edges) - 1) if quantity.edges else vector


def _key_cell(column: KeyColumn, group: tuple, plan: PrivacyPlan, keys: tuple[KeyColumn, ...]) -> Cell:
    return Cell(value=group[keys.index(column)], mechanism=None if plan.groups is not None else "laplace_threshold")


def _cell(column: AggregateColumn, position: int, suppressed: bool, plan: PrivacyPlan, values: np.ndarray,
          unclamped: np.ndarray, simulated: np.ndarray) -> Cell:
    """One released statistic; a statistic of several quantities gets its interval from the replicates of
    its unclamped value (`simulated`), clamped after."""
    if suppressed:
        return Cell(value=None, suppressed=True,
                    reason=f"fewer than {plan.suppression_threshold} persons (noisy count)")
    value = float(values[position])
    if column.function in statistics.SIMULATED:
        part, mechanism = statistics.SIMULATED[column.function]
        if not np.isfinite(value):
            return Cell(value=None, mechanism=mechanism, reason="no estimate: the noisy count is too small")
        span = intervals.interval(float(unclamped[position]), simulated[:, position], plan.alpha,
                                  *statistics.feasible(column, plan, unclamped=True))
        span = statistics.released_interval(column, plan, span) if span is not None else None
        digits = decimals((span[1] - span[0]) / 2) if span is not None else DIGITS
        return _rounded(Cell(value=round(value, digits), mechanism=mechanism,
                             scale=plan.quantity(f"{column.name}{part}").scale,
                             interval=_outward(*span, digits) if span is not None else None,
                             reason=None if span is not None else NO_INTERVAL), column.digits)
    quantity = plan.quantity(column.name)
    shown: CellValue = int(value) if quantity.unit == 1 else round(value, decimals(quantity.accuracy))
    return _rounded(Cell(value=shown, mechanism=quantity.mechanism, scale=quantity.scale,
                         interval=_interval(value, quantity.accuracy)), column.digits)


def _derived_cell(column: DerivedColumn, position: int, suppressed: bool, plan: PrivacyPlan, values: np.ndarray,
                  simulated: np.ndarray) -> Cell:
    """A derived column's cell: its expression of the group's noisy values, with an interval from the
    same expression over their replicates; a suppressed group's is suppressed too."""
    if suppressed:
        return Cell(value=None, suppressed=True, derived=True,
                    reason=f"fewer than {plan.suppression_threshold} persons (noisy count)")
    value = float(values[position])
    if not np.isfinite(value):
        return Cell(value=None, mechanism="derived", derived=True, reason="no value: an input has no estimate, or "
                    "a divisor is zero (or a non-positive noisy count)")
    span = intervals.interval(value, simulated[:, position], plan.alpha)
    if span is None:
        return _rounded(Cell(value=round(value, DIGITS), mechanism="derived", derived=True,
                             reason="no interval: too many simulated releases of its inputs give no value"),
                        column.digits)
    digits = decimals((span[1] - span[0]) / 2)  # shown to its precision, as a mean is
    return _rounded(Cell(value=round(value, digits), mechanism="derived", interval=_outward(*span, digits),
                         derived=True), column.digits)


def _rounded(cell: Cell, digits: int | None) -> Cell:
    """ROUND(aggregate, digits) of the query, applied to the released value and interval."""
    if digits is None or cell.value is None:
        return cell
    value = round(cell.value, digits)  # type: ignore[arg-type]
    interval = _outward(*cell.interval, digits) if cell.interval else None
    return cell.model_copy(update={"value": value, "interval": interval})


def _ordered(rows: list[list[Cell]], order: tuple[tuple[int, bool], ...]) -> list[list[Cell]]:
    """ORDER BY applied to released values (post-processing); suppressed values sort last."""
    for position, descending in reversed(order):
        present = [r for r in rows if r[position].value is not None]
        missing = [r for r in rows if r[position].value is None]
        present.sort(key=lambda r, p=position: r[p].value, reverse=descending)  # type: ignore[misc]
        rows = present + missing
    return rows
