"""An empirical privacy audit of the enclave's OpenDP mechanisms, shared by the tests and bench/privacy_audit.py.

A mechanism M is (ε, δ)-DP when P(M(D) ∈ E) ≤ e^ε · P(M(D') ∈ E) + δ for every event E and neighbours D, D'.
The audit runs the real OpenDP measurement many times on D (with one person of the largest contribution
the manifest allows) and on D' (without), counts how often an event E happens on each side, and bounds ε
from below with 95% confidence: ε_lb = ln((p_low - δ) / q_high), p_low the lower Clopper-Pearson bound of
P(E | D) and q_high the upper bound of P(E | D'), each two-sided at 95% (so both hold together with at
least 90%, each one-sided at 97.5%). A mechanism that keeps its claim gives ε_lb ≤ ε except by chance.

The event: "at least `quorum` of the cells the person changes have a noisy value above the midpoint of
their two true values". With one changed cell (a COUNT(*) or a SUM, whose worst case puts all of a
person's rows in one group) that is one cell; with six (a count of persons, +1 in each of six groups)
it is five of six. The event that meets the claim exactly (all six cells, or a cell at or above the value
with the person) is so tight that a 95% bound exceeds the claim in a fraction of a percent of runs, a
test that fails by chance; the events here lose 10-30% of the claim and so never do, and still measure a
mechanism whose scale is halved (twice the ε claimed) above its claim at the trial counts used.

Trials are drawn in one OpenDP call per side: the measurements noise each element of a vector (each key
of a map) independently, so a vector of N copies of the changed cells is N independent releases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import beta

from enclave.disclosure import noise
from enclave.disclosure.plan import PrivacyPlan, Quantity

CONFIDENCE = 0.95
BASE = 1_000  # the true value of a changed cell without the person: any value works (noise is additive)


@dataclass(frozen=True)
class Audit:
    """One audit's counts and the ε they prove with 95% confidence (`-inf` when they prove nothing)."""

    name: str
    claimed_epsilon: float
    delta: float
    trials: int
    hits_with: int
    hits_without: int

    @property
    def epsilon_lower(self) -> float:
        return epsilon_lower_bound(self.hits_with, self.hits_without, self.trials, self.delta)

    @property
    def delta_lower(self) -> float:
        """The δ the counts prove at the claimed ε: p_low - e^ε · q_high (at most 0 proves nothing)."""
        p_low = clopper_pearson(self.hits_with, self.trials)[0]
        return p_low - math.exp(self.claimed_epsilon) * clopper_pearson(self.hits_without, self.trials)[1]


def clopper_pearson(hits: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a binomial proportion, from beta quantiles."""
    tail = (1 - confidence) / 2
    low = float(beta.ppf(tail, hits, trials - hits + 1)) if hits > 0 else 0.0
    high = float(beta.ppf(1 - tail, hits + 1, trials - hits)) if hits < trials else 1.0
    return low, high


def epsilon_lower_bound(hits_with: int, hits_without: int, trials: int, delta: float) -> float:
    """ε_lb = ln((p_low - δ) / q_high); `-inf` when p_low ≤ δ (the counts show no loss beyond δ)."""
    p_low = clopper_pearson(hits_with, trials)[0]
    q_high = clopper_pearson(hits_without, trials)[1]
    return math.log((p_low - delta) / q_high) if p_low > delta else -math.inf


def worst_change(quantity: Quantity) -> list[int]:
    """A maximal person's change to the quantity's noised integer cells (L1 norm = its sensitivity).

    COUNT(*) and SUM: all of the person's rows in one group, so one cell moves by the whole sensitivity
    (the rows, or the rows times the clamp bound, in `unit`s); a count of persons: +1 in each of the
    groups the person reaches.
    """
    total = round(quantity.sensitivity * quantity.unit)
    if quantity.function in ("count", "sum"):
        return [total]
    if quantity.function == "count_units":
        return [1] * total
    raise AssertionError(f"no worst-case neighbour known for a {quantity.function!r} quantity: add one here")


def quorum(changed: int) -> int:
    """How many changed cells must pass their midpoint: all of one, all but one of several."""
    return max(1, changed - 1)


def _hits(noisy: Sequence[int | None], change: Sequence[int], trials: int) -> int:
    """Trials in which at least `quorum` changed cells are above their midpoint (None: not released)."""
    width, need = len(change), quorum(len(change))
    hits = 0
    for trial in range(trials):
        cells = noisy[trial * width:(trial + 1) * width]
        passed = sum(1 for value, d in zip(cells, change, strict=True)
                     if value is not None and 2 * (value - BASE) > d)
        hits += passed >= need
    return hits


def audit_laplace(name: str, quantity: Quantity, trials: int, scale: float | None = None) -> Audit:
    """The discrete Laplace of a quantity (OpenDP's vector measurement) on its worst-case neighbours.

    `scale` replaces the quantity's noise scale, for the audit of a broken mechanism.
    """
    change = worst_change(quantity)
    measurement = noise.vector_laplace(quantity.noise_scale if scale is None else scale)
    without = measurement([BASE] * (len(change) * trials))
    with_person = measurement([BASE + d for d in change] * trials)
    return Audit(name, quantity.epsilon, 0.0, trials, _hits(with_person, change, trials),
                 _hits(without, change, trials))


def audit_threshold(name: str, plan: PrivacyPlan, quantity: Quantity, trials: int,
                    scale: float | None = None) -> Audit:
    """The Laplace threshold's noise on keys both sides have: the person adds 1 to each of G counts.

    The counts sit far above the threshold (40 scales), so the keys are released on both sides and the
    audit sees the ε of the noise; δ (the plan's) is subtracted as the bound requires.
    """
    change = worst_change(quantity)
    threshold = plan.selection_threshold
    assert threshold is not None, "a laplace_threshold quantity in a plan without a selection threshold"
    measurement = noise.threshold_measurement(quantity.noise_scale if scale is None else scale, threshold)
    base = threshold + math.ceil(40 * quantity.noise_scale)

    def release(extra: Sequence[int]) -> list[int | None]:
        keys = {f"{trial}/{cell}": base + d for trial in range(trials) for cell, d in enumerate(extra)}
        kept = measurement(keys)
        return [None if key not in kept else kept[key] - base + BASE for key in keys]

    return Audit(name, quantity.epsilon, plan.delta, trials, _hits(release(change), change, trials),
                 _hits(release([0] * len(change)), change, trials))


def audit_selection(name: str, quantity: Quantity, groups: int, threshold: int, trials: int) -> Audit:
    """The Laplace threshold's δ: a person adds `groups` keys of count 1 that D' does not have.

    The event is "one of the person's keys is released"; on D' it cannot happen (OpenDP releases only
    keys of its input), so the bound is ε_lb = ln((p_low - δ) / q_high) with q_high that of 0 in N trials,
    and it is finite only if the keys are released more often than δ allows. `threshold` is lower than
    a plan's (whose δ of 1e-7 no affordable trial count can see) so that δ is measurable; the δ claimed
    is the enclave's `selection_privacy` at that threshold.
    """
    measurement = noise.threshold_measurement(quantity.noise_scale, threshold)
    assert measurement({}) == {}
    kept = measurement({f"{trial}/{cell}": 1 for trial in range(trials) for cell in range(groups)})
    released = {key.split("/")[0] for key in kept}
    epsilon, delta = noise.selection_privacy(quantity.noise_scale, threshold, groups)
    return Audit(name, epsilon, delta, trials, len(released), 0)
