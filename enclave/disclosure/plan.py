"""The privacy plan: mechanism, sensitivity, scale, ε share and accuracy of every released number.

Made before anything runs, from the rewritten query and the manifest alone, so a researcher sees the
cost and accuracy of a query for free (`enclave check`). The cost is exactly the ε the researcher asked
for (or the rules' default), split over the distinct quantities the query noises. A quantity asked for
twice is noised once and paid for once: COUNT(DISTINCT person_id) is also the count of persons that
decides suppression, and the COUNT(x) an AVG(x) divides by is COUNT(*) when x is never NULL.

The split (the allocation rule): each quantity gets ε in proportion to its weight, the largest weight
of what it serves. Every quantity a released output needs weighs 1, or the researcher's weight of that
output column where the query gives one: a COUNT or SUM its one quantity, an AVG its centred sum and the
count it divides by, a variance its count, centred sum and centred sum of squares, quantiles of one x
their shared histogram. Equal weights are the minimax choice for a ratio: a centred mean c + S/n moves
with the count's noise by |mean - c| / n per unit, as much as with the sum's when the mean lies near a
bound (a rate of 8% in [0, 1], days absent in [0, 180]), and a variance Q/n - (S/n)² likewise. The
count of persons that only decides suppression weighs the rules' `suppression_weight` (0.2): it need
only tell a group from the threshold. Without public keys it also decides which groups exist, and
weighs 1.

Sensitivities, for adding or removing one person who contributes at most N rows and G groups:
- COUNT(*) and COUNT(x): N (the person's rows, however they fall into groups)
- COUNT(DISTINCT unit): min(G, N) with GROUP BY (one per group reached), 1 without
- SUM(x) with x clamped to [lo, hi]: N * max(|lo|, |hi|); centred on c (an AVG's or a variance's sum):
  N * max(|lo - c|, |hi - c|), which is N * (hi - lo) / 2 at the midpoint
- a variance's sum of squares, SUM((x - c)² - h²/2) with h = (hi - lo) / 2: N * h²/2 (the squares lie
  in [0, h²], so centring them on h²/2 halves it as it does a sum's)
- a quantile's histogram (a count per group and bin of the grid): N in L1 over all groups and bins, as
  each row is in one bin of one group

Every quantity is an integer, so all noise is OpenDP's discrete Laplace and no sensitivity is
understated by floating-point arithmetic: sums are exact DECIMAL(38, 6) in DuckDB and are noised as an
integer count of millionths (`Quantity.unit`), with bounds rounded outward to a millionth.

Accuracy targets (`plan_for_accuracy`): instead of ε a researcher may ask for the half-width of the
1 - alpha interval of a COUNT, COUNT(DISTINCT) or SUM column. A quantity's accuracy depends only on its
scale, and its scale is its sensitivity over its share ε · w / W, so the least total ε that meets a target
is OpenDP's scale for that accuracy turned back into ε; the plan takes the largest over the targets and is
built at that ε, so it spends exactly what the targets cost. A mean's half-width depends on the group's
count and mean, which nothing knows before the query runs, so a mean takes no target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import opendp.prelude as dp

from enclave.catalog.manifest import Manifest
from enclave.check.query import AggregateColumn
from enclave.disclosure import noise
from enclave.disclosure.keys import KeyValue, domain_size, public_groups
from enclave.policy.rules import Rules
from enclave.rewrite import RewrittenQuery
from enclave.rewrite.plan import Measure


class PlanError(Exception):
    """A query whose privacy cost cannot be planned as asked; `code` is stable, the message safe."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


SUM_UNIT = 10**6


@dataclass(frozen=True)
class Quantity:
    """One noised vector: a column of the executed query's result, and how it is protected.

    Noise is added to integers: the value times `unit` (1 for counts, a million for sums). `sensitivity`,
    `scale` and `accuracy` are in the value's own units; `noise_scale` is the scale OpenDP samples at.
    """

    column: str
    function: str
    unit: int
    mechanism: str
    sensitivity: float
    noise_scale: float
    epsilon: float
    accuracy: float
    centre: float = 0.0  # a sum of `x - centre`; a mean adds it back (protect)
    weight: float = 1.0  # its weight in the split of ε (the module docstring's allocation rule)
    edges: tuple[float, ...] = ()  # a histogram's bin edges: one noised count per group and bin

    @property
    def scale(self) -> float:
        return self.noise_scale / self.unit


@dataclass(frozen=True)
class PrivacyPlan:
    epsilon: float
    delta: float
    alpha: float
    quantities: tuple[Quantity, ...]
    sources: dict[str, str]
    groups: tuple[tuple[KeyValue, ...], ...] | None
    selection_threshold: int | None
    suppression_threshold: int
    weights: Mapping[str, float] = field(default_factory=dict)  # the researcher's, by output column, sorted
    targets: Mapping[str, float] = field(default_factory=dict)  # the accuracy targets it was planned for, if any

    def quantity(self, measure: str) -> Quantity:
        """The noised quantity a measure of the executed query is released from."""
        column = self.sources[measure]
        return next(q for q in self.quantities if q.column == column)


def _identity(measure: Measure) -> tuple[str, str]:
    return measure.function, measure.arg.sql("duckdb") if measure.arg is not None else ""


def sensitivity(function: str, bounds: tuple[float, float] | None, rows: int, groups: int, grouped: bool,
                centre: float = 0.0) -> int:
    """L1 sensitivity of one quantity, in its noised integer units (see the module docstring)."""
    if function == "count_units":
        return min(groups, rows) if grouped else 1
    if function in ("count", "histogram"):  # a row is in one bin of one group's histogram
        return rows
    low, high = bounds or (0.0, 0.0)
    return rows * math.ceil(max(abs(low - centre), abs(high - centre)) * SUM_UNIT)


# The weight of each part of an output in the split of ε (see the module docstring).
PART_WEIGHTS = {"value": 1.0, "sum": 1.0, "count": 1.0, "histogram": 1.0, "squares": 1.0, "var_sum": 1.0,
                "var_count": 1.0}


def _weight(measure: Measure, weights: Mapping[str, float], rules: Rules, selects: bool) -> float:
    if measure.part == "units":
        return 1.0 if selects else rules.privacy.suppression_weight
    return weights.get(measure.output, 1.0) * PART_WEIGHTS[measure.part]


MAX_WEIGHT = 100.0  # a weight above it would starve every other output of ε for no gain a researcher can use


def _outputs(rewritten: RewrittenQuery) -> dict[str, str]:
    """Each released (aggregate) output column of a rewritten query and its function."""
    return {column.name: column.function for column in rewritten.checked.columns
            if isinstance(column, AggregateColumn)}


def _unknown(named: Mapping[str, object], rewritten: RewrittenQuery, what: str) -> None:
    """Refuse a weight or target of a column that is not an aggregate output of the query: it would be
    silently ignored, and the researcher would pay for a split they did not ask for."""
    outputs = _outputs(rewritten)
    unknown = sorted(set(named) - set(outputs))
    if unknown:
        raise PlanError("unknown_output_column", f"{what} names {', '.join(map(repr, unknown))}, not an aggregate "
                        f"output column of the query (those are: {', '.join(outputs) or 'none'}).")


def requested_epsilon(rules: Rules, epsilon: float | None) -> float:
    """The ε a query asks for: its own, or the rules' default."""
    return rules.privacy.default_epsilon if epsilon is None else epsilon


def plan_privacy(rewritten: RewrittenQuery, manifest: Manifest, rules: Rules, epsilon: float | None,
                 delta: float | None = None, weights: Mapping[str, float] | None = None) -> PrivacyPlan:
    """The mechanisms, scales and cost of releasing a rewritten query at the requested ε, split by the
    weights of its output columns (1 each unless `weights` names them)."""
    epsilon = requested_epsilon(rules, epsilon)
    weights = weights or {}
    _unknown(weights, rewritten, "A weight")
    bad = sorted(column for column, w in weights.items() if not 0 < w <= MAX_WEIGHT)
    if bad:
        raise PlanError("invalid_weight", f"The weight of {', '.join(map(repr, bad))} must be a number above 0 and "
                        f"at most {MAX_WEIGHT:g}.")
    if not 0 < epsilon <= rules.privacy.max_epsilon:  # false for NaN too: the message names both
        raise PlanError("epsilon_out_of_range", f"ε must be a finite number above 0 and at most "
                        f"{rules.privacy.max_epsilon:g} per query.")
    delta = rules.privacy.selection_delta if delta is None else delta
    bounds = manifest.contribution_bounds
    rows, groups = bounds.max_rows_per_unit, bounds.max_groups_per_unit
    query = rewritten.checked
    grouped = bool(query.keys)
    threshold = max(rules.suppression_threshold, manifest.suppression_threshold or 0)
    limit = rules.limits.max_output_groups
    public = public_groups(rewritten, manifest, limit) if grouped else ((),)
    if public is None:
        sizes = [domain_size(key.expr, query, manifest, limit) for key in rewritten.plan.keys]
        if any(size is None for size in sizes) or math.prod(sizes) > limit:  # type: ignore[arg-type]
            raise PlanError("unbounded_group_keys", "Keys without a public key set must each be a boolean or a "
                            "bounded integer column, with at most "
                            f"{limit} combinations; bucket others with CASE WHEN ... THEN 'label' (a CASE of "
                            "literals, or an expression of columns with public key sets, has a public key set).")

    distinct: dict[tuple[str, str], Measure] = {}
    weight: dict[str, float] = {}
    sources: dict[str, str] = {}
    for measure in rewritten.plan.measures:
        first = distinct.setdefault(_identity(measure), measure)
        sources[measure.name] = first.name
        weight[first.name] = max(weight.get(first.name, 0.0), _weight(measure, weights, rules, public is None))
    units = distinct[("count_units", "")]
    total_weight = sum(weight.values())

    quantities = []
    selection: int | None = None
    spent_delta = 0.0
    for measure in distinct.values():
        unit = SUM_UNIT if measure.function == "sum" else 1
        share = epsilon * weight[measure.name] / total_weight
        d_in = sensitivity(measure.function, measure.bounds, rows, groups, grouped, measure.centre)
        if measure is units and public is None:
            scale, selection, spent, spent_delta = noise.threshold_for(d_in, share, delta, threshold)
            mechanism = "laplace_threshold"
        else:
            scale, spent = noise.scale_for(d_in, share)
            mechanism = "discrete_laplace"
        quantities.append(Quantity(measure.name, measure.function, unit, mechanism, d_in / unit, scale, spent,
                                   noise.accuracy(scale, rules.privacy.alpha) / unit, measure.centre,
                                   weight[measure.name], measure.edges))
    total = sum(q.epsilon for q in quantities)
    if total > epsilon * (1 + 1e-9):
        raise PlanError("epsilon_out_of_range", "The mechanisms would spend more than the ε asked for.")
    return PrivacyPlan(epsilon, spent_delta, rules.privacy.alpha, tuple(quantities), sources, public, selection,
                       threshold, dict(sorted(weights.items())))


TARGETED = ("count", "count_distinct_unit", "sum")  # outputs released from one quantity: exact half-widths


@dataclass(frozen=True)
class AccuracyMet:
    """A researcher's accuracy target for an output column and the half-width the plan gives it."""

    column: str
    target: float
    accuracy: float


def accuracy_met(plan: PrivacyPlan, targets: Mapping[str, float]) -> tuple[AccuracyMet, ...]:
    """Each target with the half-width of its column's 1 - alpha interval under `plan`."""
    return tuple(AccuracyMet(column, target, plan.quantity(column).accuracy) for column, target in targets.items())


def plan_for_accuracy(rewritten: RewrittenQuery, manifest: Manifest, rules: Rules, targets: Mapping[str, float],
                      delta: float | None = None, weights: Mapping[str, float] | None = None) -> PrivacyPlan:
    """The plan at the least ε whose interval for each targeted output column is at most its target
    half-width (see the module docstring), split by `weights` as `plan_privacy` splits it."""
    if not targets:
        raise PlanError("invalid_accuracy_target", "Name at least one output column and its target half-width.")
    _unknown(targets, rewritten, "An accuracy target")
    functions = _outputs(rewritten)
    for column, target in targets.items():
        if functions[column] not in TARGETED:
            raise PlanError("invalid_accuracy_target", f"{column!r} is a {functions[column]}: only a COUNT, "
                            "COUNT(DISTINCT) or SUM output takes an accuracy target (a mean's interval depends on "
                            "its group's count); give ε, or weights, instead.")
        if not 0 < target < math.inf:
            raise PlanError("invalid_accuracy_target", f"The target of {column!r} must be a finite number above 0.")
    # Sensitivities and weights do not depend on ε: read them from a plan at any ε.
    probe = plan_privacy(rewritten, manifest, rules, rules.privacy.max_epsilon, delta, weights)
    total_weight = sum(q.weight for q in probe.quantities)
    needed = 0.0
    for column, target in targets.items():
        quantity = probe.quantity(column)
        scale = dp.accuracy_to_discrete_laplacian_scale(target * quantity.unit, probe.alpha)
        needed = max(needed, quantity.sensitivity * quantity.unit / scale * total_weight / quantity.weight)
    while True:  # OpenDP rounds a scale up until its map accepts it, which can widen an interval by a hair
        if needed > rules.privacy.max_epsilon:
            raise PlanError("accuracy_unreachable", f"These accuracy targets need ε = {needed:.6g}, above the "
                            f"rules' {rules.privacy.max_epsilon:g} per query: loosen a target, or weight its column "
                            "more.")
        plan = plan_privacy(rewritten, manifest, rules, needed, delta, weights)
        if all(met.accuracy <= met.target for met in accuracy_met(plan, targets)):
            return replace(plan, targets=dict(targets))
        needed *= 1 + 1e-12


def plan_request(rewritten: RewrittenQuery, manifest: Manifest, rules: Rules, epsilon: float | None,
                 weights: Mapping[str, float] | None = None,
                 accuracy: Mapping[str, float] | None = None) -> PrivacyPlan:
    """The plan of a request as a researcher gives it: at an ε (or the rules' default), or at the least ε
    that meets its accuracy targets; never both, since either alone fixes the cost."""
    if accuracy is None:
        return plan_privacy(rewritten, manifest, rules, epsilon, weights=weights)
    if epsilon is not None:
        raise PlanError("epsilon_and_accuracy", "Give ε or accuracy targets, not both: the targets decide the ε.")
    return plan_for_accuracy(rewritten, manifest, rules, accuracy, weights=weights)
