"""The epoch experiment's figures: ℓ₂ over epochs above, the losses below, in two views: the original figures'
normalised one (each run's curve scaled to [0, 1], then averaged over runs) and an absolute one (means with
min–max bands over runs, log axes)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from l2rebound.kinds.epoch.result import EpochResult, normal_form_uninformative
from l2rebound.plots import L2, STYLE, normalise, subtitle
from l2rebound.results import finished_metrics, proven_optimal


def figures(result: EpochResult, squared: bool = False) -> dict[str, Figure]:
    """The absolute and the normalised view of ``result``. The upper panel holds ℓ₂ (ℓ₂² with
    ``squared``, the original figures' quantity) and, where recorded, the aligned ℓ₂ (markers at the kept
    epochs); the absolute view also the
    normal-form ℓ₂ unless it is never below the raw ℓ₂ (then the normal form is uninformative; it stays in
    the table), and the mean certified lower bound on the aligned ℓ₂ at the epochs where some run's search
    did not prove its aligned ℓ₂ optimal (elsewhere the two coincide)."""
    metrics, _ = finished_metrics(result)
    unproven = np.zeros(metrics["l2"].shape[1], bool)  # epochs where some run's lower bound is below
    if "l2_aligned_lower" in metrics:  # results built by hand may lack it
        upper, lower = metrics["l2_aligned"], metrics["l2_aligned_lower"]
        unproven = np.any(np.isfinite(upper) & np.isfinite(lower) & ~proven_optimal(upper, lower), axis=0)
    if squared:
        metrics = {k: v**2 if k.startswith("l2") else v for k, v in metrics.items()}
    runs = len(metrics["l2"])
    note = subtitle(result)
    recorded = [k for k in STYLE if k in metrics and np.any(np.isfinite(metrics[k]))]  # may not be recorded
    if "l2_aligned_lower" in recorded and not unproven.any():
        recorded.remove("l2_aligned_lower")  # every aligned ℓ₂ is the proven minimum: one curve says it
    if "l2_normal_form" in recorded and normal_form_uninformative(metrics):
        recorded.remove("l2_normal_form")  # drawn, it would only squash the other curves
    normalised = {k: (normalise(metrics[k]).mean(axis=0), None, None)
                  for k in ("l2", "l2_aligned", "train_loss", "test_loss") if k in recorded}
    absolute = {k: (metrics[k].mean(axis=0), metrics[k].min(axis=0), metrics[k].max(axis=0)) for k in recorded}
    if "l2_aligned_lower" in absolute:  # no band: the aligned distance's bars already span the runs
        absolute["l2_aligned_lower"] = (np.where(unproven, absolute["l2_aligned_lower"][0], np.nan), None, None)
    power = "²" if squared else ""
    minima = metrics["l2"].argmin(axis=1)  # each run's own; squaring or normalising a run keeps its minimum
    return {
        "absolute": two_panels(absolute, f"Mean over {runs} runs, band: min–max over runs", note, "", log=True,
                               power=power, run_minima=minima),
        "normalised": two_panels(
            normalised, f"Each run's curve normalised to [0, 1] (its min to its max), then averaged over {runs} runs",
            note, " (normalised)", log=False, power=power, run_minima=minima),
    }


MARKERS = {"l2_aligned": ("o", 3), "l2_aligned_lower": ("_", 7), "l2_normal_form": ("s", 3)}
"""Marker and size of the distances recorded at the kept epochs only: drawn where they were computed, never
joined (a line between kept epochs would pass above the raw ℓ₂, which bounds them at every epoch)."""


def two_panels(series: dict, title: str, note: str, scale: str, log: bool, power: str = "",
               run_minima=None) -> Figure:
    """ℓ₂ over epochs above, losses below, sharing the epoch axis.

    series: metric name (a key of ``STYLE``) -> (centre, low, high), arrays (E + 1,); low and high
    bound a shaded band, or are None for none. Only the epochs where the centre is finite are drawn: the
    curves of every epoch as lines, the distances of ``MARKERS`` (recorded every ``align_every`` epochs) as
    markers at those epochs, their band as a bar at each. The minimum of the ℓ₂ centre curve is marked, and
    its legend tells it from ``run_minima`` (R,), the epochs of each run's own minimum (their mean ± std).
    title, note: figure title and the small subtitle line; scale: appended to the y labels.
    log: log y-axes, with non-positive values masked (left out) rather than clipped; an axis with no
    positive value at all (an exact start trained 0 epochs) stays linear.
    power: "²" when the distances are squared (labels say ℓ₂²).
    """
    def shown(curve):
        return np.where(curve > 0, curve, np.nan) if log and curve is not None else curve

    fig = Figure(figsize=(8, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    positive = set()  # the axes that got a value > 0: only those can be log-scaled
    for name, (centre, low, high) in series.items():
        ax = top if name.startswith("l2") else bottom
        label, colour, style = STYLE[name]
        label = label.replace(L2, L2 + power, 1) if name.startswith("l2") else label
        at = np.flatnonzero(np.isfinite(centre))
        if np.any(centre[at] > 0):
            positive.add(ax)
        if name in MARKERS:
            marker, size = MARKERS[name]
            ax.plot(at, shown(centre[at]), marker, ls="none", color=colour, ms=size, mfc="none", label=label)
            if low is not None:
                ax.vlines(at, shown(low[at]), shown(high[at]), color=colour, alpha=0.35, lw=1)
            continue
        ax.plot(at, shown(centre[at]), color=colour, ls=style, label=label)
        if low is not None:
            ax.fill_between(at, shown(low[at]), shown(high[at]), color=colour, alpha=0.2, lw=0)
    l2 = series["l2"][0]
    best = int(np.argmin(l2))
    mean_curve = f"the mean{' normalised' if scale else ''} {L2}{power} curve"
    own = "" if run_minima is None else (f"; each run's own minimum: epoch {np.mean(run_minima):.1f} ± "
                                          f"{np.std(run_minima):.1f}")
    top.plot([best], shown(l2[best : best + 1]), "o:", color="k", mfc=STYLE["l2"][1], lw=0.8,
             label=f"minimum of {mean_curve}: epoch {best}{own}")
    for ax in (top, bottom):
        ax.axvline(best, color="k", ls=":", lw=0.8)
        ax.set_yscale("log" if log and ax in positive else "linear")
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
    top.set_ylabel(L2 + power + scale)
    bottom.set_ylabel("Loss" + scale)
    bottom.set_xlabel("Epoch")
    fig.suptitle(title)
    top.set_title(note, fontsize="small")
    return fig
