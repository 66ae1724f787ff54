"""Intervals of statistics computed from several noisy quantities (a mean, a variance, a ratio), by
simulation from the released values alone.

A count or a sum is one noisy quantity: its interval is OpenDP's accuracy of that noise, exactly. A
statistic of several (a mean is a noisy sum over a noisy count) has no closed form worth trusting, and a
union bound over its parts (each at alpha / 2) is valid but about twice too wide. Here each noisy quantity
of the group is noised again, `draws` times, with the distribution its release was noised with (the
discrete Laplace at the same scale), the statistic is recomputed from each replicate, and the interval is
the basic bootstrap one: [2·v - q(1 - alpha/2), 2·v - q(alpha/2)] of the replicates q around the released
value v. The replicates' spread around v stands for the release's spread around the truth.

This is post-processing: it reads only released values and fresh randomness, never a true value, so it
costs no privacy. The replicate noise is numpy's (exact discrete Laplace, as the difference of two
geometric draws); it never reaches a released number, only the width of an interval, so it is not a
privacy mechanism and needs none of OpenDP's guarantees. Coverage is measured, not assumed
(tests/disclosure/test_coverage.py, bench/utility.py).
"""

from __future__ import annotations

import math

import numpy as np

# Replicates per group, fewer for many groups so a release's work stays bounded (draws x groups cells).
MAX_DRAWS = 2000
MIN_DRAWS = 200
CELLS = 2_000_000


def draws_for(groups: int) -> int:
    """How many replicates a release of `groups` groups simulates: a function of its shape only."""
    return max(MIN_DRAWS, min(MAX_DRAWS, CELLS // max(groups, 1)))


def replicates(noisy: np.ndarray, noise_scale: float, draws: int) -> np.ndarray:
    """`draws` rows of `noisy` (integers) each noised again with a discrete Laplace at `noise_scale`."""
    rng = np.random.default_rng()
    p = -math.expm1(-1.0 / noise_scale)  # P(stop) of each geometric draw; their difference is the noise
    shape = (draws, len(noisy))
    return noisy[np.newaxis, :] + (rng.geometric(p, shape) - rng.geometric(p, shape))


def interval(value: float, draws: np.ndarray, alpha: float, low: float = -math.inf,
             high: float = math.inf) -> tuple[float, float] | None:
    """The basic bootstrap interval of `value` from its replicates (NaN: no estimate), within [low, high].

    None when the value has no estimate or more than alpha of its replicates have none: then the
    simulation cannot say where 1 - alpha of the releases would fall.
    """
    finite = draws[np.isfinite(draws)]
    if not math.isfinite(value) or len(finite) < (1 - alpha) * len(draws):
        return None
    below, above = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return (min(max(2 * value - float(above), low), high), min(max(2 * value - float(below), low), high))
