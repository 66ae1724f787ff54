"""Released statistics computed from noisy quantities: post-processing only, never a true value.

Each function takes the noisy quantities of a plan in their own units, either the released vectors (one
value per group; a histogram one row of counts per group) or replicates of them (a leading axis of
draws, for intervals: disclosure.intervals), and returns the statistic per group, NaN where it has no
estimate. The same function serves the released value and its replicates, so an interval is always the
spread of exactly the statistic that was released.

- count, sum: the noisy quantity itself.
- avg: c + S/n, S the noisy sum of x - c (c the bounds' midpoint), n the noisy count; clamped to the
  bounds; none where n <= 0.
- var_pop: h²/2 + Q/n - (S/n)², Q the noisy sum of (x - c)² - h²/2 (h = (hi - lo) / 2); clamped to
  [0, h²], the most a variance of values in [lo, hi] can be. var_samp: var_pop · n/(n - 1) (clamped at twice that); none
  where n <= 1. stddev_*: the square root of its variance.
- quantile: read off the noisy histogram (OpenDP's Laplace on every group's count per bin) where its
  cumulative count first reaches p of its total, linear within that bin; on a unit grid of integers it
  is the integer whose bin that is, as DuckDB's QUANTILE_CONT is on integers. On non-negative counts
  this is exactly OpenDP's make_quantiles_from_counts (tests/disclosure/test_statistics.py). Noisy
  counts may be negative, and OpenDP's binary search assumes a monotone CDF, so the first crossing is
  found here instead, vectorised over groups and replicates (OpenDP's takes one vector a call, 155 µs).
  Negative counts are kept: clipping them at 0 would pile the noise of every empty bin into the
  distribution.
"""

from __future__ import annotations

import numpy as np

from enclave.check.query import AggregateColumn
from enclave.disclosure.plan import PrivacyPlan

VARIANCES = frozenset({"var_pop", "var_samp", "stddev_pop", "stddev_samp"})
# The part a statistic's noise scale is reported by, and the mechanism its cell names.
SIMULATED = {"avg": ("__sum", "laplace_ratio"), "quantile": ("__histogram", "laplace_histogram"),
             **{v: ("__squares", "laplace_moments") for v in VARIANCES}}


def estimate(column: AggregateColumn, plan: PrivacyPlan, noisy: dict[str, np.ndarray], clamp: bool = True
             ) -> np.ndarray:
    """An output's value in every group from its noisy quantities (see the module docstring); without
    `clamp`, not yet clamped to where it can lie (`feasible`), which an interval is made from: a value
    clamped at a bound would leave its replicates nowhere to spread to."""
    if column.function == "avg":
        found = _mean(column, plan, noisy)
    elif column.function in VARIANCES:
        found = _dispersion(column, plan, noisy, root=clamp)
    elif column.function == "quantile":
        found = _quantile(column, plan, noisy, whole=clamp)
    else:
        return noisy[plan.quantity(column.name).column].astype(float)
    return np.clip(found, *feasible(column, plan)) if clamp else found


def feasible(column: AggregateColumn, plan: PrivacyPlan, unclamped: bool = False) -> tuple[float, float]:
    """Where a statistic's values can lie: its bounds; for a variance [0, w] with w = ((hi - lo)/2)² the
    largest variance of values in [lo, hi] (twice that for a sample variance, whose n/(n - 1) is at most
    2), and the square roots for a standard deviation (`unclamped`: its variance's, where its interval
    is made)."""
    if column.function in VARIANCES:
        widest = 2 * plan.quantity(f"{column.name}__squares").centre  # h²
        widest *= 2 if column.function.endswith("_samp") else 1
        root = column.function.startswith("stddev") and not unclamped
        return (0.0, float(np.sqrt(widest)) if root else widest)
    return column.bounds or (-np.inf, np.inf)


def _mean(column: AggregateColumn, plan: PrivacyPlan, noisy: dict[str, np.ndarray]) -> np.ndarray:
    total_q, count_q = plan.quantity(f"{column.name}__sum"), plan.quantity(f"{column.name}__count")
    total, count = noisy[total_q.column], noisy[count_q.column]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total_q.centre + total / count, np.nan)


def _dispersion(column: AggregateColumn, plan: PrivacyPlan, noisy: dict[str, np.ndarray], root: bool
                ) -> np.ndarray:
    """The variance from the noisy count, centred sum and sum of squares; a standard deviation its root
    (`root`), or the variance itself, where its interval is made and then rooted (`released_interval`):
    the noisy variance is nearly linear in the noise, its root is not near 0 (a bootstrap of the root
    covered 63%)."""
    count = noisy[plan.quantity(f"{column.name}__count").column]
    total = noisy[plan.quantity(f"{column.name}__sum").column]
    squares_q = plan.quantity(f"{column.name}__squares")
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = squares_q.centre + noisy[squares_q.column] / count - (total / count) ** 2
        if column.function.endswith("_samp"):
            variance = np.where(count > 1, variance * count / (count - 1), np.nan)
    variance = np.where(count > 0, variance, np.nan)
    return np.sqrt(np.clip(variance, 0.0, None)) if root and column.function.startswith("stddev") else variance


def _quantile(column: AggregateColumn, plan: PrivacyPlan, noisy: dict[str, np.ndarray], whole: bool) -> np.ndarray:
    """The quantile; on a unit grid the integer whose bin it is (`whole`), else where in the bin it falls:
    the interval is made from that position and then floored (`released_interval`), because reflecting
    replicates of a whole number around a whole number misses half the time the release is one off."""
    quantity = plan.quantity(f"{column.name}__histogram")
    edges = quantity.edges
    found = quantiles(noisy[quantity.column], np.asarray(edges), float(column.quantile or 0.5))
    return np.floor(found) if whole and _unit_grid(edges) else found


def released_interval(column: AggregateColumn, plan: PrivacyPlan, span: tuple[float, float]) -> tuple[float, float]:
    """An interval of a statistic as released: a unit-grid quantile's interval of positions becomes the
    integers whose bins it reaches (the true quantile is the integer of its position's bin); a standard
    deviation's is the root of its variance's."""
    if column.function == "quantile" and _unit_grid(plan.quantity(f"{column.name}__histogram").edges):
        return (float(np.floor(span[0])), float(np.floor(span[1])))
    if column.function.startswith("stddev"):
        return (float(np.sqrt(span[0])), float(np.sqrt(span[1])))
    return span


def _unit_grid(edges: tuple[float, ...]) -> bool:
    return all(float(e).is_integer() for e in edges) and edges[1] - edges[0] == 1


def quantiles(counts: np.ndarray, edges: np.ndarray, p: float) -> np.ndarray:
    """The p-quantile of each histogram on the last axis of `counts`: the edge where the cumulative count
    first reaches p of the total, plus the share of the bin's width its count covers (None: NaN)."""
    cumulative = np.cumsum(counts, axis=-1)
    total = cumulative[..., -1:]
    target = p * total
    index = np.argmax(cumulative >= target, axis=-1, keepdims=True)
    in_bin = np.take_along_axis(counts, index, axis=-1)
    before = np.take_along_axis(cumulative, index, axis=-1) - in_bin
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(in_bin > 0, (target - before) / in_bin, 0.0)
    value = edges[index] + share * (edges[index + 1] - edges[index])
    return np.where(total > 0, value, np.nan)[..., 0]
