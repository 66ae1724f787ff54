"""The interval each output column will be released with, said before anything is spent (`enclave check`).

The plan fixes every noise scale before the query runs, so the check can say how wide each output's
interval will be: a researcher who sees ± 80 on a count of about 50 rewrites the query (coarser groups,
more ε) for free instead of spending ε on a release that says nothing.

- A count or a sum is one noisy quantity: its interval is the value ± the quantity's accuracy at
  1 - alpha (OpenDP's, the same number `protect` uses), exactly.
- A mean is a noisy centred sum over a noisy count n; to first order its error is (e_sum - (mean -
  centre) · e_count) / n, so its half-width is about (A_sum + |mean - centre| · A_count) / n, with A the
  quantities' accuracies. It depends on the group's n and mean, which are not known before the query
  runs, so the preview gives the formula; the release simulates the interval (disclosure.intervals).
- Any other statistic's interval is only simulated at release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from enclave.check.query import AggregateColumn, OutputColumn
from enclave.disclosure.plan import PrivacyPlan
from enclave.disclosure.protect import decimals

SIMULATED = "by simulation at release"


@dataclass(frozen=True)
class OutputInterval:
    """One released statistic and, in words, the interval it will carry."""

    column: str
    kind: str
    interval: str


def _number(value: float) -> str:
    """A preview's number: whole with thousands separators from 100 on, else three significant digits."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _interval(column: AggregateColumn, plan: PrivacyPlan) -> str:
    if column.function in ("count", "count_distinct_unit", "sum"):
        accuracy = plan.quantity(column.name).accuracy
        return f"± {accuracy:,.{decimals(accuracy)}f}"
    if column.function == "avg":
        total, count = plan.quantity(f"{column.name}__sum"), plan.quantity(f"{column.name}__count")
        return (f"± about ({_number(total.accuracy)} + {_number(count.accuracy)} · |mean - {total.centre:g}|) / n "
                "(n the group's count)")
    return SIMULATED


def outputs(plan: PrivacyPlan, columns: Sequence[OutputColumn]) -> tuple[OutputInterval, ...]:
    """Each aggregate output column of a checked query with the interval `protect` will give it at the
    plan's 1 - alpha (keys carry none: they are public, or selected, never noised)."""
    return tuple(OutputInterval(c.name, c.function, _interval(c, plan))
                 for c in columns if isinstance(c, AggregateColumn))
