"""OpenDP measurements: the only source of noise in the enclave.

Each noised quantity (a vector of per-group counts, or of sums in integer millionths) gets an OpenDP
Laplace measurement over 64-bit integers with the L1 metric, which samples the discrete Laplace exactly:
no floating-point noise, so no floating-point attack on it. The ε a quantity costs is read from the
measurement's own privacy map at the sensitivity (`measurement.map(d_in)`), never assumed.
Groups without a public key set go through OpenDP's Laplace threshold, whose map gives (ε, δ).
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


def selection_delta(scale: float, threshold: int, d_in: tuple[int, int, int]) -> float:
    """The δ of releasing keys with `threshold_measurement(scale, threshold)`, as it really releases.

    OpenDP 0.16's Laplace threshold keeps a key whose noisy count is at least the threshold, but its
    privacy map gives δ for a noisy count strictly above it (upstream issue opendp/opendp#2922): it
    understates δ (at the defaults 9.27e-8 for an exact 1.008e-7; by 40% at ε = 2). Keeping at ≥ T
    is keeping at > T - 1 on integers, so the δ of the rule used is OpenDP's own map at T - 1.
    """
    return threshold_measurement(scale, threshold - 1).map(d_in)[1]


def threshold_for(groups: int, epsilon: float, delta: float, floor: int) -> tuple[float, int, float, float]:
    """Scale and threshold for selecting groups by their noisy count of persons.

    A person changes at most `groups` counts, each by at most 1. Returns (scale, threshold, ε, δ) with
    the smallest threshold, not below `floor`, whose δ (`selection_delta`, for the rule OpenDP applies)
    is within `delta`.
    """
    d_in = (groups, groups, 1)
    scale = groups / epsilon
    low, high = floor, floor
    while selection_delta(scale, high, d_in) > delta:
        low, high = high, high * 2
    while low < high:
        middle = (low + high) // 2
        if selection_delta(scale, middle, d_in) > delta:
            low = middle + 1
        else:
            high = middle
    spent_epsilon = threshold_measurement(scale, high).map(d_in)[0]
    return scale, high, spent_epsilon, selection_delta(scale, high, d_in)


def accuracy(scale: float, alpha: float) -> float:
    """Half-width of the (1 - alpha) interval of the noise, from OpenDP's accuracy function."""
    return dp.discrete_laplacian_scale_to_accuracy(scale, alpha)
