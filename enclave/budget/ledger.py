"""The privacy budget: grants (a data-use agreement in data) and charges reserved atomically against them.

A grant gives a researcher a dataset for a purpose, from a start date to an expiry date, with ε and δ
caps, and says whether ad-hoc SQL is allowed or templates only. Revocation and expiry take effect at
the next reservation: a grant is checked inside the same transaction that charges it.

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
from datetime import UTC, date, datetime

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


@dataclass(frozen=True)
class Grant:
    researcher: str
    dataset: str
    purpose: str
    starts: date | None
    expires: date | None
    epsilon_cap: float
    delta_cap: float
    adhoc: bool
    revoked: bool

    def refusal(self, today: date) -> BudgetError | None:
        """Why this grant cannot be used today, or None."""
        if self.revoked:
            return BudgetError("grant_revoked", f"Your grant on {self.dataset} was revoked.")
        if self.starts is not None and today < self.starts:
            return BudgetError("grant_not_started", f"Your grant on {self.dataset} starts on {self.starts}.")
        if self.expires is not None and today > self.expires:
            return BudgetError("grant_expired", f"Your grant on {self.dataset} expired on {self.expires}.")
        return None


def grant(tx: Transaction, actor: str, researcher: str, dataset: str, epsilon_cap: float, delta_cap: float, *,
          purpose: str = "", starts: date | None = None, expires: date | None = None, adhoc: bool = True) -> None:
    """Grant (or replace) a researcher's access to a dataset, recorded in the log."""
    record = tx.append("grant.created", actor, "allow", [], researcher=researcher, dataset=dataset,
                       purpose=purpose, starts=str(starts or ""), expires=str(expires or ""), adhoc=adhoc,
                       epsilon_cap=epsilon_cap, delta_cap=delta_cap,
                       epsilon_cap_units=epsilon_units(epsilon_cap), delta_cap_units=delta_units(delta_cap))
    tx.connection.execute(
        "INSERT INTO grants (researcher, dataset, epsilon_cap, delta_cap, purpose, starts, expires, adhoc, revoked,"
        " seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (researcher, dataset) DO UPDATE SET"
        " epsilon_cap = excluded.epsilon_cap, delta_cap = excluded.delta_cap, purpose = excluded.purpose,"
        " starts = excluded.starts, expires = excluded.expires, adhoc = excluded.adhoc, revoked = 0,"
        " seq = excluded.seq",
        (researcher, dataset, epsilon_units(epsilon_cap), delta_units(delta_cap), purpose, str(starts or ""),
         str(expires or ""), int(adhoc), record["seq"]))


def revoke_grant(tx: Transaction, actor: str, researcher: str, dataset: str, reason: str) -> bool:
    """Revoke a grant at once (recorded with its reason); False if there is no such grant."""
    if find_grant(tx, researcher, dataset) is None:
        return False
    tx.append("grant.revoked", actor, "allow", [reason], researcher=researcher, dataset=dataset)
    tx.connection.execute("UPDATE grants SET revoked = 1 WHERE researcher = ? AND dataset = ?", (researcher, dataset))
    return True


def find_grant(tx: Transaction, researcher: str, dataset: str) -> Grant | None:
    row = tx.connection.execute(
        "SELECT researcher, dataset, purpose, starts, expires, epsilon_cap, delta_cap, adhoc, revoked FROM grants "
        "WHERE researcher = ? AND dataset = ?", (researcher, dataset)).fetchone()
    if row is None:
        return None
    return Grant(row[0], row[1], row[2], date.fromisoformat(row[3]) if row[3] else None,
                 date.fromisoformat(row[4]) if row[4] else None, row[5] / EPSILON_UNIT, row[6] / DELTA_UNIT,
                 bool(row[7]), bool(row[8]))


def grants_of(tx: Transaction, researcher: str) -> list[Grant]:
    names = tx.connection.execute("SELECT dataset FROM grants WHERE researcher = ? ORDER BY dataset",
                                  (researcher,)).fetchall()
    return [g for (name,) in names if (g := find_grant(tx, researcher, name)) is not None]


def today() -> date:
    return datetime.now(UTC).date()


def _remaining_units(tx: Transaction, researcher: str, dataset: str) -> tuple[int, int] | None:
    """The grant's caps less its charges, in one statement (a replay reads it under the write lock)."""
    row = tx.connection.execute(
        "SELECT g.epsilon_cap - CAST(coalesce(sum(c.epsilon), 0) AS BIGINT), "
        "g.delta_cap - CAST(coalesce(sum(c.delta), 0) AS BIGINT) FROM grants g "
        "LEFT JOIN charges c ON c.researcher = g.researcher AND c.dataset = g.dataset "
        "WHERE g.researcher = ? AND g.dataset = ? GROUP BY g.epsilon_cap, g.delta_cap",
        (researcher, dataset)).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def remaining(tx: Transaction, researcher: str, dataset: str) -> Remaining | None:
    units = _remaining_units(tx, researcher, dataset)
    return None if units is None else Remaining(units[0] / EPSILON_UNIT, units[1] / DELTA_UNIT)


def admit(tx: Transaction, researcher: str, dataset: str, epsilon: float, delta: float, *,
          adhoc: bool = True) -> tuple[int, int]:
    """The units left if the grant allows a charge of (ε, δ) now, or raise BudgetError; charges nothing
    (an asynchronous query is admitted when it is queued and charged when a worker starts it)."""
    found = find_grant(tx, researcher, dataset)
    units = _remaining_units(tx, researcher, dataset)
    if found is None or units is None:
        raise BudgetError("no_grant", f"You have no grant on dataset {dataset}.")
    refusal = found.refusal(today())
    if refusal is not None:
        raise refusal
    if adhoc and not found.adhoc:
        raise BudgetError("templates_only", f"Your grant on {dataset} allows approved templates only.")
    eps, dlt = epsilon_units(epsilon), delta_units(delta)
    if eps > units[0] or dlt > units[1]:
        raise BudgetError("budget_exceeded", f"This query costs ε={epsilon:g}, δ={delta:g}; you have "
                          f"ε={units[0] / EPSILON_UNIT:g}, δ={units[1] / DELTA_UNIT:g} left on {dataset}.")
    return units


def reserve(tx: Transaction, researcher: str, dataset: str, epsilon: float, delta: float,
            record: dict[str, object], *, adhoc: bool = True,
            query_id: str | None = None) -> tuple[str, Remaining, dict[str, object]]:
    """Charge (ε, δ) and record it, or raise BudgetError; both happen in the caller's transaction.
    `query_id` names the charge (an asynchronous query's job id); by default a new one."""
    units = admit(tx, researcher, dataset, epsilon, delta, adhoc=adhoc)
    eps, dlt = epsilon_units(epsilon), delta_units(delta)
    query_id = query_id or uuid.uuid4().hex
    charge = {"epsilon": epsilon, "delta": delta, "epsilon_units": eps, "delta_units": dlt}
    charged = tx.append("query.charged", researcher, "allow", [], **{**record, "dataset": dataset},
                        query_id=query_id, charge=charge)
    tx.connection.execute(
        "INSERT INTO charges (query_id, researcher, dataset, epsilon, delta, seq) VALUES (?, ?, ?, ?, ?, ?)",
        (query_id, researcher, dataset, eps, dlt, charged["seq"]))
    left = Remaining((units[0] - eps) / EPSILON_UNIT, (units[1] - dlt) / DELTA_UNIT)
    return query_id, left, charged


def live_totals(tx: Transaction) -> dict[tuple[str, str], tuple[int, int]]:
    rows = tx.connection.execute("SELECT researcher, dataset, CAST(sum(epsilon) AS BIGINT), CAST(sum(delta) AS BIGINT) "
                                 "FROM charges GROUP BY researcher, dataset").fetchall()
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
