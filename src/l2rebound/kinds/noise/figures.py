"""The noise experiment's figure: ℓ₂ (or ℓ₂²) after training against σ on log–log axes, with the fitted power
law."""

from __future__ import annotations

import warnings

import numpy as np
from matplotlib.figure import Figure

from l2rebound.fit import exponent, fit_or_none, precision_floor
from l2rebound.kinds.noise.result import NoiseResult
from l2rebound.plots import L2, STYLE, against_noise, subtitle


def figures(result: NoiseResult, squared: bool = False) -> dict[str, Figure]:
    """``{"l2": figure}``: ℓ₂ (or ℓ₂²) after training against σ on log–log axes: the geometric mean over runs
    with the min–max band, the fitted power law with k and its 95% interval, and the levels left out of the fit
    (precision floor) in grey. The fit is of log ℓ₂ with one intercept per run, its c the geometric mean of
    theirs, so the curve it is drawn against is the geometric mean too (the arithmetic one lies above it)."""
    power = 2 if squared else 1
    name = f"{L2}²" if squared else L2
    finished = np.where(np.asarray(result.diverged_at) < 0, result.metrics["l2"] ** power, np.nan)
    if np.all(np.isnan(finished)):
        raise ValueError("every training diverged: nothing to plot")
    fit = fit_or_none(result, squared)
    floor = precision_floor(result)
    sigma = result.levels
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN levels stay NaN
        mean = np.exp(np.nanmean(np.log(finished), 1))  # ℓ₂ = 0 (σ = 0) gives 0, left out of the log axes
        low, high = np.nanmin(finished, 1), np.nanmax(finished, 1)
    shown = sigma > 0
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    colour = STYLE["l2"][1]
    ax.fill_between(sigma[shown], low[shown], high[shown], color=colour, alpha=0.2, lw=0, label="min–max over runs")
    ax.plot(sigma[shown], mean[shown], "-", color=colour, label=f"{name} after training (geometric mean, as the fit)")
    ax.plot(sigma[shown & ~floor], mean[shown & ~floor], "o", color=colour, ms=4)
    if np.any(floor & shown):
        ax.plot(sigma[floor & shown], mean[floor & shown], "o", mfc="none", color="gray", ms=6,
                label="at the precision floor (not fitted)")
    if fit is not None:
        line = sigma[fit.used]
        ax.plot(line, fit.c * line**fit.k, "k--", lw=1, label=f"fit {name} ≈ {fit.c:.3g}·σ^k, k = {exponent(fit)}")
    against_noise(ax, f"{name} after {result.config.epochs} epochs", subtitle(result))
    fig.suptitle(f"Distance to the teacher vs label noise, {result.config.runs} runs per level"
                 + ("" if fit else " (too few levels above the precision floor to fit)"))
    return {"l2": fig}
