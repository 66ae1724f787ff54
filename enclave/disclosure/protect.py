"""protect: true aggregates in, released cells out. Noise, then suppression, then rounding.

1. Groups: with public keys, every combination of them, NULL included (a group nobody is in counts
   zero); otherwise the groups whose noisy count of persons passes OpenDP's threshold. A NULL key is a
   key like any other (released as null: JSON null, an empty CSV field). A value outside a public key
   set (which a manifest that is right never lets happen) is never released.
2. Noise: each quantity of the plan, as one vector over those groups, through its OpenDP measurement.
3. Suppression: a group whose noisy count of persons is below the threshold has every statistic
   suppressed (value null, reason given); its keys stay, so nothing disappears silently.
4. Post-processing: means are the noisy sum over the noisy count, clamped to the measure's bounds;
   counts are integers; other values are rounded. None of this touches the true values again.
"""

from __future__ import annotations

import json
from decimal import Decimal

from enclave.check.query import AggregateColumn, KeyColumn
from enclave.disclosure import noise
from enclave.disclosure.keys import KeyValue
from enclave.disclosure.plan import PrivacyPlan
from enclave.disclosure.release import Cell, CellValue, ReleaseColumn
from enclave.execute.sandbox import RawResult
from enclave.rewrite import RewrittenQuery
from enclave.rewrite.rules import UNITS

DIGITS = 2


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


def _interval(value: float, half_width: float) -> tuple[float, float]:
    return (round(value - half_width, DIGITS), round(value + half_width, DIGITS))


def protect(raw: RawResult, rewritten: RewrittenQuery, plan: PrivacyPlan
            ) -> tuple[list[ReleaseColumn], list[list[Cell]]]:
    """The released columns and rows of one executed query."""
    query = rewritten.checked
    width = len(query.keys)
    index = {name: i for i, name in enumerate(raw.columns)}
    true_rows = {tuple(row[:width]): row for row in raw.rows}
    units_column = index[plan.sources[UNITS]]
    groups, selected = _groups(plan, {key: int(row[units_column] or 0) for key, row in true_rows.items()})

    noisy: dict[str, list[int] | list[float]] = {}
    for quantity in plan.quantities:
        if selected is not None and quantity.mechanism == "laplace_threshold":
            noisy[quantity.column] = [selected[group] for group in groups]
            continue
        vector = [_units(true_rows[g][index[quantity.column]], quantity.unit) if g in true_rows else 0
                  for g in groups]
        noisy[quantity.column] = noise.vector_laplace(quantity.noise_scale)(vector) if vector else []

    persons = noisy[plan.sources[UNITS]]
    rows = []
    for position, group in enumerate(groups):
        suppressed = persons[position] < plan.suppression_threshold
        rows.append([_cell(column, group, position, suppressed, plan, noisy, query.keys) for column in query.columns])
    columns = [ReleaseColumn(name=c.name, kind="key" if isinstance(c, KeyColumn) else c.function)  # type: ignore[arg-type]
               for c in query.columns]
    ordered = _ordered(rows, query.order)
    end = None if query.limit is None else query.offset + query.limit
    return columns, ordered[query.offset:end]  # LIMIT and OFFSET trim the noisy, ordered table


def _cell(column: KeyColumn | AggregateColumn, group: tuple, position: int, suppressed: bool, plan: PrivacyPlan,
          noisy: dict[str, list], keys: tuple[KeyColumn, ...]) -> Cell:
    if isinstance(column, KeyColumn):
        value = group[keys.index(column)]
        return Cell(value=value, mechanism=None if plan.groups is not None else "laplace_threshold")
    if suppressed:
        return Cell(value=None, suppressed=True,
                    reason=f"fewer than {plan.suppression_threshold} persons (noisy count)")
    if column.function == "avg":
        return _mean(column, position, plan, noisy)
    quantity = plan.quantity(column.name)
    value = noisy[quantity.column][position] / quantity.unit
    shown: CellValue = int(value) if quantity.unit == 1 else round(value, DIGITS)
    return _rounded(Cell(value=shown, mechanism=quantity.mechanism, scale=quantity.scale,
                         interval=_interval(value, quantity.accuracy)), column.digits)


def _rounded(cell: Cell, digits: int | None) -> Cell:
    """ROUND(aggregate, digits) of the query, applied to the released value and interval."""
    if digits is None or cell.value is None:
        return cell
    value = round(cell.value, digits)  # type: ignore[arg-type]
    interval = tuple(round(bound, digits) for bound in cell.interval) if cell.interval else None
    return cell.model_copy(update={"value": value, "interval": interval})


def _mean(column: AggregateColumn, position: int, plan: PrivacyPlan, noisy: dict[str, list]) -> Cell:
    """Noisy sum over noisy count, clamped to the bounds; its interval combines both at alpha / 2 each."""
    total_q, count_q = plan.quantity(f"{column.name}__sum"), plan.quantity(f"{column.name}__count")
    total = noisy[total_q.column][position] / total_q.unit
    count = float(noisy[count_q.column][position])
    low, high = column.bounds or (float("-inf"), float("inf"))
    if count <= 0:
        return Cell(value=None, mechanism="laplace_ratio", reason="no estimate: the noisy count is not positive")
    a_total = noise.accuracy(total_q.noise_scale, plan.alpha / 2) / total_q.unit
    a_count = noise.accuracy(count_q.noise_scale, plan.alpha / 2)
    ratios = [t / c for t in (total - a_total, total + a_total) for c in (max(count - a_count, 1.0), count + a_count)]

    def clamp(x: float) -> float:
        return round(min(max(x, low), high), DIGITS)

    return _rounded(Cell(value=clamp(total / count), mechanism="laplace_ratio", scale=total_q.scale,
                         interval=(clamp(min(ratios)), clamp(max(ratios)))), column.digits)


def _ordered(rows: list[list[Cell]], order: tuple[tuple[int, bool], ...]) -> list[list[Cell]]:
    """ORDER BY applied to released values (post-processing); suppressed values sort last."""
    for position, descending in reversed(order):
        present = [r for r in rows if r[position].value is not None]
        missing = [r for r in rows if r[position].value is None]
        present.sort(key=lambda r, p=position: r[p].value, reverse=descending)  # type: ignore[misc]
        rows = present + missing
    return rows
