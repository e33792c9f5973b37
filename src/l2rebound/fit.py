"""The power law ℓ₂ ≈ c·σ^k of the noise experiment, and which levels may enter its fit."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from l2rebound.kinds.noise.result import NoiseResult

STALLED_LIMIT = 0.01
"""A level can be at the precision floor only when more than this fraction of its parameter steps were rounded
away (on average over epochs and runs); it is when, besides, the steps lost can matter (``DRIFT_LIMIT``)."""
DRIFT_LIMIT = 0.5
"""... that is, when ``rounding_drift``, how far the lost steps can have moved the student, exceeds this
fraction of the level's mean ℓ₂."""
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


def rounding_drift(result: NoiseResult) -> np.ndarray:
    """(S,) How far, at most about, the steps rounded away at each level can have moved the students:
    E·(ε/2)·√s·‖θ_t‖, with s the level's stalled fraction (``metrics["stalled"]``, mean over runs).

    A step is rounded away when it is below half a unit in the last place of its parameter, so it loses
    less than ε·|θ_i|/2. The parameters that stall are largely the same ones epoch after epoch, and their
    steps along the loss's flat directions keep their sign, so the losses add up over the E epochs; a
    fraction s of the parameters, of typical size, has norm √s·‖θ_t‖. The count alone says nothing of
    this: in float32 at σ = 1 a few percent of the steps stall (weights of hidden units whose output
    weight is near 0, whose gradient is near 0 for that reason), and they lose nothing that shows.
    The estimate is high (by 1–20 times, most where s is large), but it ranks levels as their error does:
    measured against float64 training on the same data (preset C and smaller set-ups), where the drift was
    below half of ℓ₂ the float32 ℓ₂ was within 0.2% of the float64 one; near ℓ₂, up to 2% off; from 3·ℓ₂
    on, 3–10% off and more."""
    eps = np.finfo(result.config.dtype).eps
    with np.errstate(invalid="ignore"):
        stalled = np.nanmean(result.metrics["stalled"], axis=1)
    return result.config.epochs * eps / 2 * np.sqrt(stalled) * np.linalg.norm(result.teacher)


def precision_floor(result: NoiseResult) -> np.ndarray:
    """(S,) True where a level's distances are at floating-point noise: its mean ℓ₂ is within ``FLOOR_ULPS``
    epsilons of ‖θ_t‖, or more than ``STALLED_LIMIT`` of its steps were rounded away and
    ``rounding_drift`` exceeds ``DRIFT_LIMIT``·ℓ₂ (mean ℓ₂ over runs)."""
    eps = np.finfo(result.config.dtype).eps
    with np.errstate(invalid="ignore"):
        mean_l2 = np.nanmean(result.metrics["l2"], axis=1)
        stalled = np.nanmean(result.metrics["stalled"], axis=1)
        lost = (stalled > STALLED_LIMIT) & (rounding_drift(result) > DRIFT_LIMIT * mean_l2)
    return (mean_l2 <= FLOOR_ULPS * eps * np.linalg.norm(result.teacher)) | lost


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


def fit_or_none(result: NoiseResult, squared: bool = False) -> PowerLaw | None:
    """``fit_power_law``, or None where too few levels lie above the precision floor."""
    try:
        return fit_power_law(result, squared)
    except ValueError:
        return None


def exponent(fit: PowerLaw) -> str:
    """``k ± half-width (95% CI [low, high])`` with as many digits as the interval needs."""
    half = (fit.k_high - fit.k_low) / 2
    digits = max(2, min(8, 1 - int(np.floor(np.log10(half))) if half > 0 else 8))
    return f"{fit.k:.{digits}f} ± {half:.1g} (95% CI [{fit.k_low:.{digits}f}, {fit.k_high:.{digits}f}])"
