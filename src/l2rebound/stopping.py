"""When a training phase stops: a loss curve's saturation, and the checks it is tested at.

A phase is checked every ``every`` epochs. At a check, the curve (one value per epoch) is *saturated* when
the mean of its last ``h`` values is not below the mean of the ``h`` before them by more than the smaller
scatter of the two halves about their own smoothed trends (plus ``deviation``), h = ceil(window / 2). The
trend of a half is its local-linear kernel regression (Epanechnikov kernel, bandwidth
n^(-1/5)·n^(-3/35)·log(n)^(-1/16) of the half's span, n = h), the smoother of DiffEqFlux's
``collocate_data``; the scatter is the sample standard deviation (n - 1) of the residuals. A curve that still
falls faster than its noise is not saturated; a flat or rising one is.

``smoother`` is NumPy; ``saturated`` is JAX array code, traced inside the training program.
"""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.cache
def smoother(n: int) -> np.ndarray:
    """(n, n) float64: row t gives the local-linear Epanechnikov estimate at point t of a curve sampled at
    1..n (the trend is ``smoother(n) @ values``). Needs n >= 3: with 2 points the bandwidth leaves each
    point alone in its kernel, and the local fit has no slope to estimate."""
    if n < 3:
        raise ValueError(f"a half window needs at least 3 points (got {n})")
    bandwidth = n ** (-1 / 5) * n ** (-3 / 35) * math.log(n) ** (-1 / 16)
    points = np.arange(1.0, n + 1)
    rows = []
    for t in points:
        u = (points - t) / (points[-1] - points[0]) / bandwidth
        weight = np.where(np.abs(u) > 1, 0.0, 0.75 * (1 - u**2)) / bandwidth
        design = np.stack([np.ones(n), points - t], axis=1)  # (n, 2): intercept and slope about t
        gram = design.T @ (weight[:, None] * design)
        rows.append(np.linalg.solve(gram, design.T * weight)[0])  # the intercept: the estimate at t
    return np.array(rows)


def saturated(recent, window: int, deviation: float = 1e-10):
    """Whether a curve is saturated, from its last values ``recent`` (..., k) with k >= 2·ceil(window/2),
    oldest first (only the last 2·ceil(window/2) are read). Returns a bool array (...)."""
    import jax.numpy as jnp

    h = -(-window // 2)
    recent = jnp.asarray(recent)
    first, second = recent[..., -2 * h:-h], recent[..., -h:]
    s = jnp.asarray(smoother(h), recent.dtype)

    def scatter(half):
        return jnp.std(half - half @ s.T, axis=-1, ddof=1)

    drop = jnp.mean(first, axis=-1) - jnp.mean(second, axis=-1)
    return drop <= jnp.minimum(scatter(first), scatter(second)) + deviation
