"""OpenDP measurements: the only source of noise in the enclave.

Each noised quantity (a vector of per-group counts, or of sums in integer millionths) gets an OpenDP
Laplace measurement over 64-bit integers with the L1 metric, which samples the discrete Laplace exactly:
no floating-point noise, so no floating-point attack on it. The ε a quantity costs is read from the
measurement's own privacy map at the sensitivity (`measurement.map(d_in)`), never assumed.
Groups without a public key set go through OpenDP's Laplace threshold; its (ε, δ) is read from OpenDP's
map at the threshold below the one applied, for the rule OpenDP really applies (`selection_privacy`).
Scales, thresholds and accuracies are pure functions of their arguments, so each is asked of OpenDP once
per process (a privacy map call takes Python's import lock, so threads would queue on it per query).
"""

from __future__ import annotations

import math
from functools import lru_cache

import opendp.prelude as dp

dp.enable_features("contrib")

INTEGER = "i64"


@lru_cache(maxsize=1024)
def vector_laplace(scale: float) -> dp.Measurement:
    """Discrete Laplace noise on each element of a vector of 64-bit integers."""
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=INTEGER)), dp.l1_distance(T=INTEGER), scale)


@lru_cache(maxsize=4096)
def scale_for(sensitivity: int, epsilon: float) -> tuple[float, float]:
    """The smallest scale whose OpenDP privacy map at `sensitivity` is within `epsilon`, and that ε."""
    scale = sensitivity / epsilon
    for _ in range(8):  # the map rounds up: step the scale up by the least amount until OpenDP accepts it
        spent = vector_laplace(scale).map(sensitivity)
        if spent <= epsilon:
            return scale, spent
        scale = math.nextafter(scale, math.inf)
    scale = dp.binary_search_param(vector_laplace, d_in=sensitivity, d_out=epsilon)
    return scale, vector_laplace(scale).map(sensitivity)


@lru_cache(maxsize=1024)
def threshold_measurement(scale: float, threshold: int) -> dp.Measurement:
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=INTEGER))
    metric = dp.l01inf_distance(dp.absolute_distance(T=INTEGER))
    return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)


def selection_privacy(scale: float, threshold: int, groups: int) -> tuple[float, float]:
    """(ε, δ) of selecting keys with `threshold_measurement(scale, threshold)`, as OpenDP applies it.

    OpenDP 0.16's `make_laplace_threshold` keeps a key whose noisy count is at least `threshold`, but its
    privacy map gives δ for keeping it only when the noisy count is strictly above (open upstream issue
    opendp/opendp#2922): for a person who adds one key of count 1, the map gives P(Z >= T) = p^T / (1 + p)
    where the rule releases with P(Z >= T - 1) = p^(T-1) / (1 + p), p = e^(-1/scale), an under-charge by a
    factor 1/p (18% at ε = 2 for a COUNT by a measure, 40% when the count of persons is
    the only quantity). Keeping at >= T is exactly keeping at > T - 1, so the rule as applied
    is what OpenDP's own map describes at T - 1: read (ε, δ) there, for a person who changes `groups`
    counts by at most 1 each. The noise stays OpenDP's, drawn by the measurement at T.
    """
    return threshold_measurement(scale, threshold - 1).map((groups, groups, 1))


@lru_cache(maxsize=4096)
def threshold_for(groups: int, epsilon: float, delta: float, floor: int) -> tuple[float, int, float, float]:
    """Scale and threshold for selecting groups by their noisy count of persons.

    A person changes at most `groups` counts, each by at most 1. Returns (scale, threshold, ε, δ) with
    the smallest threshold, not below `floor`, whose δ (by `selection_privacy`) is within `delta`.
    """
    scale = groups / epsilon

    def over(threshold: int) -> bool:
        return selection_privacy(scale, threshold, groups)[1] > delta

    low, high = floor, floor
    while over(high):
        low, high = high, high * 2
    while low < high:
        middle = (low + high) // 2
        if over(middle):
            low = middle + 1
        else:
            high = middle
    spent_epsilon, spent_delta = selection_privacy(scale, high, groups)
    return scale, high, spent_epsilon, spent_delta


@lru_cache(maxsize=4096)
def accuracy(scale: float, alpha: float) -> float:
    """Half-width of the (1 - alpha) interval of the noise, from OpenDP's accuracy function."""
    return dp.discrete_laplacian_scale_to_accuracy(scale, alpha)
