"""The power law ℓ₂ ≈ c·σ^k of the noise experiment, and which levels may enter its fit."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from l2rebound.results import NoiseResult

STALLED_LIMIT = 0.01
"""A level is at the precision floor when more than this fraction of its parameter steps were rounded
away (on average over epochs and runs)."""
FLOOR_ULPS = 10
"""... or when its mean ℓ₂ is within this many epsilons of the teacher's norm (rounding noise)."""


class PowerLaw(NamedTuple):
    """Fit of log ℓ₂ = log c_r + k·log σ with one intercept per run (common random numbers make the
    runs' curves parallel) and a common exponent k; ``k_low``/``k_high`` bound its 95% confidence
    interval; ``c`` is the geometric mean of the runs' c_r; ``used`` (S,) marks the levels in the fit."""

    k: float
    k_low: float
    k_high: float
    c: float
    used: np.ndarray


def precision_floor(result: NoiseResult) -> np.ndarray:
    """(S,) True where a level's distances are at floating-point noise (see ``STALLED_LIMIT``, ``FLOOR_ULPS``)."""
    eps = np.finfo(result.config.dtype).eps
    with np.errstate(invalid="ignore"):
        mean_l2 = np.nanmean(result.metrics["l2"], axis=1)
        stalled = np.nanmean(result.metrics["stalled"], axis=1)
    return (mean_l2 <= FLOOR_ULPS * eps * np.linalg.norm(result.teacher)) | (stalled > STALLED_LIMIT)


def fit_power_law(result: NoiseResult, squared: bool = False) -> PowerLaw:
    """Fit ℓ₂ (or ℓ₂² with ``squared``) against σ over the levels that are not at the precision floor,
    using every finished run with a positive distance."""
    from scipy import special  # here: the CLI imports this module for --help too

    y = result.metrics["l2"] ** (2 if squared else 1)
    used = ~precision_floor(result) & (result.levels > 0)
    x = np.log(np.broadcast_to(np.where(used, result.levels, 1.0)[:, None], y.shape))
    ok = used[:, None] & (result.diverged_at < 0) & (y > 0)
    ok &= ok.sum(axis=0, keepdims=True) >= 2  # a run needs two levels to say anything about the slope
    if ok.sum() - ok.any(axis=0).sum() < 2:
        raise ValueError("too few levels above the precision floor to fit a power law (need 2 per run and 3 points)")
    cols = np.flatnonzero(ok.any(axis=0))
    xs, ys = [x[ok[:, r], r] for r in cols], [np.log(y[ok[:, r], r]) for r in cols]
    xc = np.concatenate([v - v.mean() for v in xs])
    yc = np.concatenate([v - v.mean() for v in ys])
    k = float(xc @ yc / (xc @ xc))
    dof = len(xc) - len(cols) - 1
    resid = yc - k * xc
    half = special.stdtrit(dof, 0.975) * np.sqrt(resid @ resid / dof / (xc @ xc)) if dof > 0 else np.inf
    log_c = np.mean([ym.mean() - k * xm.mean() for xm, ym in zip(xs, ys)])
    return PowerLaw(k, k - half, k + half, float(np.exp(log_c)), used & ok.any(axis=1))
