"""What every kind's figures share: styles, the subtitle, per-run normalisation, axes against σ, and writing a
result's figures as SVG and PNG; and the linear-response theory beside a result (figure and text).

A kind's own figures live in its folder (``l2rebound.kinds.<name>.figures``). They use only the runs that
finished (``diverged_at == -1``); diverged runs are named, and if none finished they raise ``ValueError``.
"""

from __future__ import annotations

import io
import pathlib
import textwrap
import warnings

import numpy as np
from matplotlib.figure import Figure

from l2rebound.results import L2, Result
from l2rebound.store import write_atomic

STYLE = {  # metric -> (legend label, colour, line style); distances go in the upper panel, losses below
    "l2": (f"{L2}(teacher - student)", "tab:orange", "-"),
    "l2_aligned": (f"{L2} aligned: min over hidden-unit permutations and sign flips", "tab:green", "--"),
    "l2_aligned_lower": (f"certified lower bound on the min (drawn where below {L2} aligned)", "tab:green", "-"),
    "l2_normal_form": (f"{L2} between normal forms", "tab:purple", ":"),
    "train_loss": ("Train loss", "tab:red", "-"),
    "test_loss": ("Test loss", "tab:blue", "-"),
    "clean_test_loss": ("Clean test loss (vs. teacher)", "dimgray", "--"),
}
DPI = 150


def normalise(x: np.ndarray) -> np.ndarray:
    """Scale each row of ``x`` (R, T) to [0, 1] by the min and max of its finite values; a constant row
    becomes 0, NaN entries stay NaN."""
    low = np.nanmin(x, axis=1, keepdims=True)
    span = np.nanmax(x, axis=1, keepdims=True) - low
    return np.divide(x - low, span, out=np.where(np.isnan(x), np.nan, 0.0), where=span > 0)


def subtitle(result: Result) -> str:
    """Non-default parameters as ``k=v`` (or "defaults"), the number of runs and how many diverged."""
    runs = result.config.runs
    total = np.size(result.diverged_at)
    diverged = int(np.sum(np.asarray(result.diverged_at) != -1))
    text = result.config.describe(skip=("runs",)) + f"; {runs} runs"
    if diverged:
        text += f" ({diverged} of {total} {'runs' if total == runs else 'trainings'} diverged, not shown)"
    return textwrap.fill(text, 110)


def write_figures(result: Result, folder: pathlib.Path, squared: bool = False) -> list[pathlib.Path]:
    """Write each of ``result``'s figures as ``{figure_stem}_{suffix}.svg`` and ``.png`` into ``folder``
    (created if missing); returns the paths."""
    stem = result.config.figure_stem()
    return [path for view, fig in result.figures(squared).items()
            for path in write_figure(fig, pathlib.Path(folder) / f"{stem}_{result.file_suffix(view, squared)}")]


def write_figure(fig: Figure, stem: pathlib.Path) -> list[pathlib.Path]:
    """Write ``fig`` as ``{stem}.svg`` and ``{stem}.png`` (atomically; the folder is created if missing)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("svg", "png"):
        paths.append(stem.with_name(f"{stem.name}.{suffix}"))
        write_atomic(paths[-1], lambda tmp, suffix=suffix: fig.savefig(tmp, format=suffix, dpi=DPI))
    return paths


def warm_up() -> None:
    """Do the one-off work of a process's first figure (matplotlib's fonts and its math-text parser, which
    draws log-axis tick labels; both backends) on a throw-away figure, so that a caller can do it ahead, e.g.
    in a thread while the engine trains."""
    fig = Figure(figsize=(1, 1), layout="constrained")
    ax = fig.subplots()
    ax.semilogy([1, 2], [1e-3, 1e3], label=L2)
    ax.legend()
    for suffix in ("svg", "png"):
        fig.savefig(io.BytesIO(), format=suffix, dpi=DPI)


def against_noise(ax, ylabel: str, title: str) -> None:
    """Finish axes that show a distance against the noise level σ: log–log, a grid, the legend top left."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("σ (label noise)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title(title, fontsize="small")


def _spectrum_panel(ax, analysis: dict, config) -> None:
    """Run 1's Gauss–Newton and exact-Hessian eigenvalues, largest first, |λ| on a log axis, with the
    level 1/(ηE) below which a direction has not settled within the run."""
    gn = analysis["gn_eigenvalues"][0][::-1]
    hess = analysis["hessian_eigenvalues"][::-1]
    index = np.arange(1, len(gn) + 1)
    ax.plot(index, np.abs(gn), ".", ms=3, color="tab:blue", label="Gauss–Newton (2/n)JᵀJ, |λ|")
    ax.plot(index, np.abs(hess), ".", ms=2, color="tab:red", alpha=0.5, label="exact Hessian, |λ|")
    if np.any(hess < 0):
        ax.plot(index[hess < 0], np.abs(hess[hess < 0]), "x", ms=3, color="tab:red", label="exact Hessian, λ < 0")
    settle = 1 / (config.learning_rate * max(config.epochs, 1))
    ax.axhline(settle, color="k", ls="--", lw=0.8, label=f"1/(ηE) = {settle:.3g}: slower directions have not settled")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("eigenvalue index (largest first)")
    ax.set_ylabel("|λ| (run 1, at the teacher)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower left", fontsize="x-small")
    unsettled = analysis["unsettled"]
    ax.set_title(f"unsettled: {np.mean(unsettled):.0f} of {len(gn)} directions (mean over runs)", fontsize="small")


def write_theory(result: Result, analysis: dict, folder: pathlib.Path) -> list[pathlib.Path]:
    """``theory_figure`` written as ``{figure_stem}_theory.{svg,png}`` into ``folder``; returns the paths."""
    return write_figure(theory_figure(result, analysis), pathlib.Path(folder) / f"{result.config.figure_stem()}_theory")


def theory_figure(result: Result, analysis: dict) -> Figure:
    """The measured distances beside the linear-response predictions of ``theory.analyze``: with the
    regulariser kept exact, and from the loss alone.

    Curves over epochs (the epoch experiment): (left) measured ℓ₂ against both predictions over epochs, mean
    and min–max over runs; (middle) the spectrum; (right) the share of ‖θ_s − θ_t‖² in the flattest
    directions at the kept epochs. A kind without curves (the noise experiment): ℓ₂ after training against σ,
    measured and predicted, and the spectrum."""
    config = result.config
    ok = np.asarray(result.diverged_at) < 0
    if not ok.any():
        raise ValueError("every training diverged: nothing to compare with the theory")
    measured = result.metrics["l2"]
    noise = not result.spec.curves  # final values over noise levels, else curves over epochs
    fig = Figure(figsize=(14 if not noise else 11, 4.8), layout="constrained")
    axes = fig.subplots(1, 2 if noise else 3)
    ax = axes[0]
    x = result.levels if noise else np.arange(config.epochs + 1)
    axis = 1 if noise else 0  # the runs: (S, R) for the noise experiment, (R, E + 1) for the epoch one
    positive = False  # log scale only with something to show (an exact start trained 0 epochs is all 0)
    curves = [(measured, "measured", STYLE["l2"][1], "-"),
              (analysis["predicted_l2"], "linear response" + (" with the regulariser" if regularised(config) else ""),
               "k", "--")]
    if regularised(config):
        curves.append((analysis["predicted_l2_loss_only"], "linear response, loss alone", "tab:gray", ":"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN levels stay NaN
        for values, label, colour, style in curves:
            values = np.where(ok, values, np.nan) if noise else values[ok]
            centre = np.nanmean(values, axis=axis)
            shown = (centre > 0) & (x > 0)  # log axes: σ = 0 and ℓ₂ = 0 are left out
            positive = positive or bool(shown.any())
            ax.plot(x[shown], centre[shown], style, color=colour, label=f"{L2} {label} (mean)")
            ax.fill_between(x[shown], np.nanmin(values, axis=axis)[shown], np.nanmax(values, axis=axis)[shown],
                            color=colour, alpha=0.15, lw=0)
    ax.set_yscale("log" if positive else "linear")
    if noise:
        ax.set_xscale("log")
    ax.set_xlabel("σ (label noise)" if noise else "Epoch")
    ax.set_ylabel(f"{L2} after {config.epochs} epochs" if noise else L2)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    ax.set_title("prediction: plain GD linearised at the teacher" + (f", {config.train} exact"
                                                                      if regularised(config) else ""),
                 fontsize="small")
    _spectrum_panel(axes[1], analysis, config)
    if not noise:
        ax = axes[2]
        if not len(result.kept_epochs):
            ax.text(0.5, 0.5, "no students kept (--align-every 0)", ha="center", va="center", transform=ax.transAxes)
        fractions = analysis["flat_fraction"][ok]  # (R_ok, K, 3)
        labels = ("numerically null directions", "unsettled directions (1/(ηλ) > E)", "all but the stiffest direction")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # δ = 0 at an exact start: NaN
            for i, (label, colour) in enumerate(zip(labels, ("tab:gray", "tab:green", "tab:purple"))):
                ax.plot(result.kept_epochs, np.nanmean(fractions[:, :, i], axis=0), ".-", color=colour, label=label)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("Epoch")
        ax.set_ylabel("share of ‖θ_s − θ_t‖² (mean over runs)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="x-small")
        ax.set_title("where the measured displacement lies (Gauss–Newton eigenbasis)", fontsize="small")
    fig.suptitle("Measured distance vs the linear-response theory near the teacher\n" + subtitle(result),
                 fontsize="medium")
    return fig


def regularised(config) -> bool:
    """Whether ``config``'s training rule adds a regulariser (it reads a strength)."""
    from l2rebound.rules import rule

    return bool(rule(config.train).uses)


def _count(values) -> str:
    """A count over runs: the number itself where every run has it, else their mean."""
    values = np.asarray(values)
    return f"{values[0]:d}" if np.all(values == values[0]) else f"{values.mean():.1f} (mean over runs)"


def theory_summary(result: Result, analysis: dict) -> str:
    """Plain text: measured against predicted final ℓ₂ (with the regulariser, and from the loss alone), the
    largest relative gap of each prediction (over every epoch from 1, or every level), the epoch of each run's
    minimum, where the predicted final displacement lies (settled and unsettled directions, loss and
    regulariser), the spectrum's extent and how many directions have not settled within the run."""
    ok = np.asarray(result.diverged_at) < 0
    config = result.config
    measured = result.metrics["l2"]
    curves = result.spec.curves
    lines = []
    for name, label in (("predicted_l2", "with the regulariser" if regularised(config) else "linear response"),
                        ("predicted_l2_loss_only", "loss alone")):
        if name == "predicted_l2_loss_only" and not regularised(config):
            break  # the two coincide
        predicted = analysis[name]
        final_p, final_m = (predicted[ok, -1], measured[ok, -1]) if curves else (predicted[ok], measured[ok])
        every_p, every_m = (predicted[ok, 1:], measured[ok, 1:]) if curves else (final_p, final_m)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = every_p / every_m
        gap = np.abs(ratio - 1)
        gap = gap[np.isfinite(gap)]  # 0/0 at an exact start; nothing at all after 0 epochs
        largest = f"{gap.max():.3g}" if gap.size else "— (nothing to compare)"
        if curves:
            lines.append(f"final {L2} (mean ± std over runs): measured {np.nanmean(final_m):.4g} ± "
                         f"{np.nanstd(final_m):.3g}, predicted {label} {np.nanmean(final_p):.4g} ± "
                         f"{np.nanstd(final_p):.3g}; largest relative gap {largest}")
            continue
        # the levels span decades: a mean over them would be the largest levels', so compare each training (over
        # levels, every value is a final one: ``ratio`` is final_p / final_m)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        spread = (f"geometric mean {np.exp(np.log(ratio).mean()):.6g}, from {ratio.min():.6g} to {ratio.max():.6g}"
                  if ratio.size else "— (nothing to compare)")
        lines.append(f"final {L2}, predicted {label} / measured, per level and finished run ({len(result.levels)} "
                     f"levels): {spread}; largest relative gap {largest}")
    if curves and config.epochs:
        lines.append("epoch of each run's minimum: measured " + " ".join(map(str, measured[ok].argmin(axis=1)))
                     + "; predicted " + " ".join(map(str, analysis["predicted_l2"][ok].argmin(axis=1))))
    top = np.argmax(result.levels) if not curves else None  # over levels: the largest σ
    parts = analysis["parts"][ok] if curves else analysis["parts"][top][ok[top]]
    if len(parts):
        mean = parts.mean(axis=0)
        lines.append(f"predicted final displacement (norms, mean over runs{'' if curves else ', largest σ'}): "
                     f"loss alone {mean[0]:.3g} settled + {mean[1]:.3g} unsettled; regulariser's drift "
                     f"{mean[2]:.3g} settled + {mean[3]:.3g} unsettled")
    gn = analysis["gn_eigenvalues"]
    lines += [
        ("Gauss–Newton spectrum at the teacher, largest first: "
         + ", ".join(f"{gn[:, -i].mean():.4g}" for i in range(1, min(3, gn.shape[1]) + 1))
         + f"; η·λ_max = {config.learning_rate * gn[:, -1].mean():.3g}"),
        ("time constants 1/(ηλ) of the stiffest directions: "
         + ", ".join(f"{1 / (config.learning_rate * gn[:, -i].mean()):.3g}" for i in range(1, min(5, gn.shape[1]) + 1))
         + " epochs"),
        f"unsettled after {config.epochs} epochs (1/(ηλ) > E): {_count(analysis['unsettled'])} of {gn.shape[1]} "
        f"directions; numerically null: {_count(analysis['null'])}",
        f"run 1 at its teacher: exact Hessian λ_min {analysis['hessian_eigenvalues'][0]:.3g}, "
        f"λ_max {analysis['hessian_eigenvalues'][-1]:.4g}; Gauss–Newton λ_max {gn[0, -1]:.4g}",
    ]
    if curves and len(result.kept_epochs):  # nothing kept with align_every 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # δ = 0 (an exact start at epoch 0): NaN
            last = np.nanmean(analysis["flat_fraction"][ok, -1], axis=0)
        lines.append(f"share of the final ‖θ_s − θ_t‖² in unsettled directions: {last[1]:.3g}; in null ones: "
                     f"{last[0]:.3g}")
    return "\n".join(lines)
