"""The compression procedure's figures: test loss against α as median and interquartile range, and the pruned
students of the best α as node-link diagrams aligned to their teacher (matplotlib).

``alpha_figure`` has two panels: the authors' view (the lowest test loss at a validation turning point, which
chooses its epoch on the test set) and an honest one (the test loss of the student that validation alone chose,
and its clean-label loss, the distance in function space). The α = 0 run of the same procedure is the baseline,
a dashed line. ``alpha_axes`` draws one metric onto given axes, so that a figure can compare procedures.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure

from l2rebound.diagrams import network_figure
from l2rebound.kinds.procedure.result import ProcedureResult
from l2rebound.plots import DPI, subtitle

LABELS = {"authors_test_loss": "authors' test loss\n(lowest at a validation turning point: selected on test)",
          "test_loss": "test loss of the validation-chosen student", "clean_test_loss": "clean-label test loss"}


def figures(result: ProcedureResult, squared: bool = False) -> dict[str, Figure]:
    """Test loss against α, and the networks of the best α."""
    return {"alpha": alpha_figure(result), "networks": networks_figure(result)}


def alpha_axes(ax, result: ProcedureResult, metric: str, label: str | None = None, colour=None) -> None:
    """Median (line and points) and interquartile range (band) of ``metric`` per α on ``ax``, log-scaled, with
    the α = 0 median as a dashed baseline where the grid holds α = 0."""
    t = result.per_alpha()
    alphas = t["alpha"]
    if not np.isfinite(t[metric]).any():  # every run diverged: nothing to draw on a log scale
        return
    line, = ax.plot(alphas, t[metric], "o-", color=colour, label=label or result.config.train)
    ax.fill_between(alphas, t[f"{metric}_q1"], t[f"{metric}_q3"], color=line.get_color(), alpha=0.25, lw=0)
    if np.any(alphas == 0):
        ax.axhline(t[metric][alphas == 0][0], color=line.get_color(), ls="--", lw=1)
    ax.set_yscale("log")
    positive = alphas[alphas > 0]
    if len(positive) > 1 and positive.max() > 10 * positive.min():
        # the small strengths, where the effects are, would crowd at the left of a linear axis
        ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
        decades = range(int(np.ceil(np.log10(positive.min()))), int(np.floor(np.log10(positive.max()))) + 1)
        ax.set_xticks([0.0, *(10.0**k for k in decades)])
    ax.set_xlabel("α (per training sample)" if result.config.alpha_scale == "per-sample" else "α")


def alpha_figure(result: ProcedureResult) -> Figure:
    """Two panels against α: the authors' metric, and the validation-chosen student's test and clean losses;
    median and interquartile range over the repetitions, the α = 0 baseline dashed."""
    fig = Figure(figsize=(11, 4.4), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    alpha_axes(left, result, "authors_test_loss", "median, IQR")
    left.set_title("the authors' view", fontsize=10)
    left.set_ylabel(LABELS["authors_test_loss"], fontsize=8)
    alpha_axes(right, result, "test_loss", "test loss (validation-chosen)", "tab:green")
    alpha_axes(right, result, "clean_test_loss", "clean-label test loss", "tab:purple")
    right.set_title("chosen by validation alone", fontsize=10)
    right.set_ylabel("test loss")
    noise = result.config.noise_sigma ** 2
    right.axhline(noise, color="grey", ls=":", lw=1, label=f"noise floor σ² = {noise:.3g}")
    for ax in (left, right):
        ax.legend(fontsize=8)
    fig.suptitle(f"compression procedure ({result.config.train}): test loss against α\n{subtitle(result)}",
                 fontsize=10)
    return fig


def best_alpha(result: ProcedureResult) -> float:
    """The α with the lowest median validation-chosen test loss."""
    t = result.per_alpha()
    return float(t["alpha"][np.nanargmin(t["test_loss"])])


def networks_figure(result: ProcedureResult, panels: int = 3) -> Figure:
    """The teacher and the first ``panels`` finished pruned students of the best α (``best_alpha``), each
    relabelled onto the teacher by its certified alignment."""
    config, m = result.config, result.metrics
    alpha = best_alpha(result)
    rows = np.flatnonzero((m["alpha"] == alpha) & (m["diverged"] == 0))[:panels]
    dims = config.student_dims
    drawn = [("teacher", result.params["teacher"], dims)]
    drawn += [(f"α = {alpha:g}, repetition {m['repetition'][r]}: {m['nonzero'][r]} non-zero",
               result.params["aligned"][r], dims) for r in rows]
    return network_figure(drawn, title=f"pruned students of the best α ({alpha:g}) aligned to their teacher")


def comparison_figure(results: list[ProcedureResult]) -> Figure:
    """The procedures of ``results`` (one per rule, same grid) side by side against α: the authors' test loss,
    the validation-chosen test loss, the clean-label loss and the non-zero parameters after pruning (the
    teacher's count dotted); median and interquartile range, each α = 0 baseline dashed."""
    fig = Figure(figsize=(11, 8), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    metrics = ("authors_test_loss", "test_loss", "clean_test_loss", "nonzero")
    titles = ("the authors' view: lowest test loss at a validation turning point (selected on test)",
              "test loss of the validation-chosen student", "clean-label test loss (no noise floor)",
              "non-zero parameters after pruning")
    for ax, metric, title in zip(axes, metrics, titles):
        for result, colour in zip(results, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
            alpha_axes(ax, result, metric, result.config.train, colour)
        ax.set_title(title, fontsize=9)
    axes[1].axhline(results[0].config.noise_sigma ** 2, color="grey", ls=":", lw=1, label="noise floor σ²")
    axes[3].axhline(np.count_nonzero(results[0].params["teacher"]), color="grey", ls=":", lw=1, label="teacher")
    for ax in axes:
        ax.legend(fontsize=8)
    rules = ", ".join(result.config.train for result in results)
    setup = textwrap.fill(results[0].config.describe(skip=("runs", "train")), 110)
    fig.suptitle(f"compression procedures ({rules}) against α: median and interquartile range over "
                 f"{results[0].config.runs} repetitions\n{setup}", fontsize=10)
    return fig
