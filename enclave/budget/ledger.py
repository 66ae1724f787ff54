"""The privacy budget: grants with ε and δ caps, and charges reserved atomically against them.

A charge is reserved inside the audit store's write transaction (`BEGIN IMMEDIATE`), together with the
`query.charged` record: the cap check, the charge and its record are one atomic step, serialised with
every other writer in every process, so concurrent requests can never overspend. Amounts are kept as
integers (ε in units of 1e-9, δ in units of 1e-15) so that sums are exact; the log holds the same
integers, and `rebuild_from_log` recomputes every total from the log alone.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from enclave.audit.store import Transaction

EPSILON_UNIT = 10**9
DELTA_UNIT = 10**15


def epsilon_units(value: float) -> int:
    return round(value * EPSILON_UNIT)


def delta_units(value: float) -> int:
    return round(value * DELTA_UNIT)


class BudgetError(Exception):
    """A request the budget refuses; `code` is stable, the message safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Remaining:
    epsilon: float
    delta: float


def grant(tx: Transaction, actor: str, researcher: str, dataset: str, epsilon_cap: float, delta_cap: float) -> None:
    """Grant (or replace) a researcher's caps on a dataset, recorded in the log."""
    record = tx.append("grant.created", actor, "allow", [], researcher=researcher, dataset=dataset,
                       epsilon_cap=epsilon_cap, delta_cap=delta_cap,
                       epsilon_cap_units=epsilon_units(epsilon_cap), delta_cap_units=delta_units(delta_cap))
    tx.connection.execute(
        "INSERT OR REPLACE INTO grants (researcher, dataset, epsilon_cap, delta_cap, seq) VALUES (?, ?, ?, ?, ?)",
        (researcher, dataset, epsilon_units(epsilon_cap), delta_units(delta_cap), record["seq"]))


def _remaining_units(tx: Transaction, researcher: str, dataset: str) -> tuple[int, int] | None:
    row = tx.connection.execute("SELECT epsilon_cap, delta_cap FROM grants WHERE researcher = ? AND dataset = ?",
                                (researcher, dataset)).fetchone()
    if row is None:
        return None
    spent = tx.connection.execute(
        "SELECT coalesce(sum(epsilon), 0), coalesce(sum(delta), 0) FROM charges WHERE researcher = ? AND dataset = ?",
        (researcher, dataset)).fetchone()
    return row[0] - spent[0], row[1] - spent[1]


def remaining(tx: Transaction, researcher: str, dataset: str) -> Remaining | None:
    units = _remaining_units(tx, researcher, dataset)
    return None if units is None else Remaining(units[0] / EPSILON_UNIT, units[1] / DELTA_UNIT)


def reserve(tx: Transaction, researcher: str, dataset: str, epsilon: float, delta: float,
            record: dict[str, object]) -> tuple[str, Remaining, dict[str, object]]:
    """Charge (ε, δ) and record it, or raise BudgetError; both happen in the caller's transaction."""
    units = _remaining_units(tx, researcher, dataset)
    if units is None:
        raise BudgetError("no_grant", f"You have no grant on dataset {dataset}.")
    eps, dlt = epsilon_units(epsilon), delta_units(delta)
    if eps > units[0] or dlt > units[1]:
        raise BudgetError("budget_exceeded", f"This query costs ε={epsilon:g}, δ={delta:g}; you have "
                          f"ε={units[0] / EPSILON_UNIT:g}, δ={units[1] / DELTA_UNIT:g} left on {dataset}.")
    query_id = uuid.uuid4().hex
    charge = {"epsilon": epsilon, "delta": delta, "epsilon_units": eps, "delta_units": dlt}
    charged = tx.append("query.charged", researcher, "allow", [], **{**record, "dataset": dataset},
                        query_id=query_id, charge=charge)
    tx.connection.execute(
        "INSERT INTO charges (query_id, researcher, dataset, epsilon, delta, seq) VALUES (?, ?, ?, ?, ?, ?)",
        (query_id, researcher, dataset, eps, dlt, charged["seq"]))
    left = Remaining((units[0] - eps) / EPSILON_UNIT, (units[1] - dlt) / DELTA_UNIT)
    return query_id, left, charged


def live_totals(tx: Transaction) -> dict[tuple[str, str], tuple[int, int]]:
    rows = tx.connection.execute("SELECT researcher, dataset, sum(epsilon), sum(delta) FROM charges "
                                 "GROUP BY researcher, dataset").fetchall()
    return {(r, d): (e, dl) for r, d, e, dl in rows}


def rebuild_from_log(records: Iterable[dict[str, object]]) -> dict[tuple[str, str], tuple[int, int]]:
    """Spent (ε, δ) units per (researcher, dataset), from `query.charged` records alone."""
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for record in records:
        if record["event"] == "query.charged":
            charge = record["charge"]
            key = (str(record["actor"]), str(record["dataset"]))
            totals[key][0] += int(charge["epsilon_units"])  # type: ignore[index]
            totals[key][1] += int(charge["delta_units"])  # type: ignore[index]
    return {key: (e, d) for key, (e, d) in totals.items()}
